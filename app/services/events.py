"""The event outbox: record an event in the caller's transaction, and list a project's events
newest first so a receiver that was away can catch up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import Event
from app.domain.errors import InvalidInput
from app.domain.events import ALL_EVENT_TYPES, EVENT_TYPES, unknown_event_types
from app.services.ids import new_id, utcnow
from app.services.reading import MAX_PAGE, decode_cursor, encode_cursor


@dataclass(frozen=True)
class EventFilter:
    """What `GET /v1/events` narrows by; empty or None means "any"."""

    types: tuple[str, ...] = ()
    since: datetime | None = None
    since_id: str | None = None
    """Only events newer than this event of the project."""


@dataclass(frozen=True)
class EventPage:
    events: list[Event]
    next_cursor: str | None


async def record_event(
    session: AsyncSession,
    project_id: str,
    type: str,
    data: dict[str, Any],
    now: datetime | None = None,
) -> Event:
    """Adds an event to `session`, so it commits or rolls back with the change it reports.
    `data` must be JSON-ready (the object as the API returns it). ValueError for a type that
    is not in app/domain/events.EVENT_TYPES (a programming error, not a caller's)."""
    if type not in ALL_EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    event = Event(
        id=new_id("evt"), project_id=project_id, type=type, data=data, created_at=now or utcnow()
    )
    session.add(event)
    return event


def parse_event_types(text: str) -> tuple[str, ...]:
    """One event type or a comma-separated list; InvalidInput (param `type`) names unknown ones."""
    types = [part.strip() for part in text.split(",") if part.strip()]
    unknown = unknown_event_types(types)
    if not types or unknown:
        raise InvalidInput(
            f"unknown event type {', '.join(map(repr, unknown)) or repr(text)}; "
            f"known types: {', '.join(EVENT_TYPES)}",
            param="type",
        )
    return tuple(dict.fromkeys(types))


async def list_events(
    db: Database,
    project_id: str,
    filters: EventFilter | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> EventPage:
    """The project's events matching `filters`, newest first, `limit` (1–1000) at a time.
    Raises InvalidCursor for a cursor this server did not hand out, InvalidInput for a bad
    `limit` or a `since_id` that is not an event of this project."""
    filters = filters or EventFilter()
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"`limit` must be from 1 to {MAX_PAGE}", param="limit")
    before_seq = decode_cursor(cursor) if cursor is not None else None
    query = select(Event).where(col(Event.project_id) == project_id)
    if filters.types:
        query = query.where(col(Event.type).in_(filters.types))
    if filters.since is not None:
        query = query.where(col(Event.created_at) >= filters.since)
    if before_seq is not None:
        query = query.where(col(Event.seq) < before_seq)
    async with db.reading() as session:
        if filters.since_id is not None:
            after_seq = (
                await session.execute(
                    select(col(Event.seq)).where(
                        col(Event.project_id) == project_id, col(Event.id) == filters.since_id
                    )
                )
            ).scalar_one_or_none()
            if after_seq is None:
                raise InvalidInput(
                    f"`since_id` {filters.since_id!r} is not an event of this project",
                    param="since_id",
                )
            query = query.where(col(Event.seq) > after_seq)
        rows = list(
            (await session.execute(query.order_by(col(Event.seq).desc()).limit(limit + 1)))
            .scalars()
            .all()
        )
    more = len(rows) > limit
    rows = rows[:limit]
    last_seq = rows[-1].seq if more and rows else None
    return EventPage(rows, encode_cursor(last_seq) if last_seq is not None else None)
