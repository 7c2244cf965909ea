"""Several server processes on one PostgreSQL: a message queued through any instance reaches a
phone connected to another within a second; a crashed instance's phones are picked up."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from app.services import credits, devices
from tests.support.factories import new_tenant
from tests.support.live import eventually
from tests.support.processes import ServerProcess


@pytest.fixture
def engine_name() -> str:
    return "postgresql"


class Instance(ServerProcess):
    """One of several instances on one database, with the hub's clocks made fast."""

    def __init__(
        self, database_url: str, name: str, extra_env: dict[str, str] | None = None
    ) -> None:
        super().__init__(
            database_url,
            {
                "SIMWIRE_INSTANCE_ID": name,
                "SIMWIRE_SWEEP_INTERVAL_S": "0.2",
                "SIMWIRE_ACK_TIMEOUT_S": "2",
                **(extra_env or {}),
            },
        )


async def raw_phone(instance: Instance, token: str):
    socket = await websockets.connect(f"ws://127.0.0.1:{instance.port}/v1/phone/ws?token={token}")
    assert json.loads(await socket.recv())["type"] == "connected"
    await socket.send(
        json.dumps({"type": "hello", "sims": [{"slot": 0, "number": "+15550100001"}]})
    )
    return socket


async def sims_stored(instance: Instance, headers: dict[str, str]) -> bool:
    """Whether the instance has stored the SIMs of the project's phone (from its `hello`)."""
    async with httpx.AsyncClient(base_url=instance.url) as http:
        listing = (await http.get("/v1/devices", headers=headers)).json()
    return bool(listing["data"] and listing["data"][0]["sims"])


async def next_frame(socket, kind: str, timeout: float = 10.0):
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), timeout))
        if frame["type"] == kind:
            return frame


async def test_message_queued_on_one_instance_reaches_a_phone_on_another(database_url, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10_000_000)
    paired = await devices.pair_device(db, tenant.project_id)
    # No sweep in time to help: only b's wake-up through the channel reaches a's hub.
    slow_sweeps = {"SIMWIRE_SWEEP_INTERVAL_S": "30"}
    a, b = Instance(database_url, "a", slow_sweeps), Instance(database_url, "b", slow_sweeps)
    try:
        await asyncio.gather(a.ready(), b.ready())
        phone = await raw_phone(a, paired.token)
        await eventually(lambda: sims_stored(a, tenant.headers))
        latencies = []
        async with httpx.AsyncClient(base_url=b.url) as http:
            for i in range(5):
                started = time.monotonic()
                response = await http.post(
                    "/v1/messages",
                    json={"to": f"+1415555{i:04d}", "message": f"hop {i}"},
                    headers=tenant.headers,
                )
                assert response.status_code == 202, response.text
                message_id = response.json()["messages"][0]["id"]
                command = await next_frame(phone, "send_sms", timeout=5)
                latencies.append(time.monotonic() - started)
                assert command["id"] == message_id
                await phone.send(json.dumps({"type": "accepted", "id": message_id}))
                await phone.send(
                    json.dumps({"type": "send_result", "id": message_id, "success": True})
                )
                await next_frame(phone, "result_ack")
            listing = (await http.get("/v1/devices", headers=tenant.headers)).json()
        assert max(latencies) < 1.0, latencies
        assert listing["data"][0]["online"] is True
        await phone.close()
    finally:
        a.stop()
        b.stop()


async def test_a_crashed_instances_phone_and_commands_are_picked_up(database_url, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10_000_000)
    paired = await devices.pair_device(db, tenant.project_id)
    a, b = Instance(database_url, "a"), Instance(database_url, "b")
    try:
        await asyncio.gather(a.ready(), b.ready())
        phone = await raw_phone(a, paired.token)
        await eventually(lambda: sims_stored(a, tenant.headers))
        async with httpx.AsyncClient(base_url=b.url) as http:
            response = await http.post(
                "/v1/messages",
                json={"to": "+14155550100", "message": "survive"},
                headers=tenant.headers,
            )
            message_id = response.json()["messages"][0]["id"]
            assert (await next_frame(phone, "send_sms"))["id"] == message_id
            a.kill()  # crashes before the phone accepted
            with pytest.raises(websockets.ConnectionClosed):
                await next_frame(phone, "never", timeout=5)
            phone = await raw_phone(b, paired.token)
            command = await next_frame(phone, "send_sms", timeout=10)
            assert command["id"] == message_id
            await phone.send(json.dumps({"type": "accepted", "id": message_id}))
            await phone.send(json.dumps({"type": "send_result", "id": message_id, "success": True}))
            await next_frame(phone, "result_ack")
            detail = await eventually(
                lambda: _message_status(http, tenant.headers, message_id, "sent"), timeout_s=5
            )
            assert detail["attempts"] == 2
        await phone.close()
    finally:
        a.stop()
        b.stop()


async def _message_status(http, headers, message_id, wanted):
    body = (await http.get(f"/v1/messages/{message_id}", headers=headers)).json()
    return body if body.get("status") == wanted else None
