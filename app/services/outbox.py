"""Events written in the transaction of the change they report (the outbox), for the paths
that change many rows at once: each batch writes its events with one insert and reads what
they report with one statement, never one per message.

An event's `data` is the object exactly as the API returns it: a message as
`GET /v1/messages/{id}`, a request as `GET /v1/requests/{id}`, a device as the `GET /v1/devices`
item, made by the mappings of app/services/views.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db import bulk
from app.db.models import Event, Message, MessageRequest, Sim
from app.domain import statuses
from app.domain.events import ALL_EVENT_TYPES
from app.domain.pricing import format_usdc
from app.services.ids import new_id, utcnow
from app.services.views import (
    MessageRecord,
    MessageValues,
    as_data,
    message_out,
    request_out,
    request_view,
)

# A session or a bare connection: the send path writes with Core on a connection.
Executor = AsyncSession | AsyncConnection

_EVENTS = Event.metadata.tables["events"]
_MESSAGES = Message.metadata.tables["messages"]
_REQUESTS = MessageRequest.metadata.tables["requests"]
_SIMS = Sim.metadata.tables["sims"]

# The event each status a message reaches is reported with.
STATUS_EVENTS = {
    statuses.QUEUED: "message.queued",
    statuses.SENT: "message.sent",
    statuses.DELIVERED: "message.delivered",
    statuses.FAILED: "message.failed",
    statuses.EXPIRED: "message.expired",
    statuses.CANCELED: "message.canceled",
    statuses.RECEIVED: "message.received",
}


def event_row(
    project_id: str, type: str, data: dict[str, Any], now: datetime | None = None
) -> dict[str, Any]:
    """One `events` row for a Core insert. ValueError for a type that does not exist."""
    if type not in ALL_EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    return {
        "id": new_id("evt"),
        "project_id": project_id,
        "type": type,
        "data": data,
        "created_at": now or utcnow(),
        "routed": False,
    }


def message_event(record: MessageRecord, now: datetime | None = None) -> dict[str, Any]:
    """The event of the status `record`'s message is in (`message.sent` for `sent`, …)."""
    message = record.message
    return event_row(
        message.project_id, STATUS_EVENTS[message.status], as_data(message_out(record)), now
    )


async def insert_events(executor: Executor, rows: Sequence[dict[str, Any]]) -> None:
    """Writes `rows` (from `event_row`) in order, with one statement."""
    if rows:
        await bulk.on_connection(executor, lambda conn: bulk.insert_rows(conn, _EVENTS, rows))


def write_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """`insert_events` inside a synchronous transaction (`Database.run`)."""
    bulk.insert_rows(conn, _EVENTS, rows)


# The statements of the hub's and the sweeps' batches, built once: building one (and its
# cache key) costs more than running it on SQLite. `ids` expands to the list given.
# Every message column and its SIM's number (`sim_number`), as `record_of` reads a row.
MESSAGES_WITH_SIMS = select(*_MESSAGES.c, _SIMS.c.number.label("sim_number")).select_from(
    _MESSAGES.outerjoin(_SIMS, _SIMS.c.id == _MESSAGES.c.sim_id)
)
_MESSAGES_NAMED = MESSAGES_WITH_SIMS.where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)))
_MESSAGES_OF_REQUESTS = MESSAGES_WITH_SIMS.where(
    _MESSAGES.c.request_id.in_(bindparam("ids", expanding=True))
).order_by(_MESSAGES.c.seq)
_LOCK_REQUESTS = (
    select(_REQUESTS.c.id)
    .where(_REQUESTS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_REQUESTS.c.id)
    .with_for_update()
)
_UNFINISHED_REQUESTS = (
    select(_MESSAGES.c.request_id)
    .where(
        _MESSAGES.c.request_id.in_(bindparam("ids", expanding=True)),
        _MESSAGES.c.status.not_in(sorted(statuses.FINAL_STATUSES)),
    )
    .group_by(_MESSAGES.c.request_id)
)
_REQUESTS_NAMED = select(_REQUESTS).where(_REQUESTS.c.id.in_(bindparam("ids", expanding=True)))


async def read_messages(executor: Executor, message_ids: Iterable[str]) -> dict[str, MessageRecord]:
    """The messages named, as they stand in this transaction, with their SIMs' numbers: one
    statement. Missing ids are left out."""
    ids = sorted(set(message_ids))
    if not ids:
        return {}
    rows = await executor.execute(_MESSAGES_NAMED, {"ids": ids})
    return {row.id: record_of(row._mapping) for row in rows}


def record_of(row: Any) -> MessageRecord:
    """A message row (a mapping of the `messages` columns, plus `sim_number` if known) as a
    record of plain values."""
    return MessageRecord(MessageValues(row), row.get("sim_number"))


async def message_events(
    executor: Executor, message_ids: Sequence[str], now: datetime | None = None
) -> list[MessageRecord]:
    """Records, in this transaction, the event of the status each named message is now in
    (reads them in one statement, writes the events in one), in the order given; returns the
    records read."""
    found = await read_messages(executor, message_ids)
    records = [found[message_id] for message_id in message_ids if message_id in found]
    now = now or utcnow()
    await insert_events(executor, [message_event(record, now) for record in records])
    return records


async def completed_requests(
    executor: Executor, request_ids: Iterable[str | None], now: datetime | None = None
) -> list[str]:
    """`request.completed` for each of `request_ids` whose messages are now all final; call
    it, last in the transaction, with the requests of every message this transaction made
    final. Returns the requests completed.

    The event's `data` is the request as `GET /v1/requests/{id}` returns it. Once every
    message is final its `status` is the outcome, `all_delivered`, `partial_delivery` or
    `failed` (a request's own vocabulary adds only `processing`), so it carries no separate
    `outcome` field.

    Exactly once per request, even when two transactions finish its last messages at the same
    time: the request rows are locked (PostgreSQL; SQLite writers are serialized anyway)
    before the messages are counted, so the later of the two counts after the earlier one
    committed and is the only one to see none left. The lock is taken after the messages' and
    the credit accounts', the order every writer takes them in."""
    ids = sorted({request_id for request_id in request_ids if request_id})
    if not ids:
        return []
    await executor.execute(_LOCK_REQUESTS, {"ids": ids})
    unfinished = set((await executor.execute(_UNFINISHED_REQUESTS, {"ids": ids})).scalars())
    done = [request_id for request_id in ids if request_id not in unfinished]
    if not done:
        return []
    requests = {
        row.id: MessageRequest(**row._mapping)
        for row in await executor.execute(_REQUESTS_NAMED, {"ids": done})
    }
    messages: dict[str, list[MessageRecord]] = {request_id: [] for request_id in done}
    rows = await executor.execute(_MESSAGES_OF_REQUESTS, {"ids": done})
    for row in rows:
        record = record_of(row._mapping)
        messages[record.message.request_id or ""].append(record)
    now = now or utcnow()
    events = []
    for request_id in done:
        request = requests.get(request_id)
        if request is None or not messages[request_id]:
            continue
        view = request_view(request, messages[request_id])
        events.append(
            event_row(request.project_id, "request.completed", as_data(request_out(view)), now)
        )
    await insert_events(executor, events)
    return [event["data"]["request_id"] for event in events]


def credits_low_event(
    project_id: str,
    balance_before_atomic: int,
    balance_after_atomic: int,
    threshold_atomic: int | None,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """`credits.low` when a debit took the balance from at or above the project's threshold
    to below it (None: no threshold, or no crossing). Once per crossing: a balance already
    below stays quiet until a credit lifts it back up."""
    if threshold_atomic is None:
        return None
    if not balance_before_atomic >= threshold_atomic > balance_after_atomic:
        return None
    return event_row(
        project_id,
        "credits.low",
        {
            "balance_atomic": balance_after_atomic,
            "balance": format_usdc(balance_after_atomic),
            "currency": "USDC",
            "threshold_atomic": threshold_atomic,
        },
        now,
    )
