"""`scripts/serve` from a fresh directory: migrates, prints a working key and curl line, serves;
a second start reuses what exists."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]


def start_serve(cwd: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMWIRE_")}
    return subprocess.Popen(
        [str(ROOT / "scripts" / "serve"), "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def wait_healthy(base: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("scripts/serve did not become healthy")


def stop(process: subprocess.Popen[str]) -> str:
    os.killpg(process.pid, signal.SIGTERM)
    out, _ = process.communicate(timeout=20)
    return out


def test_serve_script_prints_a_working_key_and_reuses_it_on_restart(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = start_serve(tmp_path, port)
    try:
        wait_healthy(base)
    finally:
        out = stop(first)
    assert (tmp_path / "simwire.db").exists()
    key = re.search(r"key: (sw_live_[0-9a-f]{32})", out).group(1)
    curl = re.search(r"curl -s (\S+) -H 'Authorization: Bearer (\S+)'", out)
    assert curl and curl.group(2) == key

    second = start_serve(tmp_path, port)
    try:
        wait_healthy(base)
        response = httpx.get(curl.group(1), headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
        assert response.json()["name"] == "demo"
    finally:
        out_again = stop(second)
    assert "Using project" in out_again and key not in out_again


def test_demo_connects_a_fake_phone_so_the_first_send_is_delivered(tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMWIRE_")}
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "serve"), "--port", str(port), "--demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_healthy(base)
        key = None
        deadline = time.monotonic() + 30
        while key is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            found = re.search(r"key: (sw_live_[0-9a-f]{32})", line)
            key = found.group(1) if found else None
        headers = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the fake phone connects just after the server
            sims = httpx.get(f"{base}/v1/sims", headers=headers).json()
            if sims["live_sims"]:
                break
            time.sleep(0.2)
        sent = httpx.post(
            f"{base}/v1/messages",
            json={"to": "+14155550100", "message": "Hello from Simwire"},
            headers=headers,
        )
        assert sent.status_code == 202, sent.text
        message_id = sent.json()["messages"][0]["id"]
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status != "delivered":
            status = httpx.get(f"{base}/v1/messages/{message_id}", headers=headers).json()["status"]
            time.sleep(0.2)
        assert status == "delivered"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert "x402 pay-per-call is on" in err
