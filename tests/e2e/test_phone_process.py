"""The reference phone as its own process (`simwire phone --radio fake`) against a real server:
a send goes out and is delivered; killing and restarting the phone loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from app.services import credits, devices
from tests.support.factories import new_tenant
from tests.support.live import eventually, fast_settings, live_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine_name() -> str:
    return "sqlite"


async def start_phone_process(
    server_url: str, token: str, store: Path
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "phone",
        "--server",
        server_url,
        "--radio",
        "fake",
        "--store",
        str(store),
        "--fake-latency-ms",
        "10",
        "--fake-delivery-delay-ms",
        "50",
        "--heartbeat-s",
        "2",
        cwd=ROOT,
        env={**os.environ, "SIMWIRE_DEVICE_TOKEN": token},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def status(http, headers, message_id):
    return (await http.get(f"/v1/messages/{message_id}", headers=headers)).json()["status"]


async def test_phone_process_delivers_and_survives_a_restart(settings, db, tmp_path):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000)
    paired = await devices.pair_device(db, tenant.project_id)
    store = tmp_path / "phone.db"
    async with (
        live_server(fast_settings(settings), db) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        phone = await start_phone_process(server.url, paired.token, store)
        try:
            sent = await http.post(
                "/v1/messages",
                json={"to": "+14155550100", "message": "from a real process"},
                headers=tenant.headers,
            )
            first = sent.json()["messages"][0]["id"]
            await eventually(lambda: _is(http, tenant.headers, first, "delivered"), timeout_s=20)
        finally:
            phone.send_signal(signal.SIGKILL)
            await phone.wait()
        queued = await http.post(
            "/v1/messages",
            json={"to": "+14155550101", "message": "while the phone was down"},
            headers=tenant.headers,
        )
        second = queued.json()["messages"][0]["id"]
        assert await status(http, tenant.headers, second) == "queued"
        phone = await start_phone_process(server.url, paired.token, store)
        try:
            await eventually(lambda: _is(http, tenant.headers, second, "delivered"), timeout_s=20)
        finally:
            phone.send_signal(signal.SIGTERM)
            _, stderr = await phone.communicate()
        assert paired.token not in stderr.decode()


async def _is(http, headers, message_id, wanted):
    return await status(http, headers, message_id) == wanted
