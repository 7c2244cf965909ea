"""The delivery worker, one in every server process: routes new events to their endpoints
(app/webhooks/fanout.py) and claims due deliveries in one transaction (a lease on each, so no
other instance sends it meanwhile; `FOR UPDATE SKIP LOCKED` on PostgreSQL), sends them with a
cap on concurrent requests per endpoint so a slow endpoint never holds up the others, and
records the attempts that finished together in one transaction each round (the attempt, the
delivery's outcome or next try, the endpoint's failing streak).

At least once: a delivery is done only when its success is committed; a process that dies
mid-send leaves the lease to lapse and the delivery is sent again. A claimed delivery waiting
for its endpoint's turn is sent only while its lease outlasts an attempt, else left to lapse."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random as _random
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import msgspec
import sqlalchemy as sa
from sqlalchemy import Row, Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from app.db.engine import Database
from app.db.models import UNROUTED_EVENT, Event, Webhook, WebhookAttempt, WebhookDelivery
from app.domain.webhook_retries import retry_delay_s, should_disable
from app.faults import crash_point
from app.logs import get_logger
from app.services.events import record_event
from app.services.ids import iso_utc, utcnow
from app.services.webhooks import signing_secrets, webhook_object
from app.settings import Settings
from app.webhooks import wakeup
from app.webhooks.client import SendResult, WebhookClient
from app.webhooks.fanout import BATCH, FAILED, PENDING, SUCCEEDED, route_in
from app.webhooks.signing import signature_headers

log = get_logger("simwire.webhooks")

_DELIVERIES = WebhookDelivery.metadata.tables["webhook_deliveries"]
_ATTEMPTS = WebhookAttempt.metadata.tables["webhook_attempts"]
_WEBHOOKS = Webhook.metadata.tables["webhooks"]
_EVENTS = Event.metadata.tables["events"]
# The condition verbatim, so SQLite reads the partial index, not the whole table.
_ANY_UNROUTED = select(_EVENTS.c.seq).where(sa.text(UNROUTED_EVENT)).limit(1)

MAX_IN_FLIGHT_PER_ENDPOINT = 8
"""Requests at once to one endpoint from one process."""
MAX_HELD_PER_ENDPOINT = 64
"""Deliveries to one endpoint one process holds at once (sending, waiting for a turn, or being
recorded): the rest of a backlog stays unclaimed, for other instances."""
MAX_HELD = 1024
"""Deliveries one process holds at once, all endpoints together."""
CLAIM_CANDIDATES = 4 * MAX_HELD_PER_ENDPOINT
"""Due deliveries one claim reads at most."""
STOP_GRACE_S = 2.0
LEASE_MARGIN_S = 1.0
WEBHOOK_DISABLED = "webhook.disabled"


def _claimable(now: Any) -> Select[tuple[str, str, str]]:
    """Pending deliveries no instance holds a lease on: (id, webhook id, event id). `now` is a
    time or a bound parameter."""
    return select(_DELIVERIES.c.id, _DELIVERIES.c.webhook_id, _DELIVERIES.c.event_id).where(
        _DELIVERIES.c.status == PENDING,
        or_(_DELIVERIES.c.leased_until.is_(None), _DELIVERIES.c.leased_until < now),
    )


def _due_deliveries(now: Any, full: Sequence[str]) -> Select[tuple[str, str, str]]:
    """Claimable deliveries that are due, to enabled endpoints not in `full`."""
    query = (
        _claimable(now)
        .join(_WEBHOOKS, _WEBHOOKS.c.id == _DELIVERIES.c.webhook_id)
        .where(_DELIVERIES.c.next_attempt_at <= now, _WEBHOOKS.c.enabled == sa.true())
    )
    if full:
        query = query.where(_DELIVERIES.c.webhook_id.not_in(full))
    return query


def _any(query: Select[Any]) -> Select[Any]:
    return query.with_only_columns(_DELIVERIES.c.seq).limit(1)


def _candidates(limit: int, locking: bool, full: tuple[str, ...]) -> Select[tuple[str, str, str]]:
    """The first `limit` due deliveries to endpoints not in `full` (`now` a bound parameter),
    soonest first; with `locking` (PostgreSQL) those no other instance is claiming."""
    query = _due_deliveries(sa.bindparam("now"), full)
    query = query.order_by(_DELIVERIES.c.next_attempt_at).limit(limit)
    return query.with_for_update(skip_locked=True, of=_DELIVERIES) if locking else query


@functools.cache
def _candidates_to_any(limit: int, locking: bool) -> Select[tuple[str, str, str]]:
    """`_candidates` when no endpoint is full, built once for each `limit`: building it anew
    each round was a third of a round's cost."""
    return _candidates(limit, locking, ())


def _any_work(due: Select[Any]) -> Select[tuple[bool]]:
    """Whether an event waits to be routed or a delivery of `due` waits: one statement."""
    return select(or_(_ANY_UNROUTED.exists(), due.exists()))


# The idle look (every poll interval) when no endpoint is full, built once.
_ANY_WORK = _any_work(_any(_due_deliveries(sa.bindparam("now"), ())))

Clock = Callable[[], datetime]


class EventRow(Protocol):
    """What a delivery's body is made of: an Event, or a row of its columns."""

    id: str
    type: str
    created_at: datetime
    project_id: str
    data: dict[str, Any]


def event_body(event: EventRow) -> bytes:
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
    delivery_id: str
    webhook: Webhook
    event: EventRow | None
    leased_until: datetime


class _Paced:
    """Lets one thing start at most once per `interval_s`."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last = 0.0

    async def wait(self) -> None:
        wait_s = self._last + self.interval_s - time.monotonic()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        self._last = time.monotonic()


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
        self._waiting: dict[str, deque[_Claimed]] = defaultdict(deque)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._held: dict[str, int] = defaultdict(int)
        self._finished: list[tuple[_Claimed, SendResult]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._recorder: asyncio.Task[None] | None = None
        self._bell = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # Under load commits ring many times a second: one round (and one recording) per
        # `SIMWIRE_WEBHOOK_BATCH_S` takes everything that came meanwhile in one write, instead
        # of contending with the send path for the write lock once per ring.
        self._rounds = _Paced(settings.webhook_batch_s)
        self._recordings = _Paced(settings.webhook_batch_s)

    # Lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        wakeup.register(self._bell)
        self._task = asyncio.create_task(self._loop(), name="webhook-delivery")

    async def stop(self) -> None:
        wakeup.unregister(self._bell)
        if self._task is not None:
            # The loop ends between rounds, not inside a transaction.
            self._stopping = True
            self._bell.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE_S)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        # Claimed deliveries not yet sent are left to their leases; sends under way get a
        # moment to finish and be recorded, and any cut short is sent again later.
        self._waiting.clear()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_S)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.aclose()

    def wake(self) -> None:
        """Look for work now (a delivery was made due by this process)."""
        self._bell.set()

    async def drain(self) -> None:
        """Waits until every delivery this worker holds has been sent and recorded."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    # The loop --------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            rung = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bell.wait(), self.settings.webhook_poll_s)
                rung = True
            await self._rounds.wait()
            self._bell.clear()
            if self._stopping:
                return
            try:
                await self.run_once(look_first=not rung)
            except Exception as exc:  # the next round tries again
                log.error("webhook_round_failed", error=repr(exc))

    async def run_once(self, look_first: bool = True) -> int:
        """One round: routes waiting events and claims as many due deliveries as this process
        has room for, in one transaction, and starts sending them; how many it claimed. With
        `look_first` (an idle poll) a read-only look comes first, so a round with nothing to do
        takes no write lock (SQLite) and locks no rows."""
        now = self.clock()
        if look_first and not await self._look(now):
            return 0
        room = MAX_HELD - sum(self._held.values())
        claimed, routed = await self._route_and_claim(now, room)
        if routed == BATCH:
            self._bell.set()  # more events wait
        for one in claimed:
            self._held[one.webhook.id] += 1
            self._waiting[one.webhook.id].append(one)
        self._pump()
        return len(claimed)

    async def _look(self, now: datetime) -> bool:
        """Whether events wait to be routed or a delivery this process may take is due."""
        full = self._full_endpoints()
        query = (
            _ANY_WORK if not full else _any_work(_any(_due_deliveries(sa.bindparam("now"), full)))
        )
        return await self.db.run(
            lambda conn: bool(conn.execute(query, {"now": now}).scalar()), read_only=True
        )

    async def deliver_now(self, delivery_id: str) -> None:
        """Sends one delivery at once and waits until its attempt is recorded (the test route);
        nothing when it is not pending or another send of it is under way."""
        now = self.clock()
        query = _claimable(now).where(_DELIVERIES.c.id == delivery_id)
        if not self.db.is_sqlite:
            query = query.with_for_update(skip_locked=True)  # another instance may be claiming it
        async with self.db.transaction() as session:
            picked = list(await session.execute(query))
            claimed = await session.run_sync(self._lease, now, picked)
        for one in claimed:
            result = await self._send(one)
            await record_attempts(self.db, [(one.delivery_id, result)], self.clock(), self.random)

    # Claiming --------------------------------------------------------------------------------

    def _full_endpoints(self) -> list[str]:
        """The endpoints this process already holds its most deliveries for."""
        return [wid for wid, held in self._held.items() if held >= MAX_HELD_PER_ENDPOINT]

    async def _route_and_claim(self, now: datetime, room: int) -> tuple[list[_Claimed], int]:
        return await self.db.run(
            lambda conn: self._route_and_claim_in(Session(bind=conn), now, room)
        )

    def _route_and_claim_in(
        self, session: Session, now: datetime, room: int
    ) -> tuple[list[_Claimed], int]:
        routed = route_in(session, self.db.is_sqlite, now)
        if room <= 0:
            return [], routed
        # A few endpoints' worth of candidates: a backlog of one endpoint beyond what it may
        # hold here is not read (and locked) every round.
        limit = min(room, CLAIM_CANDIDATES)
        full = tuple(self._full_endpoints())
        locking = not self.db.is_sqlite
        query = _candidates(limit, locking, full) if full else _candidates_to_any(limit, locking)
        held = dict(self._held)
        picked: list[Row[tuple[str, str, str]]] = []
        for row in session.connection().execute(query, {"now": now}):
            if held.get(row.webhook_id, 0) < MAX_HELD_PER_ENDPOINT:
                held[row.webhook_id] = held.get(row.webhook_id, 0) + 1
                picked.append(row)
        return self._lease(session, now, picked), routed

    def _lease(
        self, session: Session, now: datetime, picked: Sequence[Row[tuple[str, str, str]]]
    ) -> list[_Claimed]:
        """Leases `picked` (in the caller's synchronous transaction); each with its endpoint
        and event."""
        if not picked:
            return []
        lease = now + timedelta(seconds=self.settings.webhook_lease_s)
        session.execute(
            sa.update(_DELIVERIES)
            .where(_DELIVERIES.c.id.in_([row.id for row in picked]))
            .values(leased_until=lease)
        )
        webhook_ids = {row.webhook_id for row in picked}
        webhooks = {
            webhook.id: webhook
            for webhook in session.execute(
                select(Webhook).where(col(Webhook.id).in_(webhook_ids))
            ).scalars()
        }
        events = {
            event.id: event
            for event in session.execute(
                select(
                    _EVENTS.c.id,
                    _EVENTS.c.type,
                    _EVENTS.c.created_at,
                    _EVENTS.c.project_id,
                    _EVENTS.c.data,
                ).where(_EVENTS.c.id.in_({row.event_id for row in picked}))
            )
        }
        return [
            _Claimed(row.id, webhooks[row.webhook_id], events.get(row.event_id), lease)
            for row in picked
            if row.webhook_id in webhooks
        ]

    # Sending ---------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Starts a send for each waiting delivery whose endpoint has a free slot. One whose
        lease would lapse before an attempt could end is dropped here (its lease lapses and it
        is claimed again), so no two instances ever send it at once."""
        timeout_s, lease_s = self.settings.webhook_timeout_s, self.settings.webhook_lease_s
        margin_s = min(LEASE_MARGIN_S, (lease_s - timeout_s) / 2)
        latest_start = timedelta(seconds=timeout_s + margin_s)
        for webhook_id, waiting in list(self._waiting.items()):
            while waiting and self._in_flight[webhook_id] < MAX_IN_FLIGHT_PER_ENDPOINT:
                claimed = waiting.popleft()
                if claimed.leased_until - self.clock() < latest_start:
                    self._let_go(webhook_id)
                    continue
                self._in_flight[webhook_id] += 1
                self._track(asyncio.create_task(self._deliver(claimed), name="webhook-send"))
            if not waiting:
                del self._waiting[webhook_id]

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _let_go(self, webhook_id: str) -> None:
        self._held[webhook_id] -= 1
        if self._held[webhook_id] <= 0:
            del self._held[webhook_id]

    async def _deliver(self, claimed: _Claimed) -> None:
        webhook_id = claimed.webhook.id
        try:
            crash_point("webhook_before_send")
            result = await self._send(claimed)
        except Exception as exc:  # a fault of ours: a failed attempt, retried like any other
            result = SendResult(None, f"not sent: {type(exc).__name__}", 0)
        finally:
            self._in_flight[webhook_id] -= 1
            if self._in_flight[webhook_id] <= 0:
                del self._in_flight[webhook_id]
        self._finished.append((claimed, result))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_finished(), name="webhook-record")
            self._track(self._recorder)
        self._pump()

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

    async def _record_finished(self) -> None:
        """Records every finished attempt, those that finish meanwhile in the next
        transaction: one commit per round, however many sends ended."""
        while self._finished:
            await self._recordings.wait()
            batch, self._finished = self._finished, []
            try:
                await record_attempts(
                    self.db,
                    [(claimed.delivery_id, result) for claimed, result in batch],
                    self.clock(),
                    self.random,
                )
            except Exception as exc:  # their leases lapse and they are sent again
                log.error("webhook_attempts_not_recorded", count=len(batch), error=repr(exc))
            finally:
                for claimed, _result in batch:
                    self._let_go(claimed.webhook.id)
            self._bell.set()  # room for more


async def record_attempts(
    db: Database,
    outcomes: list[tuple[str, SendResult]],
    now: datetime,
    random: Callable[[], float] = _random.random,
) -> None:
    """In one transaction, for each (delivery id, result) in order: the attempt row, the
    delivery's outcome (succeeded; failed once the retry schedule is used up; else pending with
    its next try, jittered), and its endpoint's failing streak, which disables the endpoint
    (with a `webhook.disabled` event) once every attempt has failed for 5 days. A delivery no
    longer pending (deleted, or already settled by another instance) is left alone. One
    statement writes every delivery's outcome and one every attempt."""
    ids = [delivery_id for delivery_id, _result in outcomes]
    async with db.transaction() as session:
        query = select(_DELIVERIES.c.id, _DELIVERIES.c.webhook_id, _DELIVERIES.c.status)
        query = query.add_columns(_DELIVERIES.c.attempts).where(_DELIVERIES.c.id.in_(ids))
        if not db.is_sqlite:
            query = query.order_by(_DELIVERIES.c.seq).with_for_update()
        found = {row.id: row for row in await session.execute(query)}
        webhook_query = select(Webhook).where(
            col(Webhook.id).in_({row.webhook_id for row in found.values()})
        )
        if not db.is_sqlite:
            webhook_query = webhook_query.order_by(col(Webhook.seq)).with_for_update()
        webhooks = {row.id: row for row in (await session.execute(webhook_query)).scalars()}
        status = {delivery_id: row.status for delivery_id, row in found.items()}
        attempts = {delivery_id: row.attempts for delivery_id, row in found.items()}
        settled: list[dict[str, object]] = []
        tries: list[dict[str, object]] = []
        for delivery_id, result in outcomes:
            if status.get(delivery_id) != PENDING:
                continue
            number = attempts[delivery_id] + 1
            next_at: datetime | None = None
            if result.succeeded:
                outcome = SUCCEEDED
            else:
                delay_s = retry_delay_s(number, random)
                outcome = FAILED if delay_s is None else PENDING
                if delay_s is not None:
                    next_at = now + timedelta(seconds=delay_s)
            status[delivery_id], attempts[delivery_id] = outcome, number
            settled.append(
                {
                    "b_id": delivery_id,
                    "b_status": outcome,
                    "b_attempts": number,
                    "b_next": next_at,
                    "b_code": result.status_code,
                    "b_error": result.error,
                    "b_latency": result.latency_ms,
                    "b_completed": None if outcome == PENDING else now,
                    "b_now": now,
                }
            )
            tries.append(
                {
                    "delivery_id": delivery_id,
                    "number": number,
                    "status_code": result.status_code,
                    "latency_ms": result.latency_ms,
                    "error": result.error,
                    "next_retry_at": next_at,
                    "created_at": now,
                }
            )
            webhook = webhooks.get(found[delivery_id].webhook_id)
            if webhook is not None:
                await _note_streak(session, webhook, result, now)
        if settled:
            await session.execute(_SETTLE, settled)
            await session.execute(_ATTEMPTS.insert(), tries)


_SETTLE = (
    sa.update(_DELIVERIES)
    .where(_DELIVERIES.c.id == sa.bindparam("b_id"))
    .values(
        status=sa.bindparam("b_status"),
        attempts=sa.bindparam("b_attempts"),
        next_attempt_at=sa.bindparam("b_next"),
        leased_until=None,
        last_status_code=sa.bindparam("b_code"),
        last_error=sa.bindparam("b_error"),
        last_latency_ms=sa.bindparam("b_latency"),
        updated_at=sa.bindparam("b_now"),
        completed_at=sa.bindparam("b_completed"),
    )
)


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
