"""Many rows at once (`bulk.insert_rows`, how a send writes its messages and events): on
PostgreSQL one `COPY` in the caller's transaction, elsewhere one `executemany`; the same rows
stored either way, and nothing stored when the transaction rolls back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from app.db import bulk
from app.db.models import Event
from app.services.ids import new_id
from tests.support.factories import new_tenant

_EVENTS = Event.metadata.tables["events"]
_WHEN = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)


def event_rows(project_id: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": new_id("evt"),
            "project_id": project_id,
            "type": "message.queued",
            "data": {"n": n, "text": "café ☕", "nested": [1, None, {"ok": n % 2 == 0}]},
            "created_at": _WHEN + timedelta(microseconds=n),
            "routed": n % 3 == 0,
        }
        for n in range(count)
    ]


async def stored_events(db, project_id: str) -> list[dict[str, Any]]:
    """In the order they were written (`seq`, which the event feed reads by), `seq` left out."""
    rows = await db.run(
        lambda conn: conn.execute(
            select(_EVENTS).where(_EVENTS.c.project_id == project_id).order_by(_EVENTS.c.seq)
        ).all(),
        read_only=True,
    )
    return [{k: v for k, v in row._mapping.items() if k != "seq"} for row in rows]


class InsertsSeen:
    """The INSERT statements the engines send through a cursor (a `COPY` is not one)."""

    def __init__(self) -> None:
        self.inserts: list[str] = []

    def __enter__(self) -> InsertsSeen:
        event.listen(Engine, "before_cursor_execute", self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._note)

    def _note(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO EVENTS"):
            self.inserts.append(statement)


async def test_rows_are_stored_as_given_with_one_copy_on_postgresql(db, engine_name):
    tenant = await new_tenant(db)
    rows = event_rows(tenant.project_id, 250)

    def write(conn: Any) -> None:
        conn.execute(select(1))  # the transaction has begun, as in a send's batch
        bulk.insert_rows(conn, _EVENTS, rows)

    with InsertsSeen() as seen:
        await db.run(write)
    assert await stored_events(db, tenant.project_id) == rows
    assert len(seen.inserts) == (0 if engine_name == "postgresql" else 1)


async def test_a_rolled_back_transaction_keeps_none_of_the_rows(db):
    tenant = await new_tenant(db)

    def write_then_fail(conn: Any) -> None:
        conn.execute(select(1))
        bulk.insert_rows(conn, _EVENTS, event_rows(tenant.project_id, 50))
        raise RuntimeError("the batch fails after its rows were written")

    with pytest.raises(RuntimeError):
        await db.run(write_then_fail)
    assert await stored_events(db, tenant.project_id) == []


async def test_rows_as_the_first_statement_stay_inside_the_transaction(db):
    """The driver begins PostgreSQL's transaction at the first statement; rows written before
    it must not be committed on their own."""
    tenant = await new_tenant(db)

    def first_thing_then_fail(conn: Any) -> None:
        bulk.insert_rows(conn, _EVENTS, event_rows(tenant.project_id, 5))
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await db.run(first_thing_then_fail)
    assert await stored_events(db, tenant.project_id) == []
    rows = event_rows(tenant.project_id, 5)
    await db.run(lambda conn: bulk.insert_rows(conn, _EVENTS, rows))
    assert len(await stored_events(db, tenant.project_id)) == 5


async def test_no_rows_is_no_statement(db):
    with InsertsSeen() as seen:
        await db.run(lambda conn: bulk.insert_rows(conn, _EVENTS, []))
    assert seen.inserts == []
