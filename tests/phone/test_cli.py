"""`simwire phone` as a real process against the stand-in hub."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

RUN_PHONE = "from app.phone.cli import phone_command; phone_command()"


async def start_phone(hub, token: str, store: Path, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "SIMWIRE_DEVICE_TOKEN": token}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN_PHONE,
        "--server",
        hub.url,
        "--radio",
        "fake",
        "--store",
        str(store),
        "--fake-latency-ms",
        "0",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_phone_command_serves_until_terminated(hub, device_token: str, tmp_path: Path):
    process = await start_phone(hub, device_token, tmp_path / "p.db", "--sims", "2")
    try:
        await hub.until(lambda: bool(hub.frames("hello")), timeout_s=15)
        hello = hub.frames("hello")[0]
        assert [sim["slot"] for sim in hello["sims"]] == [0, 1]
        assert hub.tokens == [device_token]
        await hub.send({"type": "send_sms", "id": "msg_cli", "to": "+15551230000", "body": "hi"})
        assert (await hub.wait_frame("send_result", id="msg_cli"))["success"] is True
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0
    assert device_token not in (stdout + stderr).decode()
    assert "token=***" in stderr.decode()


async def test_phone_command_exits_on_revoked_token(hub, device_token: str, tmp_path: Path):
    hub.reject_code = 4403
    process = await start_phone(hub, device_token, tmp_path / "p.db", "--log-level", "debug")
    stdout, stderr = await asyncio.wait_for(process.communicate(), 15)
    output = (stdout + stderr).decode()
    assert process.returncode == 3
    assert "revoked" in output
    assert device_token not in output
    assert hub.connection_count == 1
