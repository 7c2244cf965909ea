"""Many rows at once (`bulk.insert_rows`, how a send writes its messages and events): on
PostgreSQL one `COPY` in the caller's transaction, elsewhere one `executemany`; the same rows
stored either way, and nothing stored when the transaction rolls back. One statement over many
parameter sets (`bulk.execute_many`, how the hub writes claims and reports)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, event, select, update
from sqlalchemy.engine import Engine

from app.db import bulk
from app.db.models import Event
from app.services import outbox
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


_ROUTE_FIRST_TIME = (
    update(_EVENTS)
    .where(_EVENTS.c.id == bindparam("event_id"))
    .values(type="message.sent", routed=True, seq=_EVENTS.c.seq + 1000)
)


async def test_an_update_run_for_many_rows_takes_the_values_the_statement_gives(db):
    """`execute_many` with values written into the statement (a string, a boolean through its
    bind processor, `seq + 1000`) as well as the rows' own; a row naming such a value wins,
    as with `Connection.execute`."""
    tenant = await new_tenant(db)
    rows = event_rows(tenant.project_id, 4)
    await db.run(lambda conn: bulk.insert_rows(conn, _EVENTS, rows))

    def seqs(conn: Any) -> dict[str, int]:
        query = select(_EVENTS.c.id, _EVENTS.c.seq).where(_EVENTS.c.project_id == tenant.project_id)
        return {row.id: row.seq for row in conn.execute(query)}

    before = await db.run(seqs, read_only=True)
    await db.run(
        lambda conn: bulk.execute_many(
            conn,
            _ROUTE_FIRST_TIME,
            [{"event_id": rows[0]["id"]}, {"event_id": rows[1]["id"], "type": "message.failed"}],
        )
    )
    stored = {row["id"]: row for row in await stored_events(db, tenant.project_id)}
    after = await db.run(seqs, read_only=True)
    assert [stored[row["id"]]["type"] for row in rows] == [
        "message.sent",
        "message.failed",
        "message.queued",
        "message.queued",
    ]
    assert [stored[row["id"]]["routed"] for row in rows] == [True, True, False, True]
    assert [after[row["id"]] - before[row["id"]] for row in rows] == [1000, 1000, 0, 0]


async def test_events_written_through_a_session_or_a_unit_of_work_are_stored_as_given(db):
    """`outbox.insert_events` reaches the connection under an async session and under a unit
    of work run at once (`Database.run_unit`, SQLite's hot path)."""
    tenant = await new_tenant(db)
    first, second = event_rows(tenant.project_id, 3), event_rows(tenant.project_id, 2)
    async with db.transaction() as session:
        await outbox.insert_events(session, first)
    await db.run_unit(lambda session: outbox.insert_events(session, second))
    assert await stored_events(db, tenant.project_id) == first + second
