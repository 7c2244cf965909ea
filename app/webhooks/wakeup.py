"""Wakes this process's delivery workers when a transaction that wrote events has committed,
so a change reaches its endpoints without waiting for the next poll.

Whatever writes the events (`record_event` through the ORM, the outbox's Core inserts on a
bare connection), the statement is an `INSERT INTO events` on some connection, or a `COPY`
that `bulk.insert_rows` notes in the connection's `info`: that connection is noted, the note
survives its commit and is dropped by a rollback, and the workers are rung once the commit has
finished (so the worker's own reads see the new rows): when a pooled connection goes back to
its pool, or, for the SQLite runner's connections, which it holds, right after their commit
(`engine.AFTER_COMMIT`)."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import Pool

from app.db import bulk, engine

_WROTE = "simwire_events_written"
_COMMITTED = "simwire_events_committed"
_EVENTS = "events"
_INSERT = f"INSERT INTO {_EVENTS} "

# Each bell with the loop it belongs to: a commit on another thread's loop rings it safely.
_bells: weakref.WeakKeyDictionary[asyncio.Event, asyncio.AbstractEventLoop] = (
    weakref.WeakKeyDictionary()
)


def register(bell: asyncio.Event) -> None:
    """`bell` is set whenever a transaction of this process that wrote events has committed.
    Call from the loop that waits on it."""
    _bells[bell] = asyncio.get_running_loop()


def unregister(bell: asyncio.Event) -> None:
    _bells.pop(bell, None)


def ring() -> None:
    """Wakes every registered worker (a delivery is due, or events wait to be routed)."""
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    for bell, loop in list(_bells.items()):
        if loop is here:
            bell.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(bell.set)


@event.listens_for(Engine, "after_cursor_execute")
def _noted(
    conn: Connection,
    _cursor: Any,
    statement: str,
    _parameters: Any,
    _context: Any,
    _executemany: bool,
) -> None:
    if statement.startswith(_INSERT):
        conn.info[_WROTE] = True


# The commit and rollback listeners run inside SQLAlchemy's own cleanup: they never raise, and
# leave an invalidated connection alone (touching its `info` would fail the rollback).


@event.listens_for(Engine, "commit")
def _committing(conn: Connection) -> None:
    if conn.invalidated:
        return
    copied = conn.info.pop(bulk.COPIED_INTO, ())
    if conn.info.pop(_WROTE, False) or _EVENTS in copied:
        conn.info[_COMMITTED] = True


@event.listens_for(Engine, "rollback")
def _rolled_back(conn: Connection) -> None:
    if not conn.invalidated:
        conn.info.pop(_WROTE, None)
        conn.info.pop(bulk.COPIED_INTO, None)


@event.listens_for(Pool, "checkin")
def _returned(_dbapi_connection: Any, record: Any) -> None:
    if record is not None and record.info.pop(_COMMITTED, False):
        ring()


def _runner_committed(conn: Connection) -> None:
    if conn.info.pop(_COMMITTED, False):
        ring()


engine.AFTER_COMMIT.append(_runner_committed)
