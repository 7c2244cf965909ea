"""What a project sees of its own messages: listings, one message, a request, stats; plus the two
things a caller does to one message after sending it (archive it, cancel it while queued)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import CreditAccount, LedgerEntry, Message, MessageRequest, Sim
from app.domain import ledger, statuses
from app.domain.errors import Conflict, InvalidInput, NotFound, Unauthorized
from app.services import outbound
from app.services.ids import utcnow
from app.services.views import (
    PENDING_STATUSES,
    SENT_STATUSES,
    MessageRecord,
    RequestView,
    request_view,
)

MAX_PAGE = 1000

FAILED_STATUSES = (statuses.FAILED, statuses.EXPIRED)
LISTABLE_STATUSES = frozenset({*statuses.OUTBOUND_STATUSES, statuses.RECEIVED})


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"


class NotCancelable(Conflict):
    code = "not_cancelable"

    def __init__(self, message_id: str, status: str) -> None:
        super().__init__(
            f"message {message_id!r} is {status}; only a queued message can be canceled",
            # Not `status`: app/api/errors.error_response takes `status` as its own argument.
            current_status=status,
        )


_NOT_A_CURSOR = "`cursor` is not a cursor this server handed out"


def encode_cursor(seq: int) -> str:
    """An opaque page position: base64url (unpadded) of the last row's `seq`."""
    return base64.urlsafe_b64encode(str(seq).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The `seq` inside a cursor, or InvalidCursor for anything this server did not hand out."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor(_NOT_A_CURSOR, param="cursor") from None
    if (
        not text.isdigit()
        or text.startswith("0")
        or len(text) > 18
        or encode_cursor(int(text)) != cursor
    ):
        raise InvalidCursor(_NOT_A_CURSOR, param="cursor")
    return int(text)


@dataclass(frozen=True)
class MessageFilter:
    """Everything `GET /v1/messages` can narrow by; None means "any". `archived` is exclusive:
    False lists only live messages, True only archived ones."""

    direction: str | None = None
    statuses: tuple[str, ...] = ()
    tag: str | None = None
    sim: str | None = None
    """A SIM as sending names it: its id, slot number or phone number."""
    to: str | None = None
    sender: str | None = None
    since: datetime | None = None
    since_id: str | None = None
    archived: bool = False
    in_reply_to: str | None = None
    """Only the inbound replies to this message (see `Message.in_reply_to`)."""


@dataclass(frozen=True)
class MessagePage:
    records: list[MessageRecord]
    next_cursor: str | None


@dataclass(frozen=True)
class Window:
    sent: int = 0
    received: int = 0
    failed: int = 0


@dataclass(frozen=True)
class ProjectStats:
    total_sent: int
    total_delivered: int
    total_received: int
    total_failed: int
    total_queued: int
    last_24h: Window
    last_7d: Window
    spend_atomic: int


async def _sims_named(db: Database, project_id: str, selector: str) -> list[str]:
    """Ids of the project's SIMs that `selector` names, by the rule a pinned send uses."""
    async with db.sessions() as session:
        sims = (
            await session.execute(select(Sim).where(col(Sim.project_id) == project_id))
        ).scalars()
        return [sim.id for sim in sims if outbound.sim_matches(selector, sim)]


def _with_sim() -> Select[tuple[Message, str | None]]:
    return select(Message, col(Sim.number)).outerjoin(Sim, col(Sim.id) == col(Message.sim_id))


async def _records(
    session: AsyncSession, query: Select[tuple[Message, str | None]]
) -> list[MessageRecord]:
    return [
        MessageRecord(message, number) for message, number in (await session.execute(query)).all()
    ]


def _sender_is(number: str) -> ColumnElement[bool]:
    return or_(
        col(Message.from_number) == number,
        and_(
            col(Message.from_number).is_(None),
            col(Message.direction) == "out",
            col(Sim.number) == number,
        ),
    )


async def _seq_of(session: AsyncSession, project_id: str, message_id: str) -> int | None:
    return (
        await session.execute(
            select(col(Message.seq)).where(
                col(Message.project_id) == project_id, col(Message.id) == message_id
            )
        )
    ).scalar_one_or_none()


async def list_messages(
    db: Database,
    project_id: str,
    filters: MessageFilter | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> MessagePage:
    """The project's messages matching `filters`, newest first, `limit` (1–1000) at a time.
    Raises InvalidCursor for a cursor it did not hand out, InvalidInput for an unknown
    `since_id` (only this project's messages count)."""
    filters = filters or MessageFilter()
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"`limit` must be from 1 to {MAX_PAGE}", param="limit")
    before_seq = decode_cursor(cursor) if cursor is not None else None
    query = _with_sim().where(
        col(Message.project_id) == project_id, col(Message.archived) == filters.archived
    )
    if filters.direction is not None:
        query = query.where(col(Message.direction) == filters.direction)
    if filters.statuses:
        query = query.where(col(Message.status).in_(filters.statuses))
    if filters.tag is not None:
        query = query.where(col(Message.tag) == filters.tag)
    if filters.sim is not None:
        query = query.where(col(Message.sim_id).in_(await _sims_named(db, project_id, filters.sim)))
    if filters.to is not None:
        query = query.where(col(Message.to_number) == filters.to)
    if filters.sender is not None:
        query = query.where(_sender_is(filters.sender))
    if filters.since is not None:
        query = query.where(col(Message.created_at) >= filters.since)
    if filters.in_reply_to is not None:
        query = query.where(col(Message.in_reply_to) == filters.in_reply_to)
    if before_seq is not None:
        query = query.where(col(Message.seq) < before_seq)
    async with db.sessions() as session:
        if filters.since_id is not None:
            after_seq = await _seq_of(session, project_id, filters.since_id)
            if after_seq is None:
                raise InvalidInput(
                    f"`since_id` {filters.since_id!r} is not a message of this project",
                    param="since_id",
                )
            query = query.where(col(Message.seq) > after_seq)
        records = await _records(session, query.order_by(col(Message.seq).desc()).limit(limit + 1))
    more = len(records) > limit
    records = records[:limit]
    last_seq = records[-1].message.seq if more and records else None
    return MessagePage(records, encode_cursor(last_seq) if last_seq is not None else None)


async def get_message(db: Database, project_id: str, message_id: str) -> MessageRecord:
    """One message of this project; another project's message is NotFound like a missing one."""
    async with db.sessions() as session:
        records = await _records(
            session,
            _with_sim().where(col(Message.project_id) == project_id, col(Message.id) == message_id),
        )
    if not records:
        raise NotFound(f"message {message_id!r} not found")
    return records[0]


async def get_request(db: Database, project_id: str | None, request_id: str) -> RequestView:
    """A request and its messages. With `project_id` (a key's project) only that project's
    requests are found (NotFound otherwise). Without one, the unguessable id of an x402-paid
    request is the capability to read it; any other request needs a key (Unauthorized, also
    for unknown ids, so the answer tells nothing about which ids exist)."""
    async with db.sessions() as session:
        request = (
            await session.execute(
                select(MessageRequest).where(col(MessageRequest.id) == request_id)
            )
        ).scalar_one_or_none()
        if project_id is None:
            if request is None or request.billing != "x402":
                raise Unauthorized(
                    "an API key is required to read this request; only x402-paid requests "
                    "are readable by their id alone"
                )
        elif request is None or request.project_id != project_id:
            raise NotFound(f"request {request_id!r} not found")
        records = await _records(
            session,
            _with_sim()
            .where(
                col(Message.project_id) == request.project_id, col(Message.request_id) == request.id
            )
            .order_by(col(Message.seq)),
        )
    return request_view(request, records)


def _count_where(*conditions: Any) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((and_(*conditions), 1), else_=0)), 0)


def _window_columns(since: datetime) -> list[ColumnElement[int]]:
    recent = col(Message.created_at) >= since
    return [
        _count_where(recent, col(Message.status).in_(SENT_STATUSES)),
        _count_where(recent, col(Message.status) == statuses.RECEIVED),
        _count_where(recent, col(Message.status).in_(FAILED_STATUSES)),
    ]


async def project_stats(db: Database, project_id: str, now: datetime | None = None) -> ProjectStats:
    """Counts over all of the project's messages (archived ones too) and, for the last 24 hours
    and 7 days, by creation time. `spend_atomic` is what the project's credit paid for
    messages: charges minus refunds, in USDC atomic units."""
    now = now or utcnow()
    columns = [
        _count_where(col(Message.status).in_(SENT_STATUSES)),
        _count_where(col(Message.status) == statuses.DELIVERED),
        _count_where(col(Message.status) == statuses.RECEIVED),
        _count_where(col(Message.status).in_(FAILED_STATUSES)),
        _count_where(col(Message.status).in_(PENDING_STATUSES)),
        *_window_columns(now - timedelta(hours=24)),
        *_window_columns(now - timedelta(days=7)),
    ]
    async with db.sessions() as session:
        counts = [
            int(value)
            for value in (
                await session.execute(select(*columns).where(col(Message.project_id) == project_id))
            ).one()
        ]
        ledger_total = (
            await session.execute(
                select(func.coalesce(func.sum(col(LedgerEntry.amount_atomic)), 0))
                .join(CreditAccount, col(CreditAccount.id) == col(LedgerEntry.account_id))
                .where(
                    col(CreditAccount.project_id) == project_id,
                    col(LedgerEntry.kind).in_([ledger.CHARGE, ledger.REFUND]),
                )
            )
        ).scalar_one()
    sent, delivered, received, failed, queued = counts[:5]
    return ProjectStats(
        total_sent=sent,
        total_delivered=delivered,
        total_received=received,
        total_failed=failed,
        total_queued=queued,
        last_24h=Window(*counts[5:8]),
        last_7d=Window(*counts[8:11]),
        spend_atomic=-int(ledger_total),
    )


async def archive_message(db: Database, project_id: str, message_id: str) -> MessageRecord:
    """Hides a message from default listings; archiving twice is harmless."""
    async with db.transaction() as session:
        changed = await session.execute(
            update(Message)
            .where(col(Message.project_id) == project_id, col(Message.id) == message_id)
            .values(archived=True)
            .returning(col(Message.id))
        )
        if changed.scalar_one_or_none() is None:
            raise NotFound(f"message {message_id!r} not found")
    return await get_message(db, project_id, message_id)


async def cancel_message(db: Database, project_id: str, message_id: str) -> MessageRecord:
    """Cancels a still-queued message, refunding its price once (outbound.cancel decides under
    the row lock). NotCancelable, with the current status, once it has left the queue."""
    current = await get_message(db, project_id, message_id)
    if current.message.status != statuses.QUEUED:
        raise NotCancelable(message_id, current.message.status)
    outcome = await outbound.cancel(db, project_id, message_id)
    if outcome is None:
        raise NotFound(f"message {message_id!r} not found")
    message, canceled_now = outcome
    if not canceled_now:
        raise NotCancelable(message_id, message.status)
    return MessageRecord(message, current.sim_number)


def parse_statuses(text: str) -> tuple[str, ...]:
    """`status` filter text: one status or a comma-separated list of them."""
    wanted = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [s for s in wanted if s not in LISTABLE_STATUSES]
    if not wanted or unknown:
        raise InvalidInput(
            f"`status` must be one or more of {', '.join(sorted(LISTABLE_STATUSES))}",
            param="status",
        )
    return wanted
