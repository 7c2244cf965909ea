"""The purge sweep on both engines, run as of a movable `now`: what goes, what always stays."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from app.db.engine import Database
from app.db.models import (
    Event,
    Message,
    MessageRequest,
    Payment,
    StoredQuote,
    WebhookAttempt,
    WebhookDelivery,
)
from app.services import credits, devices, retention
from app.services.ids import new_id, utcnow
from app.services.inbound import ReceivedSms, store_inbound
from app.services.retention import Retention, purge
from tests.support.factories import new_tenant
from tests.support.live import eventually, fast_settings, live_server

DAY = 86_400
KEEP = Retention(
    quote_s=DAY,
    idempotency_s=DAY,
    message_body_s=30 * DAY,
    inbound_dedupe_s=30 * DAY,
    inbound_dedupe_per_device=10_000,
    event_s=30 * DAY,
)


def at(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)


async def add(db: Database, *rows: object) -> None:
    async with db.transaction() as session:
        session.add_all(rows)


async def rows(db: Database, model: type, *where: object) -> list:
    async with db.sessions() as session:
        return list((await session.execute(select(model).where(*where))).scalars())


def quote(expires_at: datetime, used: bool = False) -> StoredQuote:
    return StoredQuote(
        id=new_id("quo"),
        body_sha256="0" * 64,
        recipients=["+14155550100"],
        encoding="GSM-7",
        segment_count=1,
        per_segment_rate_atomic=35_000,
        fees_atomic=0,
        total_atomic=35_000,
        used_at=expires_at if used else None,
        created_at=expires_at - timedelta(seconds=300),
        expires_at=expires_at,
    )


def payment_for(quote_id: str, status: str) -> Payment:
    return Payment(
        id=new_id("pay"),
        network="eip155:31337",
        payer="0x" + "ab" * 20,
        nonce="0x" + new_id("n").encode().hex().ljust(64, "0")[:64],
        amount_atomic=35_000,
        quote_id=quote_id,
        purpose="send",
        status=status,
        created_at=utcnow(),
    )


async def test_expired_unused_quotes_go_after_the_margin_and_never_one_a_payment_names(
    db, monkeypatch
):
    monkeypatch.setattr(retention, "BATCH", 3)  # several batches in one round
    start = utcnow()
    expired = [quote(at(start, 300)) for _ in range(10)]
    used = quote(at(start, 300), used=True)
    named = quote(at(start, 300))  # e.g. a payment still being reconciled
    live = quote(at(start, 3 * DAY))
    await add(db, *expired, used, named, live, payment_for(named.id, "reserved"))

    early = await purge(db, KEEP, at(start, 300 + DAY - 1))
    assert early.quotes_deleted == 0
    result = await purge(db, KEEP, at(start, 300 + DAY + 1))
    assert result.quotes_deleted == 10
    left = {q.id for q in await rows(db, StoredQuote)}
    assert left == {used.id, named.id, live.id}
    # Payment rows are the proof an authorization was used: the sweep never deletes one.
    assert len(await rows(db, Payment)) == 1
    assert (await purge(db, KEEP, at(start, 300 + DAY + 2))).quotes_deleted == 0


async def test_old_idempotency_data_is_forgotten_and_the_key_then_starts_a_new_request(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000)
    send = {"to": "+14155550100", "message": "your code is 1234"}
    headers = {**tenant.headers, "Idempotency-Key": "order-42"}
    first = await client.post("/v1/messages", json=send, headers=headers)
    replay = await client.post("/v1/messages", json=send, headers=headers)
    assert first.status_code == replay.status_code == 202
    assert replay.json()["request_id"] == first.json()["request_id"]
    paid = MessageRequest(
        id=new_id("req"),
        project_id=tenant.project_id,
        billing="x402",
        response={"request_id": "kept"},
        created_at=utcnow() - timedelta(days=5),
    )
    await add(db, paid)

    assert (await purge(db, KEEP, utcnow() + timedelta(seconds=DAY - 60))).idempotency_cleared == 0
    result = await purge(db, KEEP, utcnow() + timedelta(seconds=DAY + 60))
    assert result.idempotency_cleared == 1
    (request,) = await rows(db, MessageRequest, MessageRequest.id == first.json()["request_id"])
    assert request.idempotency_key is None and request.request_sha256 is None
    assert request.response is None and request.total_atomic == 35_000
    # A paid x402 request keeps its answer (its payment's retries are answered from it).
    (kept,) = await rows(db, MessageRequest, MessageRequest.id == paid.id)
    assert kept.response == {"request_id": "kept"}
    again = await client.post("/v1/messages", json=send, headers=headers)
    assert again.status_code == 202 and again.json()["request_id"] != first.json()["request_id"]


async def test_bodies_of_settled_messages_are_blanked_after_retention_and_metadata_kept(db):
    tenant = await new_tenant(db)
    start = utcnow()

    def message(status: str, direction: str = "out") -> Message:
        return Message(
            id=new_id("msg"),
            project_id=tenant.project_id,
            direction=direction,
            status=status,
            to_number="+14155550100",
            from_number="+14155550199",
            body=f"secret {status}",
            encoding="GSM-7",
            segment_count=1,
            price_atomic=35_000,
            created_at=start,
        )

    settled = [message(s) for s in ("delivered", "failed", "expired", "canceled", "sent")]
    inbound = message("received", "in")
    unfinished = [message(s) for s in ("queued", "sending", "accepted")]
    await add(db, *settled, inbound, *unfinished)

    assert (await purge(db, KEEP, at(start, 30 * DAY - 1))).bodies_blanked == 0
    result = await purge(db, KEEP, at(start, 30 * DAY + 1))
    assert result.bodies_blanked == 6
    by_id = {m.id: m for m in await rows(db, Message)}
    for blanked in [*settled, inbound]:
        row = by_id[blanked.id]
        assert row.body == ""
        assert (row.status, row.to_number, row.segment_count, row.price_atomic) == (
            blanked.status,
            "+14155550100",
            1,
            35_000,
        )
    assert all(by_id[m.id].body == f"secret {m.status}" for m in unfinished)
    assert (await purge(db, KEEP, at(start, 30 * DAY + 2))).bodies_blanked == 0


async def test_inbound_duplicate_ids_are_bounded_per_device_and_replays_still_refused(db):
    tenant = await new_tenant(db)
    phone = (await devices.pair_device(db, tenant.project_id)).device
    other = (await devices.pair_device(db, tenant.project_id)).device

    async def receive(device, sms_id: str) -> bool:
        sms = ReceivedSms(sms_id, "+15550001111", f"hi {sms_id}", None, None)
        return (await store_inbound(db, device, sms))[1]

    for i in range(8):
        assert await receive(phone, f"p-{i}")
    for i in range(3):
        assert await receive(other, f"o-{i}")
    bounded = Retention(
        quote_s=DAY,
        idempotency_s=DAY,
        message_body_s=0,  # kept forever
        inbound_dedupe_s=7 * DAY,
        inbound_dedupe_per_device=5,
    )
    result = await purge(db, bounded, utcnow())
    assert result.per_device_capped == {phone.id: 3}
    held = await rows(db, Message, Message.device_id == phone.id)
    assert sorted(m.phone_message_id for m in held if m.phone_message_id) == [
        f"p-{i}" for i in range(3, 8)
    ]
    # Within the bound a phone's retry of an SMS is still recognised and not stored again.
    assert not await receive(phone, "p-7") and not await receive(other, "o-0")
    assert len(await rows(db, Message, Message.direction == "in")) == 11
    # Past the window no id is kept at all; the messages themselves stay.
    later = await purge(db, bounded, utcnow() + timedelta(days=7, seconds=1))
    assert later.dedupe_ids_cleared == 8
    assert all(m.phone_message_id is None for m in await rows(db, Message))
    assert all(m.body.startswith("hi ") for m in await rows(db, Message))


async def test_instances_purging_at_once_neither_fail_nor_count_twice(settings, db):
    start = utcnow()
    await add(db, *(quote(at(start, 300)) for _ in range(50)))
    second = Database(settings.database_url)  # another instance's pool on the same database
    try:
        results = await asyncio.gather(
            purge(db, KEEP, at(start, 2 * DAY)), purge(second, KEEP, at(start, 2 * DAY))
        )
    finally:
        await second.dispose()
    assert sum(r.quotes_deleted for r in results) == 50
    assert await rows(db, StoredQuote) == []


async def test_every_server_process_runs_the_sweep_from_its_lifespan(settings, db):
    await add(db, quote(utcnow() - timedelta(days=3)))
    async with live_server(fast_settings(settings, purge_interval_s=0.1), db) as server:
        await eventually(lambda: server.app.state["purge"].rounds >= 1)
        await eventually(lambda: _no_quotes(db))


async def _no_quotes(db: Database) -> bool:
    return not await rows(db, StoredQuote)


@pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)
async def test_retention_zero_keeps_everything(db):
    start = utcnow()
    await add(db, quote(at(start, 300)))
    forever = Retention(0, 0, 0, 0, 0)
    assert (await purge(db, forever, at(start, 365 * DAY))).total == 0
    assert len(await rows(db, StoredQuote)) == 1


def event(project_id: str, created_at: datetime, routed: bool = True) -> Event:
    return Event(
        id=new_id("evt"),
        project_id=project_id,
        type="message.sent",
        data={"id": new_id("msg")},
        created_at=created_at,
        routed=routed,
    )


def delivery(project_id: str, event_id: str, created_at: datetime, status: str) -> WebhookDelivery:
    return WebhookDelivery(
        id=new_id("whd"),
        project_id=project_id,
        webhook_id=new_id("wh"),
        event_id=event_id,
        event_type="message.sent",
        status=status,
        attempts=1,
        created_at=created_at,
        updated_at=created_at,
    )


async def test_events_and_finished_deliveries_go_after_the_event_retention(db):
    tenant = await new_tenant(db)
    start = utcnow()
    old, recent = at(start, -31 * DAY), at(start, -29 * DAY)
    old_event, old_unrouted, recent_event = (
        event(tenant.project_id, old),
        event(tenant.project_id, old, routed=False),
        event(tenant.project_id, recent),
    )
    done, still_retrying, recent_done = (
        delivery(tenant.project_id, old_event.id, old, "succeeded"),
        delivery(tenant.project_id, old_event.id, old, "pending"),
        delivery(tenant.project_id, recent_event.id, recent, "failed"),
    )
    attempts = [
        WebhookAttempt(delivery_id=done.id, number=1, latency_ms=5, created_at=old),
        WebhookAttempt(delivery_id=recent_done.id, number=1, latency_ms=5, created_at=recent),
    ]
    await add(db, old_event, old_unrouted, recent_event, done, still_retrying, recent_done)
    await add(db, *attempts)

    result = await purge(db, KEEP, start)

    assert (result.events_deleted, result.deliveries_deleted, result.attempts_deleted) == (1, 1, 1)
    # Not yet handed to its deliveries, or within retention: kept.
    assert {e.id for e in await rows(db, Event)} == {old_unrouted.id, recent_event.id}
    assert {d.id for d in await rows(db, WebhookDelivery)} == {still_retrying.id, recent_done.id}
    assert [a.delivery_id for a in await rows(db, WebhookAttempt)] == [recent_done.id]
    assert (await purge(db, KEEP, start)).total == 0
