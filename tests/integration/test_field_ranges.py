"""What PostgreSQL cannot store never reaches it: NUL in text a caller chose is a 400, integers
past their column's range from a phone are an `error` frame on a socket that stays open, and a
received SMS holding NUL is stored with U+FFFD. A phone item the server keeps refusing is
dropped by the reference client, so it never blocks the queue behind it. Both engines."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from sqlalchemy import select

from app.db.models import Device, Message, Sim
from app.phone.radios.fake import FakeRadio, fake_sims
from app.services import credits, devices
from tests.support.factories import new_tenant
from tests.support.live import eventually, fast_settings, live_server, start_phone

BIG = 2**31


async def stored(db, model, *where):
    async with db.sessions() as session:
        return list((await session.execute(select(model).where(*where))).scalars())


# --- HTTP: text a caller chose --------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"to": "+14155550100", "message": "pay\x00now"}, "invalid_body"),
        ({"to": "+14155550100", "message": "hi", "tag": "a\x00"}, "invalid_body"),
        ({"to": "+14155550100", "message": "hi", "sim": "\x00"}, "invalid_body"),
        ({"to": "+14155550100", "message": "hi", "region": "U\x00"}, "invalid_body"),
        ({"messages": [{"to": "+14155550100", "message": "\x00"}]}, "invalid_body"),
        ({"to": "+1415555\x000100", "message": "hi"}, "invalid_number"),
    ],
)
async def test_nul_in_an_outbound_field_is_400_and_nothing_is_stored(client, db, payload, code):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000)
    response = await client.post("/v1/messages", json=payload, headers=tenant.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code
    assert await stored(db, Message) == []
    if "messages" not in payload and "sim" not in payload:  # what a quote reads
        quote = await client.post("/v1/quotes", json=payload, headers=tenant.headers)
        assert quote.status_code == 400 and quote.json()["error"] == code, quote.text


@pytest.mark.parametrize(
    "url", ["/v1/messages?tag=%00", "/v1/messages?to=%2B1%00", "/v1/messages/msg_%00"]
)
async def test_nul_in_a_url_is_400(client, db, url):
    tenant = await new_tenant(db)
    response = await client.get(url, headers=tenant.headers)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_input" and "NUL" in body["message"]
    assert set(body) == {"error", "message", "docs_url"}


async def test_http_inbound_batch_stores_nul_replaced_and_refuses_out_of_range(client, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    headers = {"Authorization": f"Bearer {paired.token}"}
    for bad in ({"sim_slot": BIG}, {"date": 2**63}, {"id": "x\x00"}, {"id": "x" * 201}):
        sms = {"id": "bad", "address": "+15550001", "body": "hi", **bad}
        response = await client.post("/v1/phone/inbound", json={"messages": [sms]}, headers=headers)
        assert response.status_code == 400, (bad, response.text)
    assert await stored(db, Message) == []
    response = await client.post(
        "/v1/phone/inbound",
        json={"messages": [{"id": "n1", "address": "AC\x00ME", "body": "code\x00 42"}]},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"acked": ["n1"], "stored": 1}
    [message] = await stored(db, Message)
    assert (message.from_number, message.body) == ("AC\ufffdME", "code\ufffd 42")


# --- the phone socket -----------------------------------------------------------------------


class Socket:
    """A hand-driven phone socket."""

    def __init__(self, socket):
        self.socket = socket

    async def send(self, frame):
        await self.socket.send(json.dumps(frame))

    async def next(self, kind, timeout=10):
        while True:
            frame = json.loads(await asyncio.wait_for(self.socket.recv(), timeout))
            if frame["type"] == kind:
                return frame


async def test_phone_fields_out_of_range_get_an_error_frame_and_the_socket_stays(settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    refused = [
        ({"type": "hello", "sims": [{"slot": BIG, "number": "+15550100"}]}, "hello", None),
        ({"type": "sims", "sims": [{"slot": -1}]}, "sims", None),
        ({"type": "sims", "sims": [{"slot": 0, "number": "+1555\x00"}]}, "sims", None),
        ({"type": "sims", "sims": [{"slot": 0, "carrier": "c" * 201}]}, "sims", None),
        ({"type": "sims", "sims": [{"slot": 0, "iccid": "89\x00"}]}, "sims", None),
        ({"type": "sims", "sims": [{"slot": s} for s in range(17)]}, "sims", None),
        ({"type": "heartbeat", "battery": BIG}, "heartbeat", None),
        ({"type": "heartbeat", "signal": BIG}, "heartbeat", None),
        ({"type": "inbound", "message": _sms("i1", sim_slot=BIG)}, "inbound", "i1"),
        ({"type": "inbound", "message": _sms("i2", date=2**63 - 1)}, "inbound", "i2"),
        ({"type": "inbound", "message": _sms("i\x003")}, "inbound", "i\x003"),
        ({"type": "inbound", "message": _sms("i" * 201)}, "inbound", "i" * 201),
        ({"type": "accepted", "id": "msg_\x00"}, "accepted", "msg_\x00"),
        ({"type": "delivery_report", "id": "m", "delivered": True, "at": BIG**3}, None, "m"),
    ]
    async with (
        live_server(fast_settings(settings), db) as server,
        websockets.connect(f"{server.ws_url}?token={paired.token}") as raw,
    ):
        phone = Socket(raw)
        await phone.next("connected")
        sixteen = [{"slot": s, "number": f"+1555010{s:04d}"} for s in range(16)]
        await phone.send({"type": "hello", "device": {"model": "m\x00"}, "sims": sixteen})
        device_id = paired.device.id
        await eventually(lambda: (c := server.hub.connections.get(device_id)) and c.ready)
        await phone.send({"type": "heartbeat", "battery": 50, "signal": 3})
        for frame, kind, item_id in refused:
            await phone.send(frame)
            error = await phone.next("error")
            assert error["code"] == "invalid_frame", (frame, error)
            assert error.get("frame") == (kind or frame["type"]), (frame, error)
            assert error.get("id") == item_id, (frame, error)
        # The same socket still serves: a good inbound is stored and acknowledged.
        await phone.send({"type": "inbound", "message": _sms("ok", sim_slot=15)})
        assert (await phone.next("inbound_ack"))["id"] == "ok"
    sims = await stored(db, Sim, Sim.device_id == paired.device.id)
    assert sorted(s.slot for s in sims) == list(range(16))  # nothing beyond 16, nothing refused
    [message] = await stored(db, Message)
    assert message.phone_message_id == "ok" and message.to_number == "+15550100015"
    [device] = await stored(db, Device, Device.id == paired.device.id)
    assert (device.battery, device.signal, device.model) == (50, 3, "m\ufffd")


def _sms(sms_id, **fields):
    return {"id": sms_id, "address": "+15550001", "body": "hi", **fields}


async def test_inbound_with_nul_is_stored_replaced_and_later_inbound_is_stored(settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with (
        live_server(fast_settings(settings), db) as server,
        websockets.connect(f"{server.ws_url}?token={paired.token}") as raw,
    ):
        phone = Socket(raw)
        await phone.next("connected")
        await phone.send({"type": "hello", "sims": [{"slot": 0}]})
        for sms in (
            {"id": "nul", "address": "+1555\x000001", "body": "one\x00two\x00"},
            {"id": "after", "address": "+15550001", "body": "three"},
        ):
            await phone.send({"type": "inbound", "message": sms})
            assert (await phone.next("inbound_ack"))["id"] == sms["id"]
    rows = {m.phone_message_id: m for m in await stored(db, Message)}
    assert rows["nul"].body == "one\ufffdtwo\ufffd"
    assert rows["nul"].from_number == "+1555\ufffd0001"
    assert rows["after"].body == "three"


async def test_phone_drops_an_inbound_the_server_keeps_refusing_and_delivers_the_next(
    settings, db, tmp_path
):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    radio = FakeRadio(sims=fake_sims(1))
    async with live_server(fast_settings(settings), db) as server:
        phone = await start_phone(server, paired.token, tmp_path / "p.db", radio)
        try:
            stats = phone.client.stats
            poison = await radio.receive("+15550001", "poison", slot=BIG)  # no such slot
            await eventually(lambda: stats.refused == 1)
            # Nothing waits behind it: the next SMS is stored at once.
            after = await radio.receive("+15550002", "after the poison", slot=0)
            await eventually(lambda: _stored_inbound(db, {after}))
            # Offered again on each new connection until refused three times, then dropped.
            for refusals in (2, 3):
                await _reconnect(server, phone.client)
                await eventually(lambda n=refusals: stats.refused == n)
            await eventually(lambda: stats.dropped == 1)
            await _reconnect(server, phone.client)
            later = await radio.receive("+15550003", "still flowing", slot=0)
            await eventually(lambda: _stored_inbound(db, {after, later}))
            assert stats.refused == 3  # the dropped one was not offered again
            store = phone.client._require_store()
            assert await store.unacked_inbound() == []
            assert await store.is_inbound_acked(poison)
        finally:
            await phone.stop()


async def _reconnect(server, client) -> None:
    sessions = client.stats.connections
    connection = server.hub.connections[client.server_info["device_id"]]
    await connection.close(1012, "test: reconnect")
    await eventually(lambda: client.stats.connections > sessions and client.connected.is_set())


async def _stored_inbound(db, phone_ids: set[str]) -> bool:
    return {m.phone_message_id for m in await stored(db, Message)} == phone_ids
