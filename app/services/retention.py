"""The purge sweep: what Simwire stops keeping once it is old enough. Expired unused quotes
are deleted, replay data of old credit requests is dropped, old message bodies are blanked
(the row and its metadata stay), and inbound duplicate ids are kept only as long and as many
as a phone's retries need; events, webhook deliveries and their attempts are deleted after the
event retention (30 days by default); agent registrations nobody claimed go a day after their
claim expired, and failed sign-ins once they are past the lockout window. Every instance runs
it; on PostgreSQL each batch takes its rows with `FOR UPDATE SKIP LOCKED`, so instances sweeping
at once never wait on or undo each other.

Payment rows are never purged: each is the proof that its authorization nonce or transaction
hash was used (and the record of money received), so deleting one would let it pay twice."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import (
    HAS_BODY,
    HAS_DEDUPE_ID,
    REPLAYABLE_REQUEST,
    UNUSED_QUOTE,
    Event,
    Message,
    MessageRequest,
    Payment,
    StoredQuote,
    WebhookAttempt,
    WebhookDelivery,
)
from app.domain import statuses
from app.logs import get_logger
from app.services import accounts, agent_onboarding
from app.services.ids import utcnow
from app.settings import Settings

log = get_logger("simwire.retention")

# Rows per statement, and statements per kind per round: a backlog is worked off over a few
# rounds instead of in one long transaction.
BATCH = 1000
MAX_BATCHES = 20

# A body is needed until the message has left for good (sent or final) or was received.
_SETTLED = sorted(
    statuses.FINAL_STATUSES | {statuses.SENT, statuses.RECEIVED},
)


@dataclass(frozen=True)
class Retention:
    """How long each kind of data is kept, in seconds (0 or less: forever)."""

    quote_s: int  # past a quote's expiry
    idempotency_s: int
    message_body_s: int
    inbound_dedupe_s: int
    inbound_dedupe_per_device: int
    event_s: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(
            quote_s=settings.quote_retention_s,
            idempotency_s=settings.idempotency_retention_s,
            message_body_s=settings.message_body_retention_s,
            inbound_dedupe_s=settings.inbound_dedupe_window_s,
            inbound_dedupe_per_device=settings.inbound_dedupe_max_per_device,
            event_s=settings.event_retention_s,
        )


@dataclass
class PurgeResult:
    quotes_deleted: int = 0
    idempotency_cleared: int = 0
    bodies_blanked: int = 0
    dedupe_ids_cleared: int = 0
    per_device_capped: dict[str, int] = field(default_factory=dict)
    events_deleted: int = 0
    deliveries_deleted: int = 0
    attempts_deleted: int = 0
    agent_registrations_deleted: int = 0
    login_failures_deleted: int = 0

    @property
    def total(self) -> int:
        return (
            self.quotes_deleted
            + self.idempotency_cleared
            + self.bodies_blanked
            + self.dedupe_ids_cleared
            + self.events_deleted
            + self.deliveries_deleted
            + self.attempts_deleted
            + self.agent_registrations_deleted
            + self.login_failures_deleted
        )


async def purge(db: Database, retention: Retention, now: datetime) -> PurgeResult:
    """One round of the sweep as of `now`; returns how many rows each step changed."""
    result = PurgeResult()
    if retention.quote_s > 0:
        cutoff = now - timedelta(seconds=retention.quote_s)
        result.quotes_deleted = await _batches(db, lambda s: _delete_expired_quotes(s, cutoff))
    if retention.idempotency_s > 0:
        cutoff = now - timedelta(seconds=retention.idempotency_s)
        result.idempotency_cleared = await _batches(db, lambda s: _forget_replays(s, cutoff))
    if retention.message_body_s > 0:
        cutoff = now - timedelta(seconds=retention.message_body_s)
        result.bodies_blanked = await _batches(db, lambda s: _blank_bodies(s, cutoff))
    if retention.inbound_dedupe_s > 0:
        cutoff = now - timedelta(seconds=retention.inbound_dedupe_s)
        result.dedupe_ids_cleared = await _batches(db, lambda s: _forget_dedupe_ids(s, cutoff))
    if retention.inbound_dedupe_per_device > 0:
        result.per_device_capped = await _cap_dedupe_ids(db, retention.inbound_dedupe_per_device)
        result.dedupe_ids_cleared += sum(result.per_device_capped.values())
    if retention.event_s > 0:
        cutoff = now - timedelta(seconds=retention.event_s)
        result.events_deleted = await _batches(db, lambda s: _delete_old_events(s, cutoff))
        result.deliveries_deleted = await _batches(db, lambda s: _delete_old_deliveries(s, cutoff))
        result.attempts_deleted = await _batches(db, lambda s: _delete_old_attempts(s, cutoff))
    # Agent registrations nobody claimed (a day after their claim expired) and failed sign-ins
    # past the lockout window: kept no longer than their rules need them.
    result.agent_registrations_deleted = await agent_onboarding.purge_expired_registrations(db, now)
    result.login_failures_deleted = await accounts.purge_login_failures(db, now)
    return result


async def _batches(db: Database, step: Callable[[AsyncSession], Any]) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        async with db.transaction() as session:
            changed = await step(session)
        total += changed
        if changed < BATCH:
            break
    return total


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def _delete_expired_quotes(session: AsyncSession, cutoff: datetime) -> int:
    """Unused quotes expired before `cutoff` that no payment names (a released payment's
    quote is unused again; a reserved or settled one is used, and its payment names it)."""
    paid = exists().where(col(Payment.quote_id) == col(StoredQuote.id))
    doomed = (
        select(col(StoredQuote.seq))
        .where(sa.text(UNUSED_QUOTE), col(StoredQuote.expires_at) < cutoff, ~paid)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
        .correlate(None)  # its own FROM, not the statement's target table
    )
    result = await session.execute(
        delete(StoredQuote).where(col(StoredQuote.seq).in_(doomed.scalar_subquery()))
    )
    return _rowcount(result)


async def _forget_replays(session: AsyncSession, cutoff: datetime) -> int:
    """Credit requests older than `cutoff` lose their Idempotency-Key and stored answer: a
    repeat of that key is then a new request. (A paid x402 request's answer stays with it.)"""
    old = (
        select(col(MessageRequest.seq))
        .where(sa.text(REPLAYABLE_REQUEST), col(MessageRequest.created_at) < cutoff)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
        .correlate(None)  # its own FROM, not the statement's target table
    )
    result = await session.execute(
        update(MessageRequest)
        .where(col(MessageRequest.seq).in_(old.scalar_subquery()))
        .values(idempotency_key=None, request_sha256=None, response=sa.null())
    )
    return _rowcount(result)


async def _blank_bodies(session: AsyncSession, cutoff: datetime) -> int:
    old = (
        select(col(Message.seq))
        .where(
            sa.text(HAS_BODY),
            col(Message.created_at) < cutoff,
            col(Message.status).in_(_SETTLED),
        )
        .limit(BATCH)
        .with_for_update(skip_locked=True)
        .correlate(None)  # its own FROM, not the statement's target table
    )
    result = await session.execute(
        update(Message).where(col(Message.seq).in_(old.scalar_subquery())).values(body="")
    )
    return _rowcount(result)


async def _forget_dedupe_ids(session: AsyncSession, cutoff: datetime) -> int:
    """Inbound SMS stored before `cutoff` no longer hold their phone-side id: a phone retries
    an unacknowledged SMS when it reconnects, long before that."""
    old = (
        select(col(Message.seq))
        .where(sa.text(HAS_DEDUPE_ID), col(Message.created_at) < cutoff)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
        .correlate(None)  # its own FROM, not the statement's target table
    )
    result = await session.execute(
        update(Message)
        .where(col(Message.seq).in_(old.scalar_subquery()))
        .values(phone_message_id=None)
    )
    return _rowcount(result)


async def _delete_old_events(session: AsyncSession, cutoff: datetime) -> int:
    """Events older than `cutoff` that have been handed to their webhook deliveries."""
    old = (
        select(col(Event.seq))
        .where(col(Event.created_at) < cutoff, col(Event.routed).is_(True))
        .limit(BATCH)
        .with_for_update(skip_locked=True)
        .correlate(None)  # its own FROM, not the statement's target table
    )
    result = await session.execute(delete(Event).where(col(Event.seq).in_(old.scalar_subquery())))
    return _rowcount(result)


async def _delete_old_deliveries(session: AsyncSession, cutoff: datetime) -> int:
    """Finished deliveries (succeeded or failed) made before `cutoff`; a pending one stays
    until its retries are over."""
    old = (
        select(col(WebhookDelivery.seq))
        .where(
            col(WebhookDelivery.created_at) < cutoff,
            col(WebhookDelivery.status) != "pending",
        )
        .limit(BATCH)
        .with_for_update(skip_locked=True)
        .correlate(None)  # its own FROM, not the statement's target table
    )
    result = await session.execute(
        delete(WebhookDelivery).where(col(WebhookDelivery.seq).in_(old.scalar_subquery()))
    )
    return _rowcount(result)


async def _delete_old_attempts(session: AsyncSession, cutoff: datetime) -> int:
    old = (
        select(col(WebhookAttempt.seq))
        .where(col(WebhookAttempt.created_at) < cutoff)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
        .correlate(None)  # its own FROM, not the statement's target table
    )
    result = await session.execute(
        delete(WebhookAttempt).where(col(WebhookAttempt.seq).in_(old.scalar_subquery()))
    )
    return _rowcount(result)


async def _cap_dedupe_ids(db: Database, keep: int) -> dict[str, int]:
    """Each device keeps the ids of at most its `keep` newest inbound SMS."""
    async with db.sessions() as session:
        crowded = list(
            (
                await session.execute(
                    select(col(Message.device_id))
                    .where(sa.text(HAS_DEDUPE_ID))
                    .group_by(col(Message.device_id))
                    .having(func.count() > keep)
                )
            ).scalars()
        )
    capped: dict[str, int] = {}
    for device_id in crowded:
        if device_id is None:
            continue
        capped[device_id] = await _batches(
            db, functools.partial(_cap_device, device_id=device_id, keep=keep)
        )
    return capped


async def _cap_device(session: AsyncSession, device_id: str, keep: int) -> int:
    newest_kept = (
        select(col(Message.seq))
        .where(sa.text(HAS_DEDUPE_ID), col(Message.device_id) == device_id)
        .order_by(col(Message.seq).desc())
        .offset(keep - 1)
        .limit(1)
        .correlate(None)
        .scalar_subquery()
    )
    older = (
        select(col(Message.seq))
        .where(
            sa.text(HAS_DEDUPE_ID),
            col(Message.device_id) == device_id,
            col(Message.seq) < newest_kept,
        )
        .limit(BATCH)
        .with_for_update(skip_locked=True)
        .correlate(None)  # its own FROM, not the statement's target table
    )
    result = await session.execute(
        update(Message)
        .where(col(Message.seq).in_(older.scalar_subquery()))
        .values(phone_message_id=None)
    )
    return _rowcount(result)


class PurgeSweep:
    """Runs `purge` every `SIMWIRE_PURGE_INTERVAL_S` in this process, from the app lifespan."""

    def __init__(
        self, db: Database, settings: Settings, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self.interval_s = settings.purge_interval_s
        self.retention = Retention.from_settings(settings)
        self.clock = clock
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.create_task(self._loop(), name="purge-sweep")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                result = await purge(self.db, self.retention, self.clock())
            except Exception as exc:  # the next round tries again
                log.error("purge_failed", error=repr(exc))
                continue
            self.rounds += 1
            if result.total:
                log.info(
                    "purged",
                    quotes=result.quotes_deleted,
                    idempotency=result.idempotency_cleared,
                    bodies=result.bodies_blanked,
                    dedupe_ids=result.dedupe_ids_cleared,
                    events=result.events_deleted,
                    deliveries=result.deliveries_deleted,
                    attempts=result.attempts_deleted,
                )
