"""Phone reports written in group commits, and phone state owned by one instance, across real
server processes: a server killed (SIGKILL) after a batch of frames arrived and before its commit
acknowledged none of them, stored none of them, and after a restart the phone's replay is stored
once and each frame acknowledged after its commit; a phone's SIM send windows go with it to
another instance (PostgreSQL), so reconnecting is no way past the per-minute limit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import websockets
from sqlalchemy import func, select

from app.db.models import Message
from app.hub.hub import CRASH_BEFORE_REPORTS_COMMIT
from app.services import credits, devices
from app.services.outbound import OutboundItem, enqueue
from tests.support.factories import new_tenant
from tests.support.live import eventually
from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
ACKS = {"accept_ack", "result_ack", "inbound_ack"}


class Server:
    """`simwire serve` as a child process on the test's database."""

    def __init__(self, database_url: str, name: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/phone/ws"
        settings = {
            "SIMWIRE_DATABASE_URL": database_url,
            "SIMWIRE_INSTANCE_ID": name,
            "SIMWIRE_SWEEP_INTERVAL_S": "0.2",
            "SIMWIRE_ACK_TIMEOUT_S": "2",
            "SIMWIRE_RATE_LIMITS": "false",
            "SIMWIRE_LOG_LEVEL": "WARNING",
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env={**os.environ, **settings},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self) -> None:
        async def answers() -> bool:
            assert self.process.poll() is None, "the server exited while starting"
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{self.url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(answers, timeout_s=30, interval_s=0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Phone:
    """A raw phone socket that keeps every frame it receives."""

    def __init__(self, socket) -> None:
        self.socket = socket
        self.frames: list[dict] = []

    @classmethod
    async def connect(cls, server: Server, token: str, sims=((0, "+15550100001"),)) -> Phone:
        phone = cls(await websockets.connect(f"{server.ws_url}?token={token}"))
        assert (await phone.next("connected"))["type"] == "connected"
        await phone.send(
            {"type": "hello", "sims": [{"slot": slot, "number": n} for slot, n in sims]}
        )
        return phone

    async def send(self, frame: dict) -> None:
        await self.socket.send(json.dumps(frame))

    async def next(self, kind: str, timeout: float = 15.0, **fields: str) -> dict:
        while True:
            frame = json.loads(await asyncio.wait_for(self.socket.recv(), timeout))
            self.frames.append(frame)
            if frame["type"] == kind and all(frame.get(k) == v for k, v in fields.items()):
                return frame

    async def until_closed(self) -> list[dict]:
        """Every frame up to the socket's close."""
        try:
            while True:
                self.frames.append(json.loads(await asyncio.wait_for(self.socket.recv(), 30)))
        except websockets.ConnectionClosed:
            return self.frames


async def _message(db, message_id: str) -> Message:
    async with db.sessions() as session:
        return (await session.execute(select(Message).where(Message.id == message_id))).scalar_one()


async def _inbound_count(db) -> int:
    async with db.sessions() as session:
        return (
            await session.execute(select(func.count()).where(Message.direction == "in"))
        ).scalar_one()


INBOUND = {
    "type": "inbound",
    "message": {"id": "a-1", "address": "+15557654321", "body": "STOP", "sim_slot": 0},
}


async def test_a_kill_between_a_batchs_arrival_and_its_commit_acks_nothing_and_loses_nothing(
    database_url, db
):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with db.transaction() as session:
        [queued] = await enqueue(
            session, tenant.project_id, [OutboundItem("+15550200000", "hi", "GSM-7", 1)]
        )
    doomed = Server(database_url, "a", SIMWIRE_CRASH_AT=CRASH_BEFORE_REPORTS_COMMIT)
    try:
        await doomed.ready()
        phone = await Phone.connect(doomed, paired.token)
        offer = await phone.next("send_sms")
        assert offer["id"] == queued.id
        # The phone holds the command, the radio would send it on accept_ack; it reports at
        # once, and an SMS came in: the first batch of reports kills the server before commit.
        await phone.send({"type": "accepted", "id": queued.id})
        await phone.send({"type": "send_result", "id": queued.id, "success": True})
        await phone.send(INBOUND)
        seen = await phone.until_closed()
        assert doomed.process.wait(10) == -signal.SIGKILL
    finally:
        doomed.stop()
    # Nothing of the batch was acknowledged, so the phone still holds all of it; nothing of it
    # was stored, so no other phone could have been told it holds the message.
    assert [f for f in seen if f["type"] in ACKS] == []
    message = await _message(db, queued.id)
    assert (message.status, message.accepted_at, message.sent_at) == ("sending", None, None)
    assert await _inbound_count(db) == 0

    server = Server(database_url, "b")
    try:
        await server.ready()
        phone = await Phone.connect(server, paired.token)
        # The replay (§6 of the protocol): each report is acknowledged once it is stored.
        await phone.send({"type": "accepted", "id": queued.id})
        await phone.send({"type": "send_result", "id": queued.id, "success": True})
        await phone.send(INBOUND)
        await phone.next("accept_ack", id=queued.id)
        assert (await _message(db, queued.id)).accepted_at is not None
        await phone.next("result_ack", id=queued.id)
        assert (await _message(db, queued.id)).status == "sent"
        await phone.next("inbound_ack", id="a-1")
        assert await _inbound_count(db) == 1
        await phone.send(INBOUND)  # its ack lost, say: offered again, stored once
        await phone.next("inbound_ack", id="a-1")
        await phone.socket.close()
    finally:
        server.stop()
    message = await _message(db, queued.id)
    assert message.status == "sent" and message.device_id == paired.device.id
    assert await _inbound_count(db) == 1
    accepts = [f for f in seen + phone.frames if f["type"] == "accept_ack"]
    assert len(accepts) == 1  # the radio got one go-ahead in all


@pytest.mark.parametrize("engine_name", ["postgresql"], indirect=True)
async def test_a_sims_send_window_survives_a_reconnect_to_another_instance(database_url, db):
    """SIM 0 uses up its 3 parts per minute on instance A; the phone reconnects to B. A message
    pinned to SIM 0 and a later one pinned to SIM 1 are queued: B sends the later one and keeps
    the first queued, so it considered SIM 0 and found its minute used up."""
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10_000_000)
    paired = await devices.pair_device(db, tenant.project_id)
    sims = ((0, "+15550100001"), (1, "+15550100002"))
    limit = {"SIMWIRE_SIM_PARTS_PER_MINUTE": "3"}
    a, b = Server(database_url, "a", **limit), Server(database_url, "b", **limit)
    try:
        await asyncio.gather(a.ready(), b.ready())
        async with httpx.AsyncClient(headers=tenant.headers, timeout=30) as http:

            async def send(server: Server, body: str, sim: str) -> str:
                response = await http.post(
                    f"{server.url}/v1/messages",
                    json={"to": "+14155550100", "message": body, "sim": sim},
                )
                assert response.status_code == 202, response.text
                return response.json()["messages"][0]["id"]

            phone = await Phone.connect(a, paired.token, sims)
            await eventually(lambda: _sims_live(http, a, 2))
            for n in range(3):
                message_id = await send(a, f"first minute {n}", "0")
                offer = await phone.next("send_sms", id=message_id)
                assert offer["slot"] == 0
                await phone.send({"type": "accepted", "id": message_id})
                await phone.next("accept_ack", id=message_id)
                await phone.send({"type": "send_result", "id": message_id, "success": True})
                await phone.next("result_ack", id=message_id)
            await phone.socket.close()

            phone = await Phone.connect(b, paired.token, sims)
            await eventually(lambda: _sims_live(http, b, 2))
            held = await send(b, "over the limit", "0")
            later = await send(b, "other SIM", "1")
            offer = await phone.next("send_sms")
            assert offer["id"] == later and offer["slot"] == 1
            detail = (await http.get(f"{b.url}/v1/messages/{held}")).json()
            assert detail["status"] == "queued"
            assert [f["id"] for f in phone.frames if f["type"] == "send_sms"] == [later]
            await phone.socket.close()
    finally:
        a.stop()
        b.stop()


async def _sims_live(http: httpx.AsyncClient, server: Server, count: int) -> bool:
    body = (await http.get(f"{server.url}/v1/sims")).json()
    return len(body["live_sims"]) == count
