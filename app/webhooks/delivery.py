"""The delivery worker, one in every server process: routes new events to their endpoints
(app/webhooks/fanout.py), claims due deliveries (a lease, so no other instance sends one
meanwhile; `FOR UPDATE SKIP LOCKED` on PostgreSQL), sends them concurrently with a cap per
endpoint so a slow endpoint never holds up the others, and records each attempt (the attempt,
the delivery's outcome or next try, the endpoint's failing streak) in one transaction.

At least once: a delivery is done only when its success is committed; a process that dies
mid-send leaves the lease to lapse and the delivery is sent again."""

from __future__ import annotations

import asyncio
import contextlib
import random as _random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
import sqlalchemy as sa
from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import Event, Webhook, WebhookAttempt, WebhookDelivery
from app.domain.webhook_retries import retry_delay_s, should_disable
from app.faults import crash_point
from app.logs import get_logger
from app.services.events import record_event
from app.services.ids import iso_utc, utcnow
from app.services.webhooks import signing_secrets, webhook_object
from app.settings import Settings
from app.webhooks import wakeup
from app.webhooks.client import SendResult, WebhookClient
from app.webhooks.fanout import FAILED, PENDING, SUCCEEDED, route_events
from app.webhooks.signing import signature_headers

log = get_logger("simwire.webhooks")

MAX_IN_FLIGHT = 64
"""Sends at once in one process."""
MAX_IN_FLIGHT_PER_ENDPOINT = 4
"""Sends at once to one endpoint from one process: the rest of its backlog waits unclaimed,
so other instances and other endpoints are not held up by it."""
STOP_GRACE_S = 2.0
WEBHOOK_DISABLED = "webhook.disabled"

Clock = Callable[[], datetime]


def event_body(event: Event) -> bytes:
    """The JSON a delivery POSTs: the event exactly as `GET /v1/events` returns it."""
    return msgspec.json.encode(
        {
            "id": event.id,
            "type": event.type,
            "created_at": event.created_at,
            "project_id": event.project_id,
            "data": event.data,
        }
    )


@dataclass(frozen=True)
class _Claimed:
    delivery: WebhookDelivery
    webhook: Webhook
    event: Event | None


class DeliveryWorker:
    """Started and stopped by the app lifespan. `clock` (now, aware UTC) and `random` (the
    retry jitter) are for tests that move time; `client` for tests that resolve names or
    trust a test certificate authority."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock = utcnow,
        random: Callable[[], float] = _random.random,
        client: WebhookClient | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.random = random
        self.client = client or WebhookClient(
            settings.webhook_allow_private, settings.webhook_timeout_s
        )
        self._in_flight: dict[str, int] = defaultdict(int)
        self._sends: set[asyncio.Task[None]] = set()
        self._bell = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # Lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        wakeup.register(self._bell)
        self._task = asyncio.create_task(self._loop(), name="webhook-delivery")

    async def stop(self) -> None:
        wakeup.unregister(self._bell)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        # Sends under way get a moment to finish and be recorded; any cut short is sent again
        # once its lease lapses.
        if self._sends:
            await asyncio.wait(set(self._sends), timeout=STOP_GRACE_S)
        for task in list(self._sends):
            task.cancel()
        for task in list(self._sends):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.aclose()

    def wake(self) -> None:
        """Look for work now (a delivery was made due by this process)."""
        self._bell.set()

    async def drain(self) -> None:
        """Waits until every send this worker started has been recorded."""
        while self._sends:
            await asyncio.wait(set(self._sends))

    # The loop --------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bell.wait(), self.settings.webhook_poll_s)
            self._bell.clear()
            try:
                await self.run_once()
            except Exception as exc:  # the next round tries again
                log.error("webhook_round_failed", error=repr(exc))

    async def run_once(self) -> int:
        """Routes the events waiting for it, then starts sending as many due deliveries as
        this process has room for; how many sends it started. A read-only look comes first,
        so an idle round takes no write lock (SQLite) and locks no rows."""
        unrouted, due = await self._look(self.clock())
        if unrouted:
            while await route_events(self.db, self.clock()):
                pass
            due = True  # the events may have made deliveries due
        started = 0
        while due and (room := MAX_IN_FLIGHT - len(self._sends)) > 0:
            claimed = await self._claim(room)
            for one in claimed:
                self._start_send(one)
            started += len(claimed)
            if len(claimed) < room:
                break
        return started

    async def _look(self, now: datetime) -> tuple[bool, bool]:
        """Whether events wait to be routed, and whether a delivery this process may take is
        due."""
        async with self.db.reading() as session:
            unrouted = (
                await session.execute(
                    select(col(Event.seq)).where(col(Event.routed) == sa.false()).limit(1)
                )
            ).first() is not None
            due = (
                await session.execute(
                    self._due(now).with_only_columns(col(WebhookDelivery.seq)).limit(1)
                )
            ).first() is not None
        return unrouted, due

    async def deliver_now(self, delivery_id: str) -> None:
        """Sends one delivery at once and waits until its attempt is recorded (the test route);
        nothing when it is not pending or another send of it is under way."""
        claimed = await self._claim(1, delivery_id=delivery_id)
        for one in claimed:
            self._in_flight[one.webhook.id] += 1
            try:
                await self._deliver(one)
            finally:
                self._release(one.webhook.id)

    # Claiming --------------------------------------------------------------------------------

    async def _claim(self, limit: int, delivery_id: str | None = None) -> list[_Claimed]:
        now = self.clock()
        query = (
            self._due(now)
            if delivery_id is None
            else self._claimable(now).where(col(WebhookDelivery.id) == delivery_id)
        )
        query = query.order_by(col(WebhookDelivery.next_attempt_at)).limit(
            limit * MAX_IN_FLIGHT_PER_ENDPOINT
        )
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
        async with self.db.transaction() as session:
            candidates = (await session.execute(query)).scalars().all()
            counts = dict(self._in_flight)
            picked: list[WebhookDelivery] = []
            for delivery in candidates:
                if len(picked) == limit:
                    break
                if counts.get(delivery.webhook_id, 0) < MAX_IN_FLIGHT_PER_ENDPOINT:
                    counts[delivery.webhook_id] = counts.get(delivery.webhook_id, 0) + 1
                    picked.append(delivery)
            if not picked:
                return []
            lease = now + timedelta(seconds=self.settings.webhook_lease_s)
            for delivery in picked:
                delivery.leased_until = lease
            webhooks = {
                webhook.id: webhook
                for webhook in (
                    await session.execute(
                        select(Webhook).where(
                            col(Webhook.id).in_({delivery.webhook_id for delivery in picked})
                        )
                    )
                ).scalars()
            }
            events = {
                event.id: event
                for event in (
                    await session.execute(
                        select(Event).where(
                            col(Event.id).in_({delivery.event_id for delivery in picked})
                        )
                    )
                ).scalars()
            }
        return [
            _Claimed(delivery, webhooks[delivery.webhook_id], events.get(delivery.event_id))
            for delivery in picked
            if delivery.webhook_id in webhooks
        ]

    def _claimable(self, now: datetime) -> Select[tuple[WebhookDelivery]]:
        """Pending deliveries no instance holds a lease on."""
        return select(WebhookDelivery).where(
            col(WebhookDelivery.status) == PENDING,
            or_(
                col(WebhookDelivery.leased_until).is_(None),
                col(WebhookDelivery.leased_until) < now,
            ),
        )

    def _due(self, now: datetime) -> Select[tuple[WebhookDelivery]]:
        """Claimable deliveries that are due, to enabled endpoints this process is not
        already sending its most to."""
        full = [
            webhook_id
            for webhook_id, count in self._in_flight.items()
            if count >= MAX_IN_FLIGHT_PER_ENDPOINT
        ]
        query = (
            self._claimable(now)
            .join(Webhook, col(Webhook.id) == col(WebhookDelivery.webhook_id))
            .where(col(WebhookDelivery.next_attempt_at) <= now, col(Webhook.enabled) == sa.true())
        )
        if full:
            query = query.where(col(WebhookDelivery.webhook_id).not_in(full))
        return query

    # Sending ---------------------------------------------------------------------------------

    def _start_send(self, claimed: _Claimed) -> None:
        self._in_flight[claimed.webhook.id] += 1
        task = asyncio.create_task(self._deliver(claimed), name="webhook-send")
        self._sends.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._sends.discard(finished)
            self._release(claimed.webhook.id)
            self._bell.set()  # room for another send

        task.add_done_callback(done)

    def _release(self, webhook_id: str) -> None:
        self._in_flight[webhook_id] -= 1
        if self._in_flight[webhook_id] <= 0:
            del self._in_flight[webhook_id]

    async def _deliver(self, claimed: _Claimed) -> None:
        crash_point("webhook_before_send")
        result = await self._send(claimed)
        try:
            await record_attempt(self.db, claimed.delivery.id, result, self.clock(), self.random)
        except Exception as exc:  # the lease lapses and the delivery is sent again
            log.error(
                "webhook_attempt_not_recorded", delivery_id=claimed.delivery.id, error=repr(exc)
            )

    async def _send(self, claimed: _Claimed) -> SendResult:
        if claimed.event is None:
            return SendResult(None, "the event is no longer kept", 0)
        try:
            secrets = signing_secrets(self.settings, claimed.webhook, self.clock())
        except Exception:
            return SendResult(
                None, "the signing secret does not open with this server's SIMWIRE_SECRET_KEY", 0
            )
        body = event_body(claimed.event)
        # The signature's timestamp is the wall clock a receiver checks it against.
        headers = signature_headers(secrets, claimed.event.id, int(time.time()), body)
        return await self.client.post(claimed.webhook.url, body, headers)


async def record_attempt(
    db: Database,
    delivery_id: str,
    result: SendResult,
    now: datetime,
    random: Callable[[], float] = _random.random,
) -> str | None:
    """In one transaction: the attempt row, the delivery's outcome (succeeded; failed once the
    retry schedule is used up; else pending with its next try, jittered), and the endpoint's
    failing streak, which disables it (with a `webhook.disabled` event) once every attempt has
    failed for 5 days. The delivery's new status, or None when it is no longer pending."""
    async with db.transaction() as session:
        query = select(WebhookDelivery).where(col(WebhookDelivery.id) == delivery_id)
        if not db.is_sqlite:
            query = query.with_for_update()
        delivery = (await session.execute(query)).scalar_one_or_none()
        if delivery is None or delivery.status != PENDING:
            return None
        number = delivery.attempts + 1
        next_at: datetime | None = None
        if result.succeeded:
            delivery.status = SUCCEEDED
        else:
            delay_s = retry_delay_s(number, random)
            if delay_s is None:
                delivery.status = FAILED
            else:
                next_at = now + timedelta(seconds=delay_s)
        delivery.attempts = number
        delivery.next_attempt_at = next_at
        delivery.leased_until = None
        delivery.last_status_code = result.status_code
        delivery.last_error = result.error
        delivery.last_latency_ms = result.latency_ms
        delivery.updated_at = now
        delivery.completed_at = None if delivery.status == PENDING else now
        session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                number=number,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                error=result.error,
                next_retry_at=next_at,
                created_at=now,
            )
        )
        webhook_query = select(Webhook).where(col(Webhook.id) == delivery.webhook_id)
        if not db.is_sqlite:
            webhook_query = webhook_query.with_for_update()
        webhook = (await session.execute(webhook_query)).scalar_one_or_none()
        if webhook is not None:
            await _note_streak(session, webhook, result, now)
        return delivery.status


async def _note_streak(
    session: AsyncSession, webhook: Webhook, result: SendResult, now: datetime
) -> None:
    if result.succeeded:
        webhook.failing_since = None
        return
    if webhook.failing_since is None:
        webhook.failing_since = now
    if webhook.enabled and should_disable(now - webhook.failing_since):
        webhook.enabled = False
        webhook.disabled_reason = (
            f"every delivery attempt failed for 5 days, since {iso_utc(webhook.failing_since)}"
        )
        webhook.updated_at = now
        await record_event(
            session, webhook.project_id, WEBHOOK_DISABLED, webhook_object(webhook), now=now
        )
        log.warning(
            "webhook_disabled",
            webhook_id=webhook.id,
            project_id=webhook.project_id,
            failing_since=iso_utc(webhook.failing_since),
            last_error=result.error,
        )
