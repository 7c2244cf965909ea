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
