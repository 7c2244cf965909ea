"""The outbound message lifecycle in storage: enqueue, claim for a phone, and every transition
the phone or the clock causes. Each function is one transaction; refunds ride along."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import Device, Message, Sim
from app.domain import statuses
from app.services.credits import refund_message
from app.services.ids import new_id, utcnow


@dataclass(frozen=True)
class OutboundItem:
    """One priced, screened message ready to queue."""

    to: str
    body: str
    encoding: str
    segment_count: int
    price_atomic: int = 0
    tag: str | None = None


@dataclass(frozen=True)
class RateLimits:
    """Per-SIM send budget in message parts (segments), and the per-device in-flight cap."""

    parts_per_minute: int = 20
    parts_per_hour: int | None = None
    parts_per_day: int | None = None
    device_max_in_flight: int = 10

    @property
    def smallest_window(self) -> int:
        windows = [self.parts_per_minute, self.parts_per_hour, self.parts_per_day]
        return min(w for w in windows if w is not None)


async def enqueue(
    session: AsyncSession,
    project_id: str,
    items: Sequence[OutboundItem],
    *,
    request_id: str | None = None,
    sim_selector: str | None = None,
    ttl_s: int = 86_400,
    billing: str = "credits",
) -> list[Message]:
    """Queues messages in the caller's transaction. After commit, wake the hub."""
    now = utcnow()
    rows = [
        Message(
            id=new_id("msg"),
            project_id=project_id,
            request_id=request_id,
            direction="out",
            status=statuses.QUEUED,
            to_number=item.to,
            body=item.body,
            encoding=item.encoding,
            segment_count=item.segment_count,
            price_atomic=item.price_atomic,
            billing=billing,
            tag=item.tag,
            sim_selector=sim_selector,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
        )
        for item in items
    ]
    session.add_all(rows)
    await session.flush()
    return rows


def _digits(text: str | None) -> str:
    return re.sub(r"\D", "", text or "")


def sim_matches(selector: str, sim: Sim) -> bool:
    """A pinned message names its SIM by id, slot number, or phone number (E.164 or national)."""
    if selector == sim.id:
        return True
    if selector.isdigit() and len(selector) <= 2:
        return int(selector) == sim.slot
    wanted, number = _digits(selector), _digits(sim.number)
    if not wanted or not number:
        return False
    shorter, longer = sorted((wanted, number), key=len)
    return len(shorter) >= 6 and longer.endswith(shorter)


async def _parts_used(session: AsyncSession, sim_id: str, since: datetime) -> int:
    used = await session.execute(
        select(func.coalesce(func.sum(col(Message.segment_count)), 0)).where(
            col(Message.sim_id) == sim_id, col(Message.dispatched_at) >= since
        )
    )
    return int(used.scalar_one())


async def _sim_budget(session: AsyncSession, sim: Sim, limits: RateLimits, now: datetime) -> int:
    windows = [
        (limits.parts_per_minute, timedelta(minutes=1)),
        (limits.parts_per_hour, timedelta(hours=1)),
        (limits.parts_per_day, timedelta(days=1)),
    ]
    budget: int | None = None
    for limit, span in windows:
        if limit is None:
            continue
        left = limit - await _parts_used(session, sim.id, now - span)
        budget = left if budget is None else min(budget, left)
    return max(budget if budget is not None else 1_000_000, 0)


async def has_queued(db: Database, project_id: str) -> bool:
    """Whether the project has anything waiting: a cheap look before claiming per phone."""
    async with db.sessions() as session:
        found = await session.execute(
            select(col(Message.id))
            .where(col(Message.project_id) == project_id, col(Message.status) == statuses.QUEUED)
            .limit(1)
        )
        return found.first() is not None


async def claim_for_device(
    db: Database,
    project_id: str,
    device_id: str,
    sims: Sequence[Sim],
    limits: RateLimits,
    max_claim: int,
    rotation: int = 0,
) -> list[tuple[Message, Sim]]:
    """Moves up to `max_claim` queued messages of the project to `sending` on this device's
    SIMs: pinned messages only to their SIM, others round-robin over unlocked SIMs, within
    each SIM's parts budget and the device's in-flight cap. Concurrent claimers (other
    instances) skip rows already locked, so no message is claimed twice."""
    if not sims:
        return []
    now = utcnow()
    async with db.transaction() as session:
        in_flight = (
            await session.execute(
                select(func.count()).where(
                    col(Message.device_id) == device_id,
                    col(Message.status).in_([statuses.SENDING, statuses.ACCEPTED]),
                )
            )
        ).scalar_one()
        capacity = min(max_claim, limits.device_max_in_flight - in_flight)
        if capacity <= 0:
            return []
        budgets = {sim.id: await _sim_budget(session, sim, limits, now) for sim in sims}
        if not any(budgets.values()):
            return []
        candidates = (
            await session.execute(
                select(Message)
                .where(
                    col(Message.project_id) == project_id,
                    col(Message.status) == statuses.QUEUED,
                    col(Message.direction) == "out",
                    or_(col(Message.expires_at).is_(None), col(Message.expires_at) > now),
                )
                .order_by(col(Message.seq))
                .limit(max(capacity * 4, 20))
                .with_for_update(skip_locked=True)
            )
        ).scalars()
        order = list(sims[rotation % len(sims) :]) + list(sims[: rotation % len(sims)])
        claimed: list[tuple[Message, Sim]] = []
        turn = 0
        for message in candidates:
            if message.sim_selector:
                eligible = [s for s in order if sim_matches(message.sim_selector, s)]
            else:
                eligible = [s for s in order if not s.locked]
            # A message longer than the smallest window still goes out, alone in a fresh window.
            need = min(message.segment_count, limits.smallest_window)
            eligible = [s for s in eligible if budgets[s.id] >= need]
            if not eligible:
                continue
            sim = eligible[turn % len(eligible)]
            turn += 1
            budgets[sim.id] -= need
            message.status = statuses.SENDING
            message.device_id = device_id
            message.sim_id = sim.id
            message.dispatched_at = now
            message.attempts += 1
            claimed.append((message, sim))
            if len(claimed) >= capacity:
                break
    return claimed


@dataclass(frozen=True)
class Outcome:
    """What a phone report did: `stored` (a change was recorded or was already recorded) or
    not (the message is not this device's to report on), and any refund it caused."""

    stored: bool
    status: str | None = None
    refunded: bool = False


async def _device_message(
    session: AsyncSession, device_project: str, message_id: str
) -> Message | None:
    return (
        await session.execute(
            select(Message)
            .where(col(Message.id) == message_id, col(Message.project_id) == device_project)
            .with_for_update()
        )
    ).scalar_one_or_none()


async def _reported_message(
    session: AsyncSession, project_id: str, device_id: str, message_id: str
) -> Message | None:
    """The message a phone reports a result for: its own, or one that went back to the queue
    (or out to another phone, not yet accepted there) while this phone was already sending it.
    The radio has spoken, so the report wins and the message is this phone's from now on."""
    message = await _device_message(session, project_id, message_id)
    if message is None:
        return None
    if message.device_id != device_id:
        if message.status not in statuses.REASSIGNABLE_STATUSES:
            return None
        message.device_id = device_id
    return message


async def mark_accepted(db: Database, project_id: str, device_id: str, message_id: str) -> Outcome:
    """A phone asks to hold a command. The first phone to ask while the message is still queued
    or only offered (`sending`, to it or to another phone) gets it, and from then on no other
    phone may send it; asking again for one it holds is confirmed again. Anything else (held by
    another phone, or already finished) is refused, and the phone must not send it."""
    async with db.transaction() as session:
        message = await _device_message(session, project_id, message_id)
        if message is None:
            return Outcome(stored=False)
        if message.status in statuses.REASSIGNABLE_STATUSES:
            message.status = statuses.ACCEPTED
            message.device_id = device_id
            message.accepted_at = utcnow()
            return Outcome(stored=True, status=message.status)
        held_here = message.device_id == device_id and message.status == statuses.ACCEPTED
        return Outcome(stored=held_here, status=message.status)


async def record_send_result(
    db: Database,
    project_id: str,
    device_id: str,
    message_id: str,
    success: bool,
    error: str | None,
) -> Outcome:
    now = utcnow()
    async with db.transaction() as session:
        message = await _reported_message(session, project_id, device_id, message_id)
        if message is None:
            return Outcome(stored=False)
        if message.status in (statuses.QUEUED, statuses.SENDING, statuses.ACCEPTED):
            message.accepted_at = message.accepted_at or now
            if not success:
                return await _fail(session, message, error or "send_failed", now)
            message.status = statuses.SENT
            message.sent_at = now
        return Outcome(stored=True, status=message.status)


async def record_delivery(
    db: Database,
    project_id: str,
    device_id: str,
    message_id: str,
    delivered: bool,
    at: datetime | None,
) -> Outcome:
    now = utcnow()
    async with db.transaction() as session:
        message = await _reported_message(session, project_id, device_id, message_id)
        if message is None:
            return Outcome(stored=False)
        if message.status in (statuses.QUEUED, statuses.SENDING, statuses.ACCEPTED, statuses.SENT):
            message.sent_at = message.sent_at or now
            if not delivered:
                return await _fail(session, message, "not_delivered", now)
            message.status = statuses.DELIVERED
            message.delivered_at = at or now
        return Outcome(stored=True, status=message.status)


async def _fail(
    session: AsyncSession,
    message: Message,
    error_code: str,
    now: datetime,
    status: str = statuses.FAILED,
) -> Outcome:
    """A final unsuccessful outcome, refunded in the same transaction."""
    message.status = status
    message.failed_at = now
    message.error_code = error_code[:64]
    refunded = await refund_message(session, message)
    return Outcome(stored=True, status=status, refunded=refunded)


@dataclass(frozen=True)
class SweepResult:
    requeued_projects: set[str]
    expired: int
    no_result: int


async def sweep(
    db: Database,
    ack_timeout_s: float,
    result_timeout_s: float,
    *,
    instance_id: str | None = None,
    accepts_in_hand: frozenset[str] = frozenset(),
) -> SweepResult:
    """The clock's transitions: unaccepted commands past the ack timeout go back to the queue;
    queued messages past their TTL expire; accepted messages with no result past the bound
    fail with `no_result`. Expired and failed ones are refunded.

    An instance takes back the commands of phones connected to it (or to none), except those
    whose `accepted` it already holds (`accepts_in_hand`): they arrived in time. A phone on
    another instance is that instance's to time out; after three ack timeouts anyone does, in
    case that instance died without saying so."""
    now = utcnow()
    deadline = now - timedelta(seconds=ack_timeout_s)
    unaccepted = [col(Message.status) == statuses.SENDING, col(Message.dispatched_at) < deadline]
    if instance_id is not None:
        ours = select(col(Device.id)).where(
            or_(col(Device.instance_id) == instance_id, col(Device.instance_id).is_(None))
        )
        unaccepted.append(
            or_(
                col(Message.device_id).in_(ours),
                col(Message.dispatched_at) < now - timedelta(seconds=3 * ack_timeout_s),
            )
        )
    if accepts_in_hand:
        unaccepted.append(col(Message.id).not_in(accepts_in_hand))
    async with db.transaction() as session:
        requeued = await session.execute(
            update(Message)
            .where(*unaccepted)
            .values(status=statuses.QUEUED, device_id=None, sim_id=None)
            .returning(col(Message.project_id))
        )
        projects = set(requeued.scalars())
    expired = await _finish_where(
        db,
        and_(
            col(Message.status) == statuses.QUEUED,
            col(Message.direction) == "out",
            col(Message.expires_at) < now,
        ),
        statuses.EXPIRED,
        "expired",
    )
    no_result = await _finish_where(
        db,
        and_(
            col(Message.status) == statuses.ACCEPTED,
            col(Message.accepted_at) < now - timedelta(seconds=result_timeout_s),
        ),
        statuses.FAILED,
        "no_result",
    )
    return SweepResult(projects, expired, no_result)


async def _finish_where(
    db: Database, condition: ColumnElement[bool], status: str, error_code: str
) -> int:
    now = utcnow()
    async with db.transaction() as session:
        rows = list(
            (
                await session.execute(
                    select(Message).where(condition).limit(500).with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        for message in rows:
            await _fail(session, message, error_code, now, status)
    return len(rows)


async def cancel(db: Database, project_id: str, message_id: str) -> tuple[Message, bool] | None:
    """Cancels a message still queued (refunding it). Returns the message and whether this
    call canceled it; None if it is not this project's. Racing with dispatch or with another
    cancel is safe: the row lock decides which one wins."""
    async with db.transaction() as session:
        message = await _device_message(session, project_id, message_id)
        if message is None:
            return None
        if message.status != statuses.QUEUED:
            return message, False
        message.status = statuses.CANCELED
        message.failed_at = utcnow()
        await refund_message(session, message)
        return message, True
