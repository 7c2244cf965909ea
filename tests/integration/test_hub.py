"""The phone hub over real sockets: pairing, dispatch, handover; nothing lost or sent twice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import pytest
import websockets
from sqlalchemy import func, select

from app.db.models import Message
from app.phone.radios.fake import FakeRadio, fake_sims
from app.services import devices, outbound
from app.services.outbound import OutboundItem, enqueue
from tests.support.factories import new_tenant
from tests.support.live import (
    eventually,
    fast_settings,
    live_server,
    start_phone,
    watch_calls,
)


@contextlib.asynccontextmanager
async def one_phone(settings, db, tmp_path):
    """A live server, a project and one paired phone of it running against the server:
    (server, phone, tenant, paired device); the phone is stopped at the end."""
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(settings, db) as server:
        phone = await start_phone(server, paired.token, tmp_path / "p.db")
        try:
            yield server, phone, tenant, paired
        finally:
            await phone.stop()


async def queue(db, project_id, count=1, body="hello", **options):
    async with db.transaction() as session:
        rows = await enqueue(
            session,
            project_id,
            [OutboundItem(f"+1555020{i:04d}", f"{body} {i}", "GSM-7", 1) for i in range(count)],
            **options,
        )
    return [row.id for row in rows]


async def status_of(db, message_id):
    async with db.sessions() as session:
        return (await session.execute(select(Message).where(Message.id == message_id))).scalar_one()


async def has_status(db, message_id, *wanted):
    return (await status_of(db, message_id)).status in wanted


class RawPhone:
    """A hand-driven phone socket, for states the reference client never gets into."""

    def __init__(self, socket):
        self.socket = socket

    @classmethod
    async def connect(cls, server, token, sims=((0, "+15550100001"),)):
        socket = await websockets.connect(f"{server.ws_url}?token={token}")
        phone = cls(socket)
        assert (await phone.next("connected"))["type"] == "connected"
        await phone.send(
            {
                "type": "hello",
                "device": {"model": "raw"},
                "sims": [{"slot": s, "number": n} for s, n in sims],
            }
        )
        return phone

    async def send(self, frame):
        await self.socket.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    async def next(self, kind, timeout=10):
        while True:
            frame = json.loads(await asyncio.wait_for(self.socket.recv(), timeout))
            if frame["type"] == kind:
                return frame

    async def close(self):
        await self.socket.close()


@pytest.fixture
def hub_settings(settings):
    return fast_settings(settings)


async def test_paired_phone_connects_and_its_sims_are_visible(hub_settings, db, tmp_path):
    tenant = await new_tenant(db)
    async with (
        live_server(hub_settings, db) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        paired = (
            await http.post("/v1/devices", json={"name": "pixel"}, headers=tenant.headers)
        ).json()
        assert paired["token"].startswith("sw_dev_") and paired["ws_url"] == server.ws_url
        assert paired["pairing_qr"].startswith("data:image/png;base64,")
        phone = await start_phone(
            server, paired["token"], tmp_path / "p.db", FakeRadio(sims=fake_sims(2))
        )
        try:
            # `hello` is on its way when the client reports itself connected: wait for the SIMs.
            listing = await eventually(lambda: _devices_with_sims(http, tenant.headers))
            assert listing["count"] == 1 and listing["data"][0]["online"] is True
            assert [s["slot"] for s in listing["data"][0]["sims"]] == [0, 1]
            sims = (await http.get("/v1/sims", headers=tenant.headers)).json()
            assert sims["online_devices"] == 1
            assert [s["number"] for s in sims["live_sims"]] == ["+15550100000", "+15550100001"]
        finally:
            await phone.stop()
        sims = await eventually(lambda: _offline_inventory(http, tenant.headers), timeout_s=5)
        assert sims["live_sims"] == [] and len(sims["known_sims"]) == 2


async def _devices_with_sims(http, headers):
    body = (await http.get("/v1/devices", headers=headers)).json()
    return body if body["data"] and body["data"][0]["sims"] else None


async def _offline_inventory(http, headers):
    body = (await http.get("/v1/sims", headers=headers)).json()
    return body if body["online_devices"] == 0 else None


async def test_queued_message_is_sent_then_delivered(hub_settings, db, tmp_path):
    async with one_phone(hub_settings, db, tmp_path) as (server, phone, tenant, paired):
        [message_id] = await queue(db, tenant.project_id)
        await server.hub.notify_queued(tenant.project_id)
        await eventually(lambda: has_status(db, message_id, "delivered"))
    message = await status_of(db, message_id)
    assert [s.message_id for s in phone.radio.sent] == [message_id]
    assert message.sent_at and message.delivered_at and message.accepted_at
    assert message.attempts == 1 and message.device_id == paired.device.id


async def test_queued_messages_flush_when_a_phone_connects(hub_settings, db, tmp_path):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(hub_settings, db) as server:
        ids = await queue(db, tenant.project_id, count=3)
        await server.hub.notify_queued(tenant.project_id)
        phone = await start_phone(server, paired.token, tmp_path / "p.db")
        try:
            for message_id in ids:
                await eventually(lambda m=message_id: has_status(db, m, "delivered"))
        finally:
            await phone.stop()


async def test_phone_dropping_before_accepting_hands_the_message_to_another(
    hub_settings, db, tmp_path
):
    tenant = await new_tenant(db)
    first = await devices.pair_device(db, tenant.project_id)
    second = await devices.pair_device(db, tenant.project_id)
    async with live_server(hub_settings, db) as server:
        raw = await RawPhone.connect(server, first.token)
        [message_id] = await queue(db, tenant.project_id)
        await server.hub.notify_queued(tenant.project_id)
        command = await raw.next("send_sms")
        assert command["id"] == message_id and command["to"] == "+15550200000"
        await raw.close()  # gone without accepting
        phone = await start_phone(server, second.token, tmp_path / "p.db")
        try:
            await eventually(lambda: has_status(db, message_id, "delivered"))
        finally:
            await phone.stop()
    message = await status_of(db, message_id)
    # At least A's offer and B's; on a slow machine B's first offer may also time out.
    assert message.device_id == second.device.id and message.attempts >= 2
    assert [s.message_id for s in phone.radio.sent] == [message_id]


async def test_unaccepted_command_goes_back_to_the_queue_after_the_ack_timeout(hub_settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(fast_settings(hub_settings, ack_timeout_s=0.5), db) as server:
        raw = await RawPhone.connect(server, paired.token)
        [message_id] = await queue(db, tenant.project_id)
        await server.hub.notify_queued(tenant.project_id)
        await raw.next("send_sms")  # and never accept
        again = await raw.next("send_sms", timeout=10)  # requeued, offered again
        assert again["id"] == message_id
        assert (await status_of(db, message_id)).attempts >= 2
        await raw.close()


async def test_after_accepting_nobody_else_sends_and_the_late_result_is_recorded(
    hub_settings, db, tmp_path, monkeypatch
):
    tenant = await new_tenant(db)
    first = await devices.pair_device(db, tenant.project_id)
    second = await devices.pair_device(db, tenant.project_id)
    sweeps = watch_calls(monkeypatch, outbound, "sweep")
    async with live_server(hub_settings, db) as server:
        raw = await RawPhone.connect(server, first.token)
        [message_id] = await queue(db, tenant.project_id)
        await server.hub.notify_queued(tenant.project_id)
        await raw.next("send_sms")
        past_ack_timeout = time.monotonic() + hub_settings.ack_timeout_s
        await raw.send({"type": "accepted", "id": message_id})
        await eventually(lambda: has_status(db, message_id, "accepted"))
        await raw.close()
        phone = await start_phone(server, second.token, tmp_path / "p.db")
        try:
            # Two sweeps past the ack timeout: had one taken the message back, it would be
            # queued again or offered to the second phone (another attempt, another device).
            await sweeps.wait(2, since=past_ack_timeout, timeout_s=hub_settings.ack_timeout_s + 10)
            assert phone.radio.sent == []
            message = await status_of(db, message_id)
            assert (message.status, message.device_id, message.attempts) == (
                "accepted",
                first.device.id,
                1,
            )
            back = await RawPhone.connect(server, first.token)
            await back.send({"type": "send_result", "id": message_id, "success": True})
            ack = await back.next("result_ack")
            assert ack == {"type": "result_ack", "id": message_id, "kind": "send_result"}
            await back.close()
        finally:
            await phone.stop()
    assert (await status_of(db, message_id)).status == "sent"


async def test_queued_messages_survive_a_server_restart(hub_settings, db, tmp_path):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(hub_settings, db):
        ids = await queue(db, tenant.project_id, count=2)
    async with live_server(hub_settings, db) as server:
        phone = await start_phone(server, paired.token, tmp_path / "p.db")
        try:
            for message_id in ids:
                await eventually(lambda m=message_id: has_status(db, m, "delivered"))
        finally:
            await phone.stop()


async def test_inbound_is_stored_once_when_the_phone_resends_after_a_lost_ack(hub_settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    inbound = {
        "type": "inbound",
        "message": {
            "id": "android-77",
            "address": "AMAZON",
            "body": "Your parcel",
            "date": 1_700_000_000_000,
            "sim_slot": 0,
        },
    }
    async with live_server(hub_settings, db) as server:
        raw = await RawPhone.connect(server, paired.token)
        await raw.send(inbound)
        assert (await raw.next("inbound_ack"))["id"] == "android-77"
        await raw.close()  # suppose that ack never arrived: the phone sends it again
        raw = await RawPhone.connect(server, paired.token)
        await raw.send(inbound)
        assert (await raw.next("inbound_ack"))["id"] == "android-77"
        await raw.close()
    async with db.sessions() as session:
        rows = list(
            (await session.execute(select(Message).where(Message.direction == "in"))).scalars()
        )
    assert len(rows) == 1
    assert rows[0].from_number == "AMAZON" and rows[0].to_number == "+15550100001"
    assert rows[0].status == "received" and rows[0].project_id == tenant.project_id


async def test_inbound_batch_endpoint_for_phones_without_a_socket(client, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    batch = {
        "messages": [
            {"id": "a1", "address": "+15550001111", "body": "hi"},
            {"id": "a1", "address": "+15550001111", "body": "hi"},
        ]
    }
    headers = {"Authorization": f"Bearer {paired.token}"}
    response = await client.post("/v1/phone/inbound", json=batch, headers=headers)
    assert response.status_code == 200 and response.json() == {"acked": ["a1", "a1"], "stored": 1}
    assert (
        await client.post("/v1/phone/inbound", json=batch, headers=tenant.headers)
    ).status_code == 401


async def test_rate_limit_in_parts_holds_under_a_burst(hub_settings, db, tmp_path, monkeypatch):
    claims = watch_calls(monkeypatch, outbound, "claim_queued")
    limited = fast_settings(hub_settings, sim_parts_per_minute=5)
    async with one_phone(limited, db, tmp_path) as (server, phone, tenant, paired):
        async with db.transaction() as session:
            await enqueue(
                session,
                tenant.project_id,
                [OutboundItem("+15550200001", "x" * 200, "GSM-7", 2)] * 1,
            )
        ids = await queue(db, tenant.project_id, count=10)
        await server.hub.notify_queued(tenant.project_id)

        def parts_sent() -> int:
            return sum(2 if len(s.body) > 160 else 1 for s in phone.radio.sent)

        await eventually(lambda: parts_sent() >= 5)
        # Three more dispatch rounds (the sweeps wake them) that found the budget spent.
        await claims.wait(3, since=time.monotonic(), where=lambda done: not done.claims)
        assert parts_sent() == 5
        async with db.sessions() as session:
            queued = (
                await session.execute(select(func.count()).where(Message.status == "queued"))
            ).scalar_one()
        assert queued == len(ids) + 1 - len(phone.radio.sent)


async def queue_and_deliver(server, db, device_id: str, project_id: str, count: int) -> None:
    """Once the phone is ready: `count` messages queued, one wake-up, all of them delivered."""
    connections = server.hub.connections
    await eventually(lambda: device_id in connections)
    await eventually(lambda: connections[device_id].ready)
    ids = await queue(db, project_id, count=count)
    await server.hub.notify_queued(project_id)
    for message_id in ids:
        await eventually(lambda m=message_id: has_status(db, m, "delivered"))


async def test_a_pass_that_read_the_whole_queue_is_followed_by_no_empty_one(
    hub_settings, db, tmp_path, monkeypatch
):
    claims = watch_calls(monkeypatch, outbound, "claim_queued")
    looks = watch_calls(monkeypatch, outbound, "has_queued")
    quiet = fast_settings(hub_settings, sweep_interval_s=3600.0)  # no sweep wakes a round
    async with one_phone(quiet, db, tmp_path) as (server, phone, tenant, paired):
        await queue_and_deliver(server, db, paired.device.id, tenant.project_id, 3)
        # One pass read all three (fewer than it asked for) and gave them out, so the slots
        # the reports freed after it woke no round: not even a look at the queue.
        assert [len(done.claims) for _, done in claims.calls] == [3]
        [(claimed_at, _)] = claims.calls
        assert [at for at, _ in looks.calls if at > claimed_at] == []


async def test_messages_past_a_phones_in_flight_cap_go_out_as_its_slots_free(
    hub_settings, db, tmp_path, monkeypatch
):
    claims = watch_calls(monkeypatch, outbound, "claim_queued")
    # Two in flight at most, and no sweep: only the freed slots can wake the later rounds.
    capped = fast_settings(hub_settings, device_max_in_flight=2, sweep_interval_s=3600.0)
    async with one_phone(capped, db, tmp_path) as (server, phone, tenant, paired):
        await queue_and_deliver(server, db, paired.device.id, tenant.project_id, 6)
        given = [len(done.claims) for _, done in claims.calls if done.claims]
        assert sum(given) == 6 and max(given) <= 2


async def test_revoked_device_is_disconnected_at_once(hub_settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with (
        live_server(hub_settings, db) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        raw = await RawPhone.connect(server, paired.token)
        response = await http.delete(f"/v1/devices/{paired.device.id}", headers=tenant.headers)
        assert response.status_code == 200
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(raw.socket.recv(), 5)
        assert closed.value.rcvd.code == 4403
        with pytest.raises(websockets.InvalidStatus if False else Exception):
            again = await websockets.connect(f"{server.ws_url}?token={paired.token}")
            await asyncio.wait_for(again.recv(), 5)
            await asyncio.wait_for(again.recv(), 5)


async def test_bad_token_closes_with_a_clear_code(hub_settings, db):
    async with live_server(hub_settings, db) as server:
        for token, code in (("sw_dev_" + "0" * 32, 4401), ("nonsense", 4401)):
            socket = await websockets.connect(f"{server.ws_url}?token={token}")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
            assert closed.value.rcvd.code == code
            assert "token" in closed.value.rcvd.reason


async def test_auth_frame_instead_of_query_token(hub_settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(hub_settings, db) as server:
        socket = await websockets.connect(server.ws_url)
        await socket.send(json.dumps({"type": "auth", "token": paired.token}))
        assert json.loads(await asyncio.wait_for(socket.recv(), 5))["type"] == "connected"
        await socket.close()


async def test_a_device_never_receives_another_projects_messages(
    hub_settings, db, tmp_path, monkeypatch
):
    dispatch_rounds = watch_calls(monkeypatch, outbound, "has_queued")
    a = await new_tenant(db, "a")
    b = await new_tenant(db, "b")
    a_device = await devices.pair_device(db, a.project_id)
    async with live_server(hub_settings, db) as server:
        phone = await start_phone(server, a_device.token, tmp_path / "p.db")
        try:
            [b_message] = await queue(db, b.project_id)
            [a_message] = await queue(db, a.project_id)
            await server.hub.notify_queued(b.project_id)
            await server.hub.notify_queued(a.project_id)
            await eventually(lambda: has_status(db, a_message, "delivered"))
            # Two more dispatch rounds for the phone's project (the sweeps wake them).
            await dispatch_rounds.wait(2, since=time.monotonic())
            assert [s.message_id for s in phone.radio.sent] == [a_message]
            assert (await status_of(db, b_message)).status == "queued"
        finally:
            await phone.stop()
        # A phone reporting on another project's message changes nothing. (The reference phone
        # is stopped first: two sockets with one token would keep replacing each other.)
        raw = await RawPhone.connect(server, a_device.token)
        await raw.send({"type": "send_result", "id": b_message, "success": False})
        assert (await raw.next("error"))["code"] == "unknown_message"
        await raw.close()
        assert (await status_of(db, b_message)).status == "queued"


async def test_malformed_frames_and_garbage_never_break_the_socket(hub_settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(hub_settings, db) as server:
        raw = await RawPhone.connect(server, paired.token)
        for garbage, code in [
            ("not json at all", "malformed_frame"),
            (b"\x00\xff\xfe binary", "malformed_frame"),
            ('{"type": "launch_missiles"}', "unknown_frame"),
            ('{"no_type": 1}', "unknown_frame"),
            ('{"type": "send_result", "id": 5}', "invalid_frame"),
            ("[1, 2, 3]", "invalid_frame"),
        ]:
            await raw.send(garbage)
            assert (await raw.next("error"))["code"] == code
        [message_id] = await queue(db, tenant.project_id)
        await server.hub.notify_queued(tenant.project_id)
        assert (await raw.next("send_sms"))["id"] == message_id
        await raw.close()
        # Over the frame size limit: the socket is closed, the server lives on.
        raw = await RawPhone.connect(server, paired.token)
        await raw.send("x" * (hub_settings.phone_max_frame_bytes + 10))
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(10):
                await asyncio.wait_for(raw.socket.recv(), 5)
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/healthz")).status_code == 200


async def test_expired_queued_message_becomes_expired(hub_settings, db):
    tenant = await new_tenant(db)
    async with live_server(hub_settings, db):
        [message_id] = await queue(db, tenant.project_id, ttl_s=0)
        await eventually(lambda: has_status(db, message_id, "expired"))


async def test_accepted_without_result_fails_with_no_result(hub_settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(fast_settings(hub_settings, result_timeout_s=1), db) as server:
        raw = await RawPhone.connect(server, paired.token)
        [message_id] = await queue(db, tenant.project_id)
        await server.hub.notify_queued(tenant.project_id)
        await raw.next("send_sms")
        await raw.send({"type": "accepted", "id": message_id})
        await eventually(lambda: has_status(db, message_id, "failed"))
        assert (await status_of(db, message_id)).error_code == "no_result"
        await raw.close()


async def test_pinned_message_goes_only_to_its_sim(hub_settings, db, tmp_path):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(hub_settings, db) as server:
        phone = await start_phone(
            server, paired.token, tmp_path / "p.db", FakeRadio(sims=fake_sims(2))
        )
        try:
            ids = await queue(db, tenant.project_id, count=4, sim_selector="+15550100001")
            await server.hub.notify_queued(tenant.project_id)
            for message_id in ids:
                await eventually(lambda m=message_id: has_status(db, m, "delivered"))
            assert {s.slot for s in phone.radio.sent} == {1}
            unpinned = await queue(db, tenant.project_id, count=4)
            await server.hub.notify_queued(tenant.project_id)
            for message_id in unpinned:
                await eventually(lambda m=message_id: has_status(db, m, "delivered"))
            assert {s.slot for s in phone.radio.sent[4:]} == {0, 1}  # round-robin
        finally:
            await phone.stop()


async def test_a_message_longer_than_the_rate_window_still_goes_out_alone(
    hub_settings, db, tmp_path, monkeypatch
):
    claims = watch_calls(monkeypatch, outbound, "claim_queued")
    limited = fast_settings(hub_settings, sim_parts_per_minute=20)
    async with one_phone(limited, db, tmp_path) as (server, phone, tenant, paired):
        async with db.transaction() as session:
            [long_one] = await enqueue(
                session,
                tenant.project_id,
                [OutboundItem("+15550200001", "長" * 1600, "UCS-2", 24)],
            )
        [short] = await queue(db, tenant.project_id)
        await server.hub.notify_queued(tenant.project_id)
        await eventually(lambda: has_status(db, long_one.id, "delivered"))
        # Two more dispatch rounds (the sweeps wake them) claimed nothing.
        await claims.wait(2, since=time.monotonic(), where=lambda done: not done.claims)
        assert (await status_of(db, short)).status == "queued"  # the window is used up


async def test_a_late_result_for_a_requeued_message_wins_so_it_is_not_sent_again(
    hub_settings, db, tmp_path
):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(fast_settings(hub_settings, ack_timeout_s=0.5), db) as server:
        raw = await RawPhone.connect(server, paired.token)
        [message_id] = await queue(db, tenant.project_id)
        await server.hub.notify_queued(tenant.project_id)
        await raw.next("send_sms")
        await raw.close()  # the radio sends, but the phone drops before saying `accepted`
        await eventually(lambda: has_status(db, message_id, "queued"))
        back = await RawPhone.connect(server, paired.token, sims=())  # no SIMs: nothing new
        await back.send({"type": "accepted", "id": message_id})
        await back.send({"type": "send_result", "id": message_id, "success": True})
        assert (await back.next("result_ack"))["id"] == message_id
        await back.close()
    message = await status_of(db, message_id)
    assert message.status == "sent" and message.device_id == paired.device.id


async def test_the_first_phone_to_accept_holds_the_message_and_the_other_is_told_not_to_send(
    hub_settings, db
):
    tenant = await new_tenant(db)
    first = await devices.pair_device(db, tenant.project_id)
    second = await devices.pair_device(db, tenant.project_id)
    async with live_server(fast_settings(hub_settings, ack_timeout_s=0.5), db) as server:
        a = await RawPhone.connect(server, first.token)
        [message_id] = await queue(db, tenant.project_id)
        await server.hub.notify_queued(tenant.project_id)
        await a.next("send_sms")  # A is slow to accept: the message is offered again
        b = await RawPhone.connect(server, second.token, sims=((0, "+15550100002"),))
        # After each ack timeout the message is offered again; in turn it reaches B too.
        assert (await b.next("send_sms", timeout=20))["id"] == message_id
        await a.send({"type": "accepted", "id": message_id})
        assert (await a.next("accept_ack")) == {"type": "accept_ack", "id": message_id}
        await b.send({"type": "accepted", "id": message_id})
        refusal = await b.next("error")
        assert refusal["code"] == "stale_command" and refusal["id"] == message_id
        message = await status_of(db, message_id)
        assert message.status == "accepted" and message.device_id == first.device.id
        await a.close()
        await b.close()


async def test_a_silent_phone_is_detected_dead_and_its_sims_go_offline(hub_settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    quiet = fast_settings(hub_settings, phone_idle_timeout_s=1.0, phone_ping_interval_s=0.3)
    async with live_server(quiet, db) as server:
        raw = await RawPhone.connect(server, paired.token)
        assert (await raw.next("ping", timeout=5))["type"] == "ping"  # the server checks in
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(100):
                await asyncio.wait_for(raw.socket.recv(), 5)  # ...and we never answer
        assert closed.value.rcvd.code == 4000
        # Both at once: the inventory reads devices and SIMs in two statements, so on
        # PostgreSQL one read may fall either side of the commit that marks the phone offline.
        await eventually(lambda: _offline(db, tenant.project_id, quiet), timeout_s=5)


async def _offline(db, project_id, settings):
    inventory = await devices.sim_inventory(db, project_id, settings.phone_idle_timeout_s)
    return not inventory.live_sims and inventory.online_devices == 0


async def test_an_acceptance_that_arrived_in_time_holds_however_late_it_is_handled(
    hub_settings, db, monkeypatch
):
    """The phone answers `accepted` at once, right behind 250 inbound SMS whose commit is held
    back until two sweeps past the ack timeout have run: the command is not taken back and
    offered again, because its acceptance had arrived."""
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    sweeps = watch_calls(monkeypatch, outbound, "sweep")
    busy_settings = fast_settings(
        hub_settings, ack_timeout_s=0.3, sweep_interval_s=0.05, rate_limits=False
    )
    async with live_server(busy_settings, db) as server:
        hub = server.hub
        phone = await RawPhone.connect(server, paired.token)
        await eventually(lambda: hub.connections[paired.device.id].ready)
        [message_id] = await queue(db, tenant.project_id)
        await hub.notify_queued(tenant.project_id)
        offer = await phone.next("send_sms")
        past_ack_timeout = time.monotonic() + busy_settings.ack_timeout_s
        commit = hub._commit
        held_back = []

        async def slow_commit(batch):
            # The first batch holding the backlog waits, and every frame behind it with it.
            if not held_back and any(f.__class__.__name__ == "Inbound" for _, f in batch):
                held_back.append(len(batch))
                await eventually(lambda: message_id in hub.accepts_in_hand)
                arrived = max(time.monotonic(), past_ack_timeout)
                await sweeps.wait(2, since=arrived, timeout_s=20)
            return await commit(batch)

        monkeypatch.setattr(hub, "_commit", slow_commit)
        backlog = [
            {
                "type": "inbound",
                "message": {
                    "id": f"in-{n}",
                    "address": "+15550109999",
                    "body": f"hi {n}",
                    "date": 1,
                    "sim_slot": 0,
                },
            }
            for n in range(250)
        ]
        for frame in backlog:
            await phone.send(frame)
        await phone.send({"type": "accepted", "id": message_id})

        seen = await _frames_until_answered(phone, message_id)

    assert offer["id"] == message_id and held_back
    assert seen[-1] == {"type": "accept_ack", "id": message_id}
    # Sweeps past the ack timeout ran while the acceptance waited, yet nothing was offered again.
    assert [f for f in seen if f["type"] == "send_sms"] == []
    assert len([f for f in seen if f["type"] == "inbound_ack"]) == 250
    message = await status_of(db, message_id)
    assert message.status == "accepted" and message.attempts == 1


async def test_frames_that_arrive_together_are_committed_together_each_acked_after_it(
    hub_settings, db, monkeypatch
):
    """While one commit runs, the frames that arrive meanwhile gather into the next: that
    batch is one transaction, and each of its frames is answered only once it committed."""
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(hub_settings, db) as server:
        hub = server.hub
        phone = await RawPhone.connect(server, paired.token)
        await eventually(lambda: hub.connections[paired.device.id].ready)
        [message_id] = await queue(db, tenant.project_id)
        await hub.notify_queued(tenant.project_id)
        await phone.next("send_sms")
        commit = hub._commit
        batches, committed = [], []

        async def watched_commit(batch):
            kinds = [type(frame).__name__ for _, frame in batch]
            batches.append(kinds)
            if kinds == ["Accepted"]:  # alone: it commits while the other two gather behind it
                await eventually(lambda: len(hub._inbox) >= 2)
            answers = await commit(batch)
            committed.extend(kinds)
            return answers

        monkeypatch.setattr(hub, "_commit", watched_commit)
        await phone.send({"type": "accepted", "id": message_id})
        await phone.send({"type": "send_result", "id": message_id, "success": True})
        await phone.send(inbound_frame("together-1"))
        await phone.next("accept_ack")
        assert "Accepted" in committed
        await phone.next("result_ack")
        assert "SendResult" in committed
        assert (await status_of(db, message_id)).status == "sent"
        await phone.next("inbound_ack")
        assert "Inbound" in committed
        async with db.sessions() as session:
            stored = (
                await session.execute(select(func.count()).where(Message.direction == "in"))
            ).scalar_one()
        assert stored == 1
        # Three frames, fewer commits: at least two of them shared one transaction.
        assert sorted(sum(batches, [])) == ["Accepted", "Inbound", "SendResult"]
        assert len(batches) < 3
        await phone.close()


def inbound_frame(phone_id: str) -> dict:
    return {
        "type": "inbound",
        "message": {"id": phone_id, "address": "+15550109999", "body": "hi", "sim_slot": 0},
    }


async def _frames_until_answered(phone: RawPhone, message_id: str) -> list[dict]:
    """Every frame up to the hub's answer to an `accepted` (`accept_ack`, or an `error`
    naming the message)."""
    seen = []
    while True:
        frame = json.loads(await asyncio.wait_for(phone.socket.recv(), 30))
        seen.append(frame)
        if frame.get("id") == message_id and frame["type"] in ("accept_ack", "error"):
            return seen
