"""Every change a caller cares about writes its event in the transaction of the change: each
message transition, a request's completion (once, with its outcome), a phone coming online and
going offline, a balance crossing its low-credit threshold, and inbound SMS linked to the
message they answer. Each event's `data` is the object as the API returns it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlmodel import col

from app.db.engine import Database
from app.db.models import Message
from app.domain.errors import InvalidInput
from app.domain.pricing import format_usdc
from app.services import credits, devices, events, inbound, outbound, projects
from app.services.ids import utcnow
from app.services.inbound import DeviceSms, ReceivedSms
from tests.support.factories import TenantKeys, new_tenant
from tests.support.live import eventually, fast_settings, live_server, start_phone

RATE = 35_000  # default USDC atomic units per segment
SIM_NUMBER = "+15550100000"  # the fake radio's SIM in slot 0


async def events_of(
    http: httpx.AsyncClient, tenant: TenantKeys, *types: str
) -> list[dict[str, Any]]:
    """The project's events, oldest first (all of them: every test here writes few)."""
    params: dict[str, Any] = {"limit": 1000}
    if types:
        params["type"] = ",".join(types)
    response = await http.get("/v1/events", headers=tenant.headers, params=params)
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["data"]))


async def get_json(http: httpx.AsyncClient, tenant: TenantKeys, path: str, **params: Any) -> Any:
    response = await http.get(path, headers=tenant.headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def send(http: httpx.AsyncClient, tenant: TenantKeys, to: list[str], text: str) -> Any:
    response = await http.post(
        "/v1/messages", json={"to": to, "message": text}, headers=tenant.headers
    )
    assert response.status_code == 202, response.text
    return response.json()


# ------------------------------------------------------------------ through a real phone


async def test_a_message_and_its_phone_report_every_change_in_order(settings, db, tmp_path):
    tenant = await new_tenant(db)
    other = await new_tenant(db, "other")
    await credits.grant(db, tenant.project_id, 1_000_000)
    paired = await devices.pair_device(db, tenant.project_id, "front desk")
    async with (
        live_server(fast_settings(settings), db) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        accepted = await send(http, tenant, ["+14155550100"], "Your table is ready")
        [sent] = accepted["messages"]
        queued_now = await get_json(http, tenant, f"/v1/messages/{sent['id']}")
        assert queued_now["status"] == "queued"

        phone = await start_phone(server, paired.token, tmp_path / "p.db")
        try:

            async def delivered() -> bool:
                got = await get_json(http, tenant, f"/v1/messages/{sent['id']}")
                return bool(got["status"] == "delivered")

            await eventually(delivered)
            final = await get_json(http, tenant, f"/v1/messages/{sent['id']}")
            request = await get_json(http, tenant, f"/v1/requests/{accepted['request_id']}")
            await eventually(lambda: _has(http, tenant, "request.completed"))

            await phone.radio.receive("+14155550100", "Thanks, on my way")
            await eventually(lambda: _has(http, tenant, "message.received"))
            [reply] = (
                await get_json(http, tenant, "/v1/messages", direction="in", in_reply_to=sent["id"])
            )["data"]
        finally:
            await phone.stop()
        await eventually(lambda: _has(http, tenant, "device.offline"))
        [device_after] = (await get_json(http, tenant, "/v1/devices"))["data"]

        found = await events_of(http, tenant)
        assert [e["type"] for e in found] == [
            "message.queued",
            "device.online",
            "message.sent",
            "message.delivered",
            "request.completed",
            "message.received",
            "device.offline",
        ]
        by_type = {e["type"]: e for e in found}
        assert all(e["project_id"] == tenant.project_id for e in found)
        assert all(e["id"].startswith("evt_") for e in found)
        assert by_type["message.queued"]["data"] == queued_now
        # The message as it stood when the radio sent it: delivered later, nothing else changed.
        assert by_type["message.sent"]["data"] == {
            **final,
            "status": "sent",
            "delivered_at": None,
        }
        assert by_type["message.delivered"]["data"] == final
        assert by_type["request.completed"]["data"] == request
        assert request["status"] == "all_delivered"
        assert by_type["message.received"]["data"] == reply
        assert reply["in_reply_to"] == sent["id"] and reply["from"] == "+14155550100"
        assert reply["to"] == SIM_NUMBER and reply["status"] == "received"
        assert reply["sim_id"] == final["sim_id"] and reply["device_id"] == paired.device.id
        online = by_type["device.online"]["data"]
        assert online["id"] == paired.device.id and online["online"] is True
        assert online.keys() == device_after.keys() and online["name"] == "front desk"
        assert by_type["device.offline"]["data"] == device_after
        assert device_after["online"] is False
        # Tenant isolation: the other project saw none of it.
        assert await events_of(http, other) == []
        assert (await get_json(http, other, "/v1/messages", in_reply_to=sent["id"]))["data"] == []


async def _has(http: httpx.AsyncClient, tenant: TenantKeys, type: str) -> bool:
    return bool(await events_of(http, tenant, type))


async def test_a_reconnect_the_stored_state_already_shows_records_nothing(db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    device_id = paired.device.id
    await devices.device_connected(db, device_id, "inst_a")
    await devices.device_connected(db, device_id, "inst_a")  # a newer socket, same instance
    await devices.device_connected(db, device_id, "inst_b")  # back before inst_a noticed
    assert await devices.device_disconnected(db, device_id, "inst_a") == []  # not its any more
    await devices.device_disconnected(db, device_id, "inst_b")
    await devices.device_disconnected(db, device_id, "inst_b")
    await devices.device_connected(db, device_id, "inst_b")
    await devices.revoke_device(db, tenant.project_id, device_id)
    assert [e.type for e in await _stored_events(db, tenant)] == [
        "device.online",
        "device.offline",
        "device.online",
        "device.offline",
    ]


# ---------------------------------------------------------- requests and their outcomes


async def _queued(
    client: httpx.AsyncClient, db: Database, tenant: TenantKeys, count: int
) -> tuple[str, list[str]]:
    """A credit request of `count` messages, sent through the API, queued."""
    await credits.grant(db, tenant.project_id, 10_000_000)
    body = await send(client, tenant, [f"+1415555{n:04d}" for n in range(count)], "hello")
    return body["request_id"], [m["id"] for m in body["messages"]]


def _report(device: Any, kind: str, message_id: str, success: bool = True) -> outbound.Report:
    return outbound.Report(kind, device.project_id, device.id, message_id, success)


async def _apply(db: Database, *reports: outbound.Report) -> None:
    async with db.transaction() as session:
        await outbound.apply_reports(session, list(reports))


async def _stored_events(db: Database, tenant: TenantKeys, *types: str) -> list[Any]:
    page = await events.list_events(
        db, tenant.project_id, events.EventFilter(types=tuple(types)), limit=1000
    )
    return list(reversed(page.events))


async def _request_now(client: httpx.AsyncClient, tenant: TenantKeys, request_id: str) -> Any:
    return await get_json(client, tenant, f"/v1/requests/{request_id}")


async def test_request_completed_once_with_each_outcome(client, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    device = paired.device
    S, R, D = outbound.SEND_RESULT_REPORT, outbound.DELIVERY_REPORT, outbound.ACCEPTED_REPORT

    delivered_id, (a, b) = await _queued(client, db, tenant, 2)
    # Both messages' whole lives in one batch: each transition still has its own event.
    await _apply(db, _report(device, D, a), _report(device, S, a), _report(device, R, a))
    assert await _stored_events(db, tenant, "request.completed") == []
    await _apply(db, _report(device, S, b), _report(device, R, b))
    all_delivered = await _request_now(client, tenant, delivered_id)

    partial_id, (c, d) = await _queued(client, db, tenant, 2)
    await _apply(db, _report(device, S, c), _report(device, R, c, success=False))
    await _apply(db, _report(device, S, d), _report(device, R, d))
    partial = await _request_now(client, tenant, partial_id)

    failed_id, (e, f) = await _queued(client, db, tenant, 2)
    await _apply(db, _report(device, S, e, success=False))
    canceled = await client.post(f"/v1/messages/{f}/cancel", headers=tenant.headers)
    assert canceled.status_code == 200, canceled.text
    failed = await _request_now(client, tenant, failed_id)
    # Reports about finished messages change nothing and write nothing.
    await _apply(db, _report(device, R, a), _report(device, R, e))

    completed = await _stored_events(db, tenant, "request.completed")
    assert [event.data for event in completed] == [all_delivered, partial, failed]
    assert [r["status"] for r in (all_delivered, partial, failed)] == [
        "all_delivered",
        "partial_delivery",
        "failed",
    ]
    message_kinds = [
        (event.type, event.data["id"])
        for event in await _stored_events(db, tenant)
        if event.type.startswith("message.")
    ]
    assert message_kinds == [
        ("message.queued", a),
        ("message.queued", b),
        ("message.sent", a),
        ("message.delivered", a),
        ("message.sent", b),
        ("message.delivered", b),
        ("message.queued", c),
        ("message.queued", d),
        ("message.sent", c),
        ("message.failed", c),
        ("message.sent", d),
        ("message.delivered", d),
        ("message.queued", e),
        ("message.queued", f),
        ("message.failed", e),
        ("message.canceled", f),
    ]
    events = await _stored_events(db, tenant)
    sent_a = next(ev for ev in events if ev.type == "message.sent" and ev.data["id"] == a)
    assert sent_a.data["status"] == "sent" and sent_a.data["delivered_at"] is None
    failed_c = next(ev for ev in events if ev.type == "message.failed")
    assert failed_c.data == next(m for m in partial["messages"] if m["id"] == c)
    assert failed_c.data["error_code"] == "not_delivered"


async def test_the_clock_reports_expired_and_no_result_messages(client, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    expiring_request, (late,) = await _queued(client, db, tenant, 1)
    stuck_request, (stuck,) = await _queued(client, db, tenant, 1)
    await _apply(db, _report(paired.device, outbound.ACCEPTED_REPORT, stuck))
    async with db.transaction() as session:
        await session.execute(update(Message).where(Message.id == late).values(expires_at=utcnow()))
    result = await outbound.sweep(db, ack_timeout_s=60, result_timeout_s=0)
    assert (result.expired, result.no_result) == (1, 1)

    events = await _stored_events(db, tenant, "message.expired", "message.failed")
    expired_now = await get_json(client, tenant, f"/v1/messages/{late}")
    stuck_now = await get_json(client, tenant, f"/v1/messages/{stuck}")
    assert [(e.type, e.data) for e in events] == [
        ("message.expired", expired_now),
        ("message.failed", stuck_now),
    ]
    assert stuck_now["error_code"] == "no_result"
    completed = await _stored_events(db, tenant, "request.completed")
    assert [e.data for e in completed] == [
        await _request_now(client, tenant, expiring_request),
        await _request_now(client, tenant, stuck_request),
    ]
    assert {e.data["status"] for e in completed} == {"failed"}
    before = len(await _stored_events(db, tenant))
    await outbound.sweep(db, ack_timeout_s=60, result_timeout_s=0)  # nothing left to do
    assert len(await _stored_events(db, tenant)) == before


async def test_racing_batches_complete_each_request_exactly_once(client, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    requests = [await _queued(client, db, tenant, 2) for _ in range(12)]
    S = outbound.SEND_RESULT_REPORT
    # The two last messages of each request finish in two transactions running at once.
    await asyncio.gather(
        *(
            _apply(db, _report(paired.device, S, message_id, success=False))
            for _, ids in requests
            for message_id in ids
        )
    )
    completed = await _stored_events(db, tenant, "request.completed")
    assert sorted(e.data["request_id"] for e in completed) == sorted(r for r, _ in requests)
    assert {e.data["status"] for e in completed} == {"failed"}


async def test_paid_orders_queue_with_their_events(client, db):
    """x402 fulfilment queues its messages with `outbound.enqueue`, which records them."""
    tenant = await new_tenant(db)
    async with db.transaction() as session:
        [queued] = await outbound.enqueue(
            session,
            tenant.project_id,
            [outbound.OutboundItem("+14155550123", "paid", "GSM-7", 1, RATE)],
            billing="x402",
        )
    [event] = await _stored_events(db, tenant)
    assert event.type == "message.queued"
    assert event.data == await get_json(client, tenant, f"/v1/messages/{queued.id}")


# --------------------------------------------------------------------------- credits.low


async def test_credits_low_once_when_the_balance_crosses_the_threshold(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    threshold = 8 * RATE + RATE // 2
    policy = await projects.set_policy(
        db, tenant.project_id, credits_low_threshold_atomic=threshold
    )
    assert policy.credits_low_threshold_atomic == threshold
    kept = await projects.set_policy(db, tenant.project_id, default_region="US")
    assert kept.credits_low_threshold_atomic == threshold

    await send(client, tenant, ["+14155550100"], "one")  # 9 RATE left: still above
    assert await _stored_events(db, tenant, "credits.low") == []
    await send(client, tenant, ["+14155550100"], "two")  # 8 RATE: crossed
    balance = (await get_json(client, tenant, "/v1/credits"))["balance_atomic"]
    await send(client, tenant, ["+14155550100", "+14155550101"], "three")  # below already
    [low] = await _stored_events(db, tenant, "credits.low")
    assert balance == 8 * RATE
    assert low.data == {
        "balance_atomic": balance,
        "balance": format_usdc(balance),
        "currency": "USDC",
        "threshold_atomic": threshold,
    }
    # Topped up above it, the next crossing is told again; with no threshold, never.
    await credits.grant(db, tenant.project_id, 10 * RATE)
    await send(client, tenant, ["+1415555010" + str(n) for n in range(8)], "four")
    assert len(await _stored_events(db, tenant, "credits.low")) == 2
    await projects.set_policy(db, tenant.project_id, credits_low_threshold_atomic=None)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    await send(client, tenant, ["+1415555010" + str(n) for n in range(8)], "five")
    assert len(await _stored_events(db, tenant, "credits.low")) == 2
    with pytest.raises(InvalidInput):
        await projects.set_policy(db, tenant.project_id, credits_low_threshold_atomic=-1)


async def test_concurrent_sends_cross_the_threshold_once(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    await projects.set_policy(db, tenant.project_id, credits_low_threshold_atomic=5 * RATE)
    await asyncio.gather(*(send(client, tenant, [f"+141555501{n:02d}"], f"n{n}") for n in range(8)))
    [low] = await _stored_events(db, tenant, "credits.low")
    assert low.data["balance_atomic"] < 5 * RATE and low.data["threshold_atomic"] == 5 * RATE
    assert (await get_json(client, tenant, "/v1/credits"))["balance_atomic"] == 2 * RATE


async def test_credits_low_also_on_a_single_project_charge(db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000)
    await projects.set_policy(db, tenant.project_id, credits_low_threshold_atomic=500)
    async with db.transaction() as session:
        await credits.charge_project(session, tenant.project_id, 400, "req_a")
        await credits.charge_project(session, tenant.project_id, 400, "req_b")
        await credits.charge_project(session, tenant.project_id, 100, "req_c")
    [low] = await _stored_events(db, tenant, "credits.low")
    assert low.data["balance_atomic"] == 200 and low.data["threshold_atomic"] == 500


# ---------------------------------------------------------------------------- in_reply_to


async def _phone_with_sims(db: Database, tenant: TenantKeys, *numbers: str) -> Any:
    paired = await devices.pair_device(db, tenant.project_id)
    sims = await devices.report_sims(
        db, paired.device, [devices.ReportedSim(slot, n) for slot, n in enumerate(numbers)]
    )
    return paired.device, sims


async def _sent_on(db: Database, tenant: TenantKeys, device: Any, sim: Any, to: str) -> str:
    """An outbound message given to `sim` (through a real claim pass)."""
    async with db.transaction() as session:
        [queued] = await outbound.enqueue(
            session, tenant.project_id, [outbound.OutboundItem(to, "hi", "GSM-7", 1)]
        )

    def plan(candidates: list[outbound.Candidate], locked: frozenset[str]) -> list[outbound.Claim]:
        return [outbound.Claim(c, device.id, sim.id) for c in candidates if c.id == queued.id]

    done = await outbound.claim_queued(db, tenant.project_id, 100, plan)
    assert [c.message.id for c in done.claims] == [queued.id]
    return queued.id


async def _dispatched_ago(db: Database, message_id: str, ago: timedelta) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(Message).where(Message.id == message_id).values(dispatched_at=utcnow() - ago)
        )


async def _reply_to(db: Database, device: Any, slot: int, sender: str, phone_id: str) -> Any:
    message_id, new = await inbound.store_inbound(
        db, device, ReceivedSms(phone_id, sender, "reply", None, slot)
    )
    assert new
    async with db.sessions() as session:
        return (
            await session.execute(select(Message).where(col(Message.id) == message_id))
        ).scalar_one()


async def test_in_reply_to_is_the_latest_send_to_that_sender_on_that_sim(client, db):
    tenant = await new_tenant(db)
    device, (sim_a, sim_b) = await _phone_with_sims(db, tenant, "+15550100000", "+15550100001")
    old = await _sent_on(db, tenant, device, sim_a, "+14155550100")
    await _dispatched_ago(db, old, timedelta(days=8))
    earlier = await _sent_on(db, tenant, device, sim_a, "+14155550100")
    await _dispatched_ago(db, earlier, timedelta(hours=2))
    latest = await _sent_on(db, tenant, device, sim_a, "+14155550100")
    on_b = await _sent_on(db, tenant, device, sim_b, "+14155550100")  # later, other SIM
    elsewhere = await _sent_on(db, tenant, device, sim_a, "+14155550199")  # later, other number

    # Another project sends to the same person last of all, on its own phone.
    theirs = await new_tenant(db, "theirs")
    their_device, (their_sim,) = await _phone_with_sims(db, theirs, "+15550100009")
    their_message = await _sent_on(db, theirs, their_device, their_sim, "+14155550100")

    assert (await _reply_to(db, device, 0, "+14155550100", "p1")).in_reply_to == latest
    # The phone may report the sender nationally, or formatted.
    assert (await _reply_to(db, device, 0, "(415) 555-0100", "p2")).in_reply_to == latest
    assert (await _reply_to(db, device, 0, "14155550100", "p3")).in_reply_to == latest
    assert (await _reply_to(db, device, 1, "+14155550100", "p4")).in_reply_to == on_b
    assert (await _reply_to(db, device, 0, "+14155550199", "p5")).in_reply_to == elsewhere
    assert (await _reply_to(db, device, 0, "+14155550177", "p6")).in_reply_to is None
    assert (await _reply_to(db, device, 0, "555", "p7")).in_reply_to is None
    their_reply = await _reply_to(db, their_device, 0, "+14155550100", "p8")
    assert their_reply.in_reply_to == their_message

    # Past the 7 days nothing is answered.
    for message_id in (earlier, latest):
        await _dispatched_ago(db, message_id, timedelta(days=7, minutes=1))
    assert (await _reply_to(db, device, 0, "+14155550100", "p9")).in_reply_to is None

    replies = await get_json(client, tenant, "/v1/messages", in_reply_to=latest)
    assert [m["from"] for m in replies["data"]] == ["14155550100", "(415) 555-0100", "+14155550100"]
    assert {m["in_reply_to"] for m in replies["data"]} == {latest}
    outbound_one = await get_json(client, tenant, f"/v1/messages/{latest}")
    assert outbound_one["in_reply_to"] is None
    assert (await get_json(client, theirs, "/v1/messages", in_reply_to=latest))["data"] == []
    assert (
        len((await get_json(client, theirs, "/v1/messages", in_reply_to=their_message))["data"])
        == 1
    )


async def test_a_batch_of_inbound_links_replies_and_records_only_new_messages(client, db):
    tenant = await new_tenant(db)
    device, (sim,) = await _phone_with_sims(db, tenant, SIM_NUMBER)
    first = await _sent_on(db, tenant, device, sim, "+14155550100")
    second = await _sent_on(db, tenant, device, sim, "+14155550101")

    def sms(phone_id: str, sender: str) -> DeviceSms:
        return DeviceSms(device.id, tenant.project_id, ReceivedSms(phone_id, sender, "ok", None, 0))

    async def store(*items: DeviceSms) -> None:
        async with db.transaction() as session:
            await inbound.store_inbound_many(
                session, list(items), dialect="sqlite" if db.is_sqlite else "postgresql"
            )

    await store(sms("a", "+14155550100"), sms("b", "4155550101"), sms("a", "+14155550100"))
    await store(sms("b", "4155550101"), sms("c", "+14155550177"))  # b again: the phone re-sent it
    received = await _stored_events(db, tenant, "message.received")
    listed = (await get_json(client, tenant, "/v1/messages", direction="in"))["data"]
    assert [e.data for e in received] == listed[::-1]
    assert [(m["from"], m["in_reply_to"]) for m in listed[::-1]] == [
        ("+14155550100", first),
        ("4155550101", second),
        ("+14155550177", None),
    ]
    # The single-message path (the phone's HTTP batch endpoint) does the same, once.
    message_id, new = await inbound.store_inbound(
        db, device, ReceivedSms("a", "+14155550100", "ok", None, 0)
    )
    assert not new
    assert len(await _stored_events(db, tenant, "message.received")) == 3


async def test_one_projects_events_are_never_anothers(client, db):
    ours = await new_tenant(db, "ours")
    theirs = await new_tenant(db, "theirs")
    _, ids = await _queued(client, db, ours, 2)
    assert [e["type"] for e in await events_of(client, ours)] == ["message.queued"] * 2
    assert await events_of(client, theirs) == []
    response = await client.get(f"/v1/messages/{ids[0]}", headers=theirs.headers)
    assert response.status_code == 404
