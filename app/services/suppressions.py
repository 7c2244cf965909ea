"""Recipient consent: each project's suppression list (numbers it must not send to), kept by
opt-out keywords from phones, by the API and by CSV import. A suppression made while messages
to that number are queued cancels and refunds them in the same transaction."""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from app.db import lists
from app.db.engine import Database
from app.db.models import Message, ProjectPolicy, Suppression
from app.db.repositories.projects import ProjectRepository
from app.domain import numbers, statuses
from app.domain.errors import InvalidInput, InvalidNumber, NotFound, SimwireError
from app.services import outbox
from app.services.credits import refund_message
from app.services.ids import utcnow
from app.services.reading import MAX_PAGE, decode_cursor, encode_cursor
from app.settings import Settings

OPT_OUT = "opt_out"
MANUAL = "manual"
BOUNCED = "bounced"
REASONS = (OPT_OUT, MANUAL, BOUNCED)

_SUPPRESSIONS = Suppression.metadata.tables["suppressions"]


class InvalidReason(InvalidInput):
    code = "invalid_reason"

    def __init__(self, reason: object) -> None:
        super().__init__(
            f"`reason` must be one of {', '.join(REASONS)}, not {reason!r}", param="reason"
        )


def check_reason(reason: object) -> str:
    if reason not in REASONS:
        raise InvalidReason(reason)
    return str(reason)


async def default_region(session: AsyncSession, settings: Settings, project_id: str) -> str | None:
    """The region national numbers of `project_id` are read in: its policy's, else the
    server's."""
    region = (
        await session.execute(
            select(col(ProjectPolicy.default_region)).where(
                col(ProjectPolicy.project_id) == project_id
            )
        )
    ).scalar_one_or_none()
    return region or settings.default_region


def normalized(raw: str, region: str | None) -> str:
    """`raw` as E.164, or InvalidNumber (an emergency number is not a number to list)."""
    try:
        return numbers.normalize_destination(raw, region).e164
    except InvalidNumber:
        raise
    except SimwireError:
        raise InvalidNumber(raw, "an emergency number, never a recipient") from None


# In a caller's transaction -------------------------------------------------------------------


async def suppress(
    session: AsyncSession, project_id: str, entries: Sequence[tuple[str, str]], now: datetime
) -> list[str]:
    """Adds `(E.164 number, reason)` entries to the project's list, keeping any entry already
    there as it is; cancels and refunds the project's queued messages to the numbers newly
    added (`message.canceled`, `request.completed`). Returns the numbers added."""
    wanted: dict[str, str] = {}
    for number, reason in entries:
        wanted.setdefault(number, reason)
    if not wanted:
        return []
    dialect = session.get_bind().dialect.name
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    added = list(
        (
            await session.execute(
                insert(Suppression)
                .on_conflict_do_nothing(index_elements=["project_id", "number"])
                .returning(col(Suppression.number)),
                [
                    {"project_id": project_id, "number": n, "reason": r, "created_at": now}
                    for n, r in wanted.items()
                ],
            )
        ).scalars()
    )
    if added:
        await cancel_queued(session, project_id, added, now)
    return added


async def cancel_queued(
    session: AsyncSession, project_id: str, to_numbers: Sequence[str], now: datetime
) -> list[str]:
    """Cancels (and refunds) the project's queued outbound messages to these numbers, with
    their events; the row lock makes a dispatch racing with it take the message or leave it.
    Returns the ids canceled."""
    if not to_numbers:
        return []
    rows = list(
        (
            await session.execute(
                select(Message)
                .where(
                    col(Message.project_id) == project_id,
                    col(Message.to_number).in_(sorted(set(to_numbers))),
                    col(Message.direction) == "out",
                    col(Message.status) == statuses.QUEUED,
                )
                .with_for_update()
            )
        ).scalars()
    )
    for message in rows:
        message.status = statuses.CANCELED
        message.failed_at = now
        message.error_code = "recipient_opted_out"
        await refund_message(session, message)
    if not rows:
        return []
    await session.flush()
    ids = [message.id for message in rows]
    await outbox.message_events(session, ids, now)
    await outbox.completed_requests(session, [message.request_id for message in rows], now)
    return ids


async def lift_opt_out(session: AsyncSession, project_id: str, number: str) -> bool:
    """Removes an `opt_out` suppression (an opt-in keyword from that number); a `manual` or
    `bounced` one stays: the project put it there, not the recipient."""
    removed = await session.execute(
        delete(Suppression)
        .where(
            col(Suppression.project_id) == project_id,
            col(Suppression.number) == number,
            col(Suppression.reason) == OPT_OUT,
        )
        .returning(col(Suppression.number))
    )
    return removed.first() is not None


@functools.cache
def _suppressed_among(on_postgresql: bool) -> Select[Any]:
    return select(_SUPPRESSIONS.c.project_id, _SUPPRESSIONS.c.number).where(
        lists.one_of(_SUPPRESSIONS.c.project_id, "projects", on_postgresql),
        lists.one_of(_SUPPRESSIONS.c.number, "numbers", on_postgresql),
    )


def suppressed_among(
    conn: Connection | Session, wanted: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which `(project id, E.164 number)` pairs are suppressed: one statement on the unique
    (project, number) index, however many pairs. Synchronous (`Database.run`, `run_sync`)."""
    pairs = set(wanted)
    if not pairs:
        return set()
    found = conn.execute(
        _suppressed_among(lists.is_postgresql(conn)),
        {"projects": sorted({p for p, _ in pairs}), "numbers": sorted({n for _, n in pairs})},
    )
    return {(row.project_id, row.number) for row in found} & pairs


# Use cases ---------------------------------------------------------------------------------


async def add_suppression(
    db: Database, settings: Settings, project_id: str, raw_number: str, reason: str = MANUAL
) -> tuple[Suppression, bool]:
    """`POST /v1/suppressions`: the suppression and whether it is new; an existing one is
    returned as it is (its reason unchanged). InvalidInput for a bad number or reason."""
    reason = check_reason(reason)
    async with db.transaction() as session:
        number = normalized(raw_number, await default_region(session, settings, project_id))
        added = await suppress(session, project_id, [(number, reason)], utcnow())
        row = await _find(session, project_id, number)
    assert row is not None
    return row, bool(added)


async def _find(session: AsyncSession, project_id: str, number: str) -> Suppression | None:
    return (
        await session.execute(
            select(Suppression).where(
                col(Suppression.project_id) == project_id, col(Suppression.number) == number
            )
        )
    ).scalar_one_or_none()


@dataclass(frozen=True)
class SuppressionPage:
    suppressions: list[Suppression]
    next_cursor: str | None


async def list_suppressions(
    db: Database,
    settings: Settings,
    project_id: str,
    limit: int = 50,
    cursor: str | None = None,
    number: str | None = None,
) -> SuppressionPage:
    """Newest first, `limit` (1–1000) at a time; `number` (any form the project's region
    reads) narrows it to that number."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"`limit` must be from 1 to {MAX_PAGE}", param="limit")
    before_seq = decode_cursor(cursor) if cursor is not None else None
    async with db.reading() as session:
        query = select(Suppression).where(col(Suppression.project_id) == project_id)
        if number is not None:
            e164 = normalized(number, await default_region(session, settings, project_id))
            query = query.where(col(Suppression.number) == e164)
        if before_seq is not None:
            query = query.where(col(Suppression.seq) < before_seq)
        rows = list(
            (await session.execute(query.order_by(col(Suppression.seq).desc()).limit(limit + 1)))
            .scalars()
            .all()
        )
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1].seq if more and rows else None
    return SuppressionPage(rows, encode_cursor(last) if last is not None else None)


async def delete_suppression(
    db: Database, settings: Settings, project_id: str, raw_number: str
) -> Suppression:
    """Lifts a suppression of any reason; NotFound when the number is not on the list."""
    async with db.transaction() as session:
        number = normalized(raw_number, await default_region(session, settings, project_id))
        row = await _find(session, project_id, number)
        if row is None:
            raise NotFound(f"{number} is not on this project's suppression list")
        await session.delete(row)
    return row


@dataclass
class ImportReport:
    imported: int = 0
    skipped: int = 0
    """Numbers already on the list (or repeated in the file)."""
    invalid: list[tuple[int, str]] = field(default_factory=list)
    """(line number, why) of each line that was not imported."""


async def import_csv(
    db: Database, settings: Settings, project_id: str, text: str, batch_size: int = 1000
) -> ImportReport:
    """Imports a CSV with a `number` column and an optional `reason` (default `manual`), in
    transactions of `batch_size` lines. NotFound for an unknown project; InvalidInput when
    there is no `number` column."""
    reader = csv.DictReader(io.StringIO(text))
    columns = {name.strip().lower(): name for name in reader.fieldnames or []}
    if "number" not in columns:
        raise InvalidInput("the CSV needs a header line with a `number` column")
    report = ImportReport()
    async with db.reading() as session:
        if await ProjectRepository(session).get_project(project_id) is None:
            raise NotFound(f"project {project_id!r} not found")
        region = await default_region(session, settings, project_id)
    pending: list[tuple[str, str]] = []
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        raw = (row.get(columns["number"]) or "").strip()
        reason = (row.get(columns["reason"]) or "").strip() if "reason" in columns else ""
        try:
            number = normalized(raw, region)
            reason = check_reason(reason or MANUAL)
        except InvalidInput as exc:
            report.invalid.append((line, exc.message))
            continue
        if number in seen:
            report.skipped += 1
            continue
        seen.add(number)
        pending.append((number, reason))
        if len(pending) >= batch_size:
            await _import_batch(db, project_id, pending, report)
            pending = []
    await _import_batch(db, project_id, pending, report)
    return report


async def _import_batch(
    db: Database, project_id: str, entries: list[tuple[str, str]], report: ImportReport
) -> None:
    if not entries:
        return
    async with db.transaction() as session:
        added = await suppress(session, project_id, entries, utcnow())
    report.imported += len(added)
    report.skipped += len(entries) - len(added)
