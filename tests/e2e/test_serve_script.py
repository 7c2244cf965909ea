"""`scripts/serve` from a fresh directory, as a newcomer runs it: the printed curl (and the
README's) reaches `delivered`; a second start prints a key command that works as printed;
`--demo` prints what docs/payments.md's example needs and that example runs as printed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "API explorer: "  # scripts/serve's last line, once the server answers


class Serve:
    """`scripts/serve` in its own process group; its stdout is collected line by line."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [str(ROOT / "scripts" / "serve"), "--port", str(self.port), *args],
            cwd=cwd,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout_s: float = 120) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(line.startswith(READY_LINE) for line in self.lines):
                return self.output
            assert self.process.poll() is None, f"scripts/serve exited:\n{self.output}"
            time.sleep(0.1)
        raise AssertionError(f"scripts/serve printed no {READY_LINE!r}:\n{self.output}")

    def line_with(self, *parts: str) -> str:
        found = [line for line in self.lines if all(part in line for part in parts)]
        assert found, (parts, self.output)
        return found[0].strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SIMWIRE_")}


def shell(command: str, cwd: Path, **env: str) -> str:
    """Runs a printed command line exactly as a person pastes it into bash."""
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=clean_env() | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    return done.stdout


def wait_delivered(base: str, key: str, message_id: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = httpx.get(
            f"{base}/v1/messages/{message_id}", headers={"Authorization": f"Bearer {key}"}
        ).json()["status"]
        if status == "delivered":
            return
        time.sleep(0.2)
    raise AssertionError(f"{message_id} is {status}, not delivered")


def readme_first_send() -> tuple[str, str]:
    """The README's curl lines under "A first send": the send, and the request's status."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### A first send", 1)[1]
    send, follow = [line for line in section.splitlines() if line.startswith("curl ")][:2]
    return send, follow


def test_first_start_sends_to_delivered_and_a_second_start_prints_a_working_key_command(
    tmp_path,
):
    first = Serve(tmp_path)
    try:
        first.wait_ready()
        key = re.fullmatch(
            r"export KEY=(sw_live_[0-9a-f]{32})", first.line_with("export KEY=")
        ).group(1)
        assert "demo credit" in first.output

        printed = first.line_with("curl -s", "/v1/messages")
        sent = json.loads(shell(printed, tmp_path))
        assert sent["messages"][0]["status"] == "queued", sent
        wait_delivered(first.base, key, sent["messages"][0]["id"])

        send, follow = (
            line.replace("127.0.0.1:8000", f"127.0.0.1:{first.port}")
            for line in readme_first_send()
        )
        from_readme = json.loads(shell(send, tmp_path, KEY=key))
        wait_delivered(first.base, key, from_readme["messages"][0]["id"])
        request_id = from_readme["request_id"]
        followed = json.loads(shell(follow.replace("REQUEST_ID", request_id), tmp_path, KEY=key))
        assert followed["status"] == "all_delivered", followed

        # Webhooks work out of the box: an operator key was made, and a loopback-only server
        # may call a receiver on this machine.
        hook = httpx.post(
            f"{first.base}/v1/webhooks",
            headers={"Authorization": f"Bearer {key}"},
            json={"url": "http://127.0.0.1:9/hook"},
        )
        assert hook.status_code == 201, hook.text
        assert hook.json()["secret"].startswith("whsec_")
    finally:
        first.stop()
    operator_key = tmp_path / ".simwire" / "secret_key"
    assert operator_key.stat().st_mode & 0o777 == 0o600
    assert len(operator_key.read_text().strip()) >= 32
    made_first = operator_key.read_text()
    # The database where it was run; everything else it wrote under the runtime directory.
    assert {p.name for p in tmp_path.iterdir()} <= {
        "simwire.db",
        "simwire.db-wal",
        "simwire.db-shm",
        ".simwire",
    }
    assert (tmp_path / ".simwire" / "demo-phone.db").exists()

    second = Serve(tmp_path)
    try:
        second.wait_ready()
        assert "Using project" in second.output and key not in second.output
        command = second.line_with("key create")
        new_key = re.search(r"sw_live_[0-9a-f]{32}", shell(command, tmp_path)).group(0)
        for each in (key, new_key):
            project = httpx.get(
                f"{second.base}/v1/project", headers={"Authorization": f"Bearer {each}"}
            )
            assert project.status_code == 200 and project.json()["name"] == "demo"
        # The printed send names $KEY now; with the new key it still reaches delivered.
        printed = second.line_with("curl -s", "/v1/messages")
        assert '"Authorization: Bearer $KEY"' in printed
        sent = json.loads(shell(printed, tmp_path, KEY=new_key))
        wait_delivered(second.base, new_key, sent["messages"][0]["id"])
    finally:
        second.stop()
    assert operator_key.read_text() == made_first  # kept: sealed secrets still open


def wait_healthy(base: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base} did not become healthy")


def live_sims(base: str, key: str) -> object:
    sims = httpx.get(f"{base}/v1/sims", headers={"Authorization": f"Bearer {key}"})
    assert sims.status_code == 200, sims.text
    return sims.json()["live_sims"]


def test_no_fake_phone_with_no_demo_phone_or_when_the_project_has_real_phones(tmp_path):
    serve = Serve(tmp_path, "--no-demo-phone")
    try:
        wait_healthy(serve.base)
        key = serve.line_with("export KEY=").removeprefix("export KEY=")
        project_id = re.search(r"prj_[0-9a-f]+", serve.line_with("Created project")).group(0)
        assert not live_sims(serve.base, key)
        assert "No demo phone" in serve.output and "fake phone" not in serve.output
    finally:
        serve.stop()
    assert not (tmp_path / ".simwire" / "demo-phone.db").exists()

    shell(f"{ROOT}/scripts/simwire device pair {project_id} --name kitchen-phone", tmp_path)
    again = Serve(tmp_path)  # a fake phone would take a share of the real phone's messages
    try:
        again.wait_ready()
        assert "has 1 paired phone(s), so no fake phone is started" in again.output
        assert not live_sims(again.base, key)
    finally:
        again.stop()
    assert not (tmp_path / ".simwire" / "demo-phone.db").exists()


def test_demo_prints_what_the_payments_example_needs_and_it_runs_as_printed(tmp_path):
    serve = Serve(tmp_path, "--demo")
    try:
        serve.wait_ready()
        assert "x402 pay-per-call is on" in serve.output
        chain = json.loads((tmp_path / ".simwire" / "chain.json").read_text().splitlines()[0])
        described = serve.line_with("Local chain")
        assert chain["network"] in described and f"chain id {chain['chain_id']}" in described
        addresses = serve.line_with("USDC (test token):")
        assert chain["usdc"] in addresses and chain["pay_to"] in addresses
        exports = serve.line_with("export PAYER_KEY=")
        assert chain["payers"][0]["key"] in exports and chain["network"] in exports

        docs = (ROOT / "docs" / "payments.md").read_text()
        example = docs.split("## A runnable example", 1)[1]
        script = example.split("```python\n", 1)[1].split("```", 1)[0]
        elsewhere = tmp_path / "agent"
        elsewhere.mkdir()
        (elsewhere / "pay.py").write_text(script)
        out = shell(f"{exports}\n{ROOT}/.venv/bin/python pay.py", elsewhere)
        status, body = out.splitlines()[0].split(" ", 1)
        assert status == "202", out
        assert "'success': True" in out.splitlines()[1]

        key = serve.line_with("export KEY=").removeprefix("export KEY=")
        message_id = re.search(r"'id': '(msg_[0-9a-f]+)'", body).group(1)
        wait_delivered(serve.base, key, message_id)  # the paid send went to the demo phone
    finally:
        serve.stop()
