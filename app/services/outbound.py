"""The outbound message lifecycle in storage: enqueue, claim for a phone, and every transition
the phone or the clock causes. Each function is one transaction; refunds and events ride along."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection, Update, and_, bindparam, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import bulk
from app.db.engine import Database
from app.db.models import LIVE_MESSAGE, Device, Message, Sim
from app.domain import statuses
from app.services import outbox
from app.services.credits import refund_message
from app.services.ids import new_id, utcnow
from app.services.views import MessageRecord

# The tables themselves, for executemany statements (Core, not the ORM's bulk paths).
_MESSAGES = Message.metadata.tables["messages"]
_SIMS = Sim.metadata.tables["sims"]


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
    """Queues messages in the caller's transaction, with their `message.queued` events.
    After commit, wake the hub."""
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
    await outbox.insert_events(
        session, [outbox.message_event(MessageRecord(row), now) for row in rows]
    )
    return rows


def _digits(text: str | None) -> str:
    return re.sub(r"\D", "", text or "")


class SimLike(Protocol):
    """What choosing a SIM reads of one: a stored `Sim` or the hub's live copy."""

    @property
    def id(self) -> str: ...
    @property
    def slot(self) -> int: ...
    @property
    def number(self) -> str | None: ...


def sim_matches(selector: str, sim: SimLike) -> bool:
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


async def has_queued(db: Database, project_id: str) -> bool:
    """Whether the project has anything waiting: a cheap look before a claim pass."""
    found = await db.run(
        lambda conn: conn.execute(_ANY_QUEUED, {"project_id": project_id}).first(),
        read_only=True,
    )
    return found is not None


_ANY_QUEUED = (
    select(_MESSAGES.c.id)
    .where(_MESSAGES.c.project_id == bindparam("project_id"), _MESSAGES.c.status == statuses.QUEUED)
    .limit(1)
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A queued message as a claim pass sees it."""

    id: str
    to_number: str
    body: str
    segment_count: int
    sim_selector: str | None
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    """A candidate given to one device's SIM."""

    message: Candidate
    device_id: str
    sim_id: str


# Chooses, among the candidates (oldest first), the ones to give out now and to whom; it is also
# told which of the project's SIMs are locked now. Pure: it must not change any state of its
# own, since the claim may still fail and be rolled back.
ClaimPlanner = Callable[[list[Candidate], frozenset[str]], list[Claim]]


@dataclass(frozen=True, slots=True)
class ClaimPass:
    """What one claim pass gave out; whether it read every claimable message there was (fewer
    than it asked for), so that a pass right after it would find only the ones this one could
    not give out; and how many of those it read it could not give out."""

    claims: list[Claim]
    read_all: bool
    left: int = 0


async def claim_queued(
    db: Database, project_id: str, max_candidates: int, plan: ClaimPlanner
) -> ClaimPass:
    """One claim pass for all of the caller's phones of a project: reads up to
    `max_candidates` queued, unexpired messages (oldest first; on PostgreSQL `FOR UPDATE SKIP
    LOCKED`, so concurrent claimers on other instances never take the same row), lets `plan`
    give them to SIMs, and moves the planned ones to `sending` in the same transaction. With no
    room (`max_candidates` <= 0) it gives out nothing without touching the database."""
    if max_candidates <= 0:
        return ClaimPass([], read_all=False)
    now = utcnow()
    return await db.run(lambda conn: _claim(conn, project_id, max_candidates, plan, now))


def _claim(
    conn: Connection, project_id: str, max_candidates: int, plan: ClaimPlanner, now: datetime
) -> ClaimPass:
    rows = conn.execute(
        _CANDIDATES, {"project_id": project_id, "now": now, "max_candidates": max_candidates}
    ).all()
    read_all = len(rows) < max_candidates
    if not rows:
        return ClaimPass([], read_all)
    locked = frozenset(conn.execute(_LOCKED_SIMS, {"project_id": project_id}).scalars())
    claims = plan([Candidate(*row) for row in rows], locked)
    if claims:
        bulk.execute_many(
            conn,
            _CLAIM,
            [
                {
                    "message_id": claim.message.id,
                    "claim_device": claim.device_id,
                    "claim_sim": claim.sim_id,
                    "claimed_at": now,
                }
                for claim in claims
            ],
        )
    return ClaimPass(claims, read_all, left=len(rows) - len(claims))


# A claim pass's statements, built once (building one costs about as much as running it).
_CANDIDATES = (
    select(
        _MESSAGES.c.id,
        _MESSAGES.c.to_number,
        _MESSAGES.c.body,
        _MESSAGES.c.segment_count,
        _MESSAGES.c.sim_selector,
        _MESSAGES.c.expires_at,
    )
    .where(
        _MESSAGES.c.project_id == bindparam("project_id"),
        _MESSAGES.c.status == statuses.QUEUED,
        _MESSAGES.c.direction == "out",
        or_(_MESSAGES.c.expires_at.is_(None), _MESSAGES.c.expires_at > bindparam("now")),
    )
    .order_by(_MESSAGES.c.seq)
    .limit(bindparam("max_candidates"))
    .with_for_update(skip_locked=True)
)
_LOCKED_SIMS = select(_SIMS.c.id).where(
    _SIMS.c.project_id == bindparam("project_id"), _SIMS.c.locked.is_(True)
)
_CLAIM = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("message_id"))
    .values(
        status=statuses.SENDING,
        device_id=bindparam("claim_device"),
        sim_id=bindparam("claim_sim"),
        dispatched_at=bindparam("claimed_at"),
        attempts=_MESSAGES.c.attempts + 1,
    )
)


@dataclass(frozen=True, slots=True)
class Dispatched:
    """A message given to a SIM: what its parts count against that SIM's windows."""

    message_id: str
    sim_id: str
    dispatched_at: datetime
    segment_count: int


_IN_FLIGHT_OF_DEVICE = select(_MESSAGES.c.id, _MESSAGES.c.sim_id).where(
    _MESSAGES.c.device_id == bindparam("device_id"),
    _MESSAGES.c.status.in_([statuses.SENDING, statuses.ACCEPTED]),
)
_DISPATCHED_SINCE = select(
    _MESSAGES.c.id, _MESSAGES.c.sim_id, _MESSAGES.c.dispatched_at, _MESSAGES.c.segment_count
).where(
    _MESSAGES.c.sim_id.in_(bindparam("sim_ids", expanding=True)),
    _MESSAGES.c.dispatched_at >= bindparam("since"),
)


async def live_state(
    session: AsyncSession, device_id: str, sim_ids: Sequence[str], since: datetime
) -> tuple[dict[str, str | None], list[Dispatched]]:
    """What a connecting phone's instance rebuilds its live state from: the device's messages in
    flight (`sending` or `accepted`: message id → SIM id), and every message given to one of
    its SIMs since `since` (a message sent back to the queue has no SIM and counts no more)."""
    in_flight = {
        message_id: sim_id
        for message_id, sim_id in await session.execute(
            _IN_FLIGHT_OF_DEVICE, {"device_id": device_id}
        )
    }
    dispatched: list[Dispatched] = []
    if sim_ids:
        rows = await session.execute(_DISPATCHED_SINCE, {"sim_ids": list(sim_ids), "since": since})
        dispatched = [Dispatched(*row) for row in rows]
    return in_flight, dispatched


@dataclass(frozen=True)
class Outcome:
    """What a phone report did: `stored` (a change was recorded or was already recorded) or
    not (the message is not this device's to report on), and any refund it caused.
    `taken_from` names the device the message was offered to before this report took it."""

    stored: bool
    status: str | None = None
    refunded: bool = False
    taken_from: str | None = None


ACCEPTED_REPORT = "accepted"
SEND_RESULT_REPORT = "send_result"
DELIVERY_REPORT = "delivery_report"


@dataclass(frozen=True, slots=True)
class Report:
    """One phone report about an outbound message: `accepted`, `send_result` (with `success`,
    `error`) or `delivery_report` (with `success` = delivered, `at`)."""

    kind: str
    project_id: str
    device_id: str
    message_id: str
    success: bool = True
    error: str | None = None
    at: datetime | None = None


# The statuses a report can bring a message to that callers are told about (an event each).
_REPORTED_STATUSES = frozenset({statuses.SENT, statuses.DELIVERED, statuses.FAILED})


@dataclass(slots=True)
class _Row:
    """A message's state while a batch of reports is applied to it, what changed, and the
    message as it stood each time it reached a status callers are told about."""

    project_id: str
    device_id: str | None
    status: str
    accepted_at: datetime | None
    sent_at: datetime | None
    stored: dict[str, Any]
    changes: dict[str, object] = field(default_factory=dict)
    reached: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, row: Any) -> _Row:
        return cls(
            row["project_id"],
            row["device_id"],
            row["status"],
            row["accepted_at"],
            row["sent_at"],
            dict(row),
        )

    def set(self, **values: object) -> None:
        self.changes.update(values)
        for name, value in values.items():
            if hasattr(self, name):
                setattr(self, name, value)
        if values.get("status") in _REPORTED_STATUSES:
            self.reached.append({**self.stored, **self.changes})


_REPORT_COLUMNS = (
    "status",
    "device_id",
    "accepted_at",
    "sent_at",
    "delivered_at",
    "failed_at",
    "error_code",
)


async def apply_reports(session: AsyncSession, reports: Sequence[Report]) -> list[Outcome]:
    """Applies phone reports in order, in the caller's transaction: one read of every message
    they name (row-locked on PostgreSQL) and one batched write of the changes. Each report
    follows the rules of `mark_accepted`, `record_send_result` and `record_delivery`; a later
    report about the same message sees what an earlier one did. Failures are refunded.

    Each message that becomes `sent`, `delivered` or `failed` gets its event, with the message
    as it stood then (a batch that carries both the send result and the delivery report of a
    message writes `message.sent` and then `message.delivered`), all written with one insert;
    the requests whose last messages this finished get `request.completed`."""
    if not reports:
        return []
    now = utcnow()
    ids = sorted({report.message_id for report in reports})
    found = await session.execute(_REPORTED_MESSAGES, {"ids": ids})
    rows: dict[str, _Row] = {}
    sim_numbers: dict[str, str | None] = {}
    for found_row in found:
        values = dict(found_row._mapping)
        sim_numbers[values["id"]] = values.pop("sim_number")
        rows[values["id"]] = _Row.of(values)
    outcomes: list[Outcome] = []
    failing: list[int] = []  # the reports that failed their message (to be refunded)
    reached: list[MessageRecord] = []  # the messages as each event reports them, in order
    for report in reports:
        row = rows.get(report.message_id)
        if row is None or row.project_id != report.project_id:
            outcomes.append(Outcome(stored=False))
            continue
        before, known = row.status, len(row.reached)
        outcome = _apply(row, report, now)
        if before != statuses.FAILED and row.status == statuses.FAILED:
            failing.append(len(outcomes))
        outcomes.append(outcome)
        for state in row.reached[known:]:
            reached.append(
                outbox.record_of({**state, "sim_number": sim_numbers.get(report.message_id)})
            )
    changed = [(message_id, row) for message_id, row in rows.items() if row.changes]
    # One statement per shape of change, each run once over all its messages.
    by_shape: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for message_id, row in changed:
        shape = tuple(name for name in _REPORT_COLUMNS if name in row.changes)
        params = {f"new_{name}": row.changes[name] for name in shape}
        by_shape.setdefault(shape, []).append({"message_id": message_id, **params})

    def write_changes(conn: Connection) -> None:
        for shape, params_list in by_shape.items():
            bulk.execute_many(conn, _report_update(shape), params_list)

    if by_shape:
        await bulk.on_connection(session, write_changes)
    if failing:
        wanted = sorted({reports[index].message_id for index in failing})
        messages = (
            await session.execute(select(Message).where(col(Message.id).in_(wanted)))
        ).scalars()
        refunded = {message.id for message in messages if await refund_message(session, message)}
        for index in failing:
            if reports[index].message_id in refunded:
                o = outcomes[index]
                outcomes[index] = Outcome(o.stored, o.status, True, o.taken_from)
    if reached:
        await outbox.insert_events(session, [outbox.message_event(r, now) for r in reached])
        await outbox.completed_requests(
            session,
            [r.message.request_id for r in reached if r.message.status in statuses.FINAL_STATUSES],
            now,
        )
    return outcomes


# Built once, like the claim statements: a report batch is the hub's hottest write.
_REPORTED_MESSAGES = (
    outbox.MESSAGES_WITH_SIMS.where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_MESSAGES.c.id)
    .with_for_update(of=_MESSAGES)
)


@functools.cache
def _report_update(shape: tuple[str, ...]) -> Update:
    """The UPDATE writing the columns `shape` names (a few shapes recur: accepted, sent, …)."""
    return (
        update(_MESSAGES)
        .where(_MESSAGES.c.id == bindparam("message_id"))
        .values({name: bindparam(f"new_{name}") for name in shape})
    )


def _apply(row: _Row, report: Report, now: datetime) -> Outcome:
    taken_from = None
    if report.kind == ACCEPTED_REPORT:
        if row.status in statuses.REASSIGNABLE_STATUSES:
            if row.device_id != report.device_id:
                taken_from = row.device_id
            row.set(status=statuses.ACCEPTED, device_id=report.device_id, accepted_at=now)
            return Outcome(stored=True, status=row.status, taken_from=taken_from)
        held_here = row.device_id == report.device_id and row.status == statuses.ACCEPTED
        return Outcome(stored=held_here, status=row.status)
    # A result for a message that went back to the queue (or out to another phone, not yet
    # accepted there) while this phone was already sending it: the radio has spoken, so the
    # report wins and the message is this phone's from now on.
    if row.device_id != report.device_id:
        if row.status not in statuses.REASSIGNABLE_STATUSES:
            return Outcome(stored=False)
        taken_from = row.device_id
        row.set(device_id=report.device_id)
    if report.kind == SEND_RESULT_REPORT:
        if row.status in (statuses.QUEUED, statuses.SENDING, statuses.ACCEPTED):
            if row.accepted_at is None:
                row.set(accepted_at=now)
            if not report.success:
                return _failing(row, report.error or "send_failed", now, taken_from)
            row.set(status=statuses.SENT, sent_at=now)
        return Outcome(stored=True, status=row.status, taken_from=taken_from)
    if row.status in (statuses.QUEUED, statuses.SENDING, statuses.ACCEPTED, statuses.SENT):
        if row.status != statuses.SENT:
            # The report overtook the send result (phones send whichever is ready first): the
            # radio did send it, and callers are told so before they hear how it ended.
            row.set(status=statuses.SENT, sent_at=row.sent_at or now)
        if not report.success:
            return _failing(row, "not_delivered", now, taken_from)
        row.set(status=statuses.DELIVERED, delivered_at=report.at or now)
    return Outcome(stored=True, status=row.status, taken_from=taken_from)


def _failing(row: _Row, error_code: str, now: datetime, taken_from: str | None) -> Outcome:
    row.set(status=statuses.FAILED, failed_at=now, error_code=error_code[:64])
    return Outcome(stored=True, status=statuses.FAILED, taken_from=taken_from)


async def _one_report(db: Database, report: Report) -> Outcome:
    async with db.transaction() as session:
        [outcome] = await apply_reports(session, [report])
    return outcome


async def mark_accepted(db: Database, project_id: str, device_id: str, message_id: str) -> Outcome:
    """A phone asks to hold a command. The first phone to ask while the message is still queued
    or only offered (`sending`, to it or to another phone) gets it, and from then on no other
    phone may send it; asking again for one it holds is confirmed again. Anything else (held by
    another phone, or already finished) is refused, and the phone must not send it."""
    return await _one_report(db, Report(ACCEPTED_REPORT, project_id, device_id, message_id))


async def record_send_result(
    db: Database,
    project_id: str,
    device_id: str,
    message_id: str,
    success: bool,
    error: str | None,
) -> Outcome:
    """What the radio did; a failure is refunded. A result for a message this phone no longer
    holds but nobody else accepted wins it (see `apply_reports`)."""
    return await _one_report(
        db, Report(SEND_RESULT_REPORT, project_id, device_id, message_id, success, error)
    )


async def record_delivery(
    db: Database,
    project_id: str,
    device_id: str,
    message_id: str,
    delivered: bool,
    at: datetime | None,
) -> Outcome:
    """The network's delivery report; `delivered=False` fails the message (refunded)."""
    return await _one_report(
        db, Report(DELIVERY_REPORT, project_id, device_id, message_id, delivered, at=at)
    )


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
    # The messages taken back to the queue and those failed for want of a result: whoever
    # counted them as in flight (or their parts against a SIM) stops counting them.
    requeued_ids: frozenset[str] = frozenset()
    no_result_ids: frozenset[str] = frozenset()


# Whether the sweep has anything to do (a superset of what its three transactions take), built
# once: the sweep asks every second.
_ANYTHING_DUE = (
    select(col(Message.id))
    .where(
        text(LIVE_MESSAGE),
        or_(
            and_(
                col(Message.status) == statuses.SENDING,
                col(Message.dispatched_at) < bindparam("ack_deadline"),
            ),
            and_(
                col(Message.status) == statuses.QUEUED, col(Message.expires_at) < bindparam("now")
            ),
            and_(
                col(Message.status) == statuses.ACCEPTED,
                col(Message.accepted_at) < bindparam("result_deadline"),
            ),
        ),
    )
    .limit(1)
)


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
    fail with `no_result`. Expired and failed ones are refunded, and reported with
    `message.expired` and `message.failed` (and `request.completed` for requests they finish).

    An instance takes back the commands of phones connected to it (or to none), except those
    whose `accepted` it already holds (`accepts_in_hand`): they arrived in time. A phone on
    another instance is that instance's to time out; after three ack timeouts anyone does, in
    case that instance died without saying so."""
    now = utcnow()
    deadline = now - timedelta(seconds=ack_timeout_s)
    result_deadline = now - timedelta(seconds=result_timeout_s)
    # Each condition starts with LIVE_MESSAGE verbatim, so SQLite reads the partial index of
    # the few live messages, not the whole table, every round.
    live = text(LIVE_MESSAGE)
    # Most rounds have nothing to do: one read, no write lock, tells.
    due = {"ack_deadline": deadline, "now": now, "result_deadline": result_deadline}
    if await db.run(lambda conn: conn.execute(_ANYTHING_DUE, due).first(), read_only=True) is None:
        return SweepResult(set(), 0, 0)
    unaccepted = [
        col(Message.status) == statuses.SENDING,
        col(Message.dispatched_at) < deadline,
    ]
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

    async def requeue(session: AsyncSession) -> Sequence[Any]:
        requeued = await session.execute(
            update(Message)
            .where(live, *unaccepted)
            .values(status=statuses.QUEUED, device_id=None, sim_id=None)
            .returning(col(Message.id), col(Message.project_id))
        )
        return requeued.all()

    taken_back = await db.run_unit(requeue, beside_loop=True)
    projects = {project_id for _, project_id in taken_back}
    expired, _ = await _finish_where(
        db,
        and_(
            live,
            col(Message.status) == statuses.QUEUED,
            col(Message.direction) == "out",
            col(Message.expires_at) < now,
        ),
        statuses.EXPIRED,
        "expired",
    )
    no_result, failed = await _finish_where(
        db,
        and_(
            live,
            col(Message.status) == statuses.ACCEPTED,
            col(Message.accepted_at) < result_deadline,
        ),
        statuses.FAILED,
        "no_result",
    )
    return SweepResult(
        projects,
        expired,
        no_result,
        frozenset(message_id for message_id, _ in taken_back),
        frozenset(failed),
    )


async def _finish_where(
    db: Database, condition: ColumnElement[bool], status: str, error_code: str
) -> tuple[int, list[str]]:
    """One sweep transaction (on SQLite one hand-off to the runner's thread, beside the loop:
    it may finish hundreds of messages)."""
    now = utcnow()

    async def finish(session: AsyncSession) -> tuple[int, list[str]]:
        rows = list(
            (
                await session.execute(
                    select(Message).where(condition).limit(500).with_for_update(skip_locked=True)
                )
            ).scalars()
        )
        for message in rows:
            await _fail(session, message, error_code, now, status)
        if rows:
            await session.flush()
            finished = await outbox.message_events(session, [message.id for message in rows], now)
            await outbox.completed_requests(session, [r.message.request_id for r in finished], now)
        return len(rows), [message.id for message in rows]

    return await db.run_unit(finish, beside_loop=True)


async def cancel(db: Database, project_id: str, message_id: str) -> tuple[Message, bool] | None:
    """Cancels a message still queued (refunding it), with `message.canceled` (and
    `request.completed` if it was its request's last). Returns the message and whether this
    call canceled it; None if it is not this project's. Racing with dispatch or with another
    cancel is safe: the row lock decides which one wins."""
    async with db.transaction() as session:
        message = await _device_message(session, project_id, message_id)
        if message is None:
            return None
        if message.status != statuses.QUEUED:
            return message, False
        now = utcnow()
        message.status = statuses.CANCELED
        message.failed_at = now
        await refund_message(session, message)
        await session.flush()
        await outbox.message_events(session, [message.id], now)
        await outbox.completed_requests(session, [message.request_id], now)
        return message, True
