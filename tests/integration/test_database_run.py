"""`Database.run` and `Database.run_unit`, the all-at-once transactions of the hot paths, on
both engines: they commit when the work returns, roll back when it raises, see what the async
sessions committed (and the other way round), and a unit that waits on anything but its
session is refused with nothing written. On SQLite a run takes place on the event loop's
thread unless it is large or another connection holds the lock, and then it waits beside the
loop without stopping it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator

import pytest
from sqlalchemy import Connection, Text, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import Event, Organization
from app.services.ids import new_id, utcnow
from app.services.outbox import event_row
from app.services.projects import create_project


def _org_row(name: str) -> dict[str, object]:
    return {"id": new_id("org"), "name": name, "created_at": utcnow()}


def _count(conn: Connection, name: str) -> int:
    query = select(func.count()).where(col(Organization.name) == name)
    return int(conn.execute(query).scalar_one())


async def _count_async(db: Database, name: str) -> int:
    async with db.reading() as session:
        query = select(func.count()).where(col(Organization.name) == name)
        return int((await session.execute(query)).scalar_one())


async def test_run_commits_what_the_work_wrote_and_returns_its_result(db: Database) -> None:
    def work(conn: Connection) -> int:
        conn.execute(insert(Organization), [_org_row("run-commit")])
        return _count(conn, "run-commit")

    assert await db.run(work) == 1
    assert await _count_async(db, "run-commit") == 1
    assert await db.run(lambda conn: _count(conn, "run-commit"), read_only=True) == 1


async def test_run_rolls_back_when_the_work_raises(db: Database) -> None:
    def work(conn: Connection) -> None:
        conn.execute(insert(Organization), [_org_row("run-rollback")])
        raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        await db.run(work)
    assert await _count_async(db, "run-rollback") == 0
    # The connection is usable again at once.
    await db.run(lambda conn: conn.execute(insert(Organization), [_org_row("run-after")]))
    assert await _count_async(db, "run-after") == 1


async def test_run_sees_what_an_async_session_committed(db: Database) -> None:
    async with db.transaction() as session:
        session.add(Organization(**_org_row("session-first")))  # type: ignore[arg-type]
    assert await db.run(lambda conn: _count(conn, "session-first"), read_only=True) == 1


async def test_runs_and_sessions_writing_at_once_lose_nothing(db: Database) -> None:
    async def by_run(n: int) -> None:
        await db.run(lambda conn: conn.execute(insert(Organization), [_org_row("mixed")]))

    async def by_session(n: int) -> None:
        async with db.transaction() as session:
            await session.execute(insert(Organization), [_org_row("mixed")])

    await asyncio.gather(*(by_run(n) for n in range(20)), *(by_session(n) for n in range(20)))
    assert await _count_async(db, "mixed") == 40


async def test_run_unit_commits_added_objects_and_statements(db: Database) -> None:
    async def unit(session: AsyncSession) -> str:
        await session.execute(insert(Organization), [_org_row("unit")])
        added = Organization(**_org_row("unit"))  # type: ignore[arg-type]
        session.add(added)
        await session.flush()
        session.add(Organization(**_org_row("unit")))  # type: ignore[arg-type]  # flushed at the end
        return added.id

    org_id = await db.run_unit(unit)
    assert org_id.startswith("org_")
    assert await _count_async(db, "unit") == 3


class _Suspend:
    """An awaitable that gives control back once, as waiting on a socket or a lock does."""

    def __await__(self) -> Generator[None, None, None]:
        yield


async def test_run_unit_refuses_a_unit_that_waits_on_something_else(db: Database) -> None:
    async def unit(session: AsyncSession) -> None:
        await session.execute(insert(Organization), [_org_row("unit-waits")])
        await _Suspend()

    # On both engines the unit runs at once, in one synchronous step: it may not wait.
    with pytest.raises(RuntimeError, match="waited on something besides its session"):
        await db.run_unit(unit)
    assert await _count_async(db, "unit-waits") == 0


async def test_json_columns_read_back_what_either_connection_wrote(db: Database) -> None:
    """JSON columns are written compact and in UTF-8 by the hot paths' connection and by the
    async sessions alike, and each reads the other's values back unchanged."""
    project_id = (await create_project(db, "json-columns")).project.id
    data = {"body": "Grüße, 你好 👋", "price_atomic": 2**53 + 1, "nested": [{"ok": True}, None]}
    row = event_row(project_id, "message.queued", data)
    await db.run(lambda conn: conn.execute(insert(Event), [row]))
    events = Event.metadata.tables["events"]
    stored = select(events.c.data).where(events.c.id == row["id"])
    async with db.reading() as session:
        assert (await session.execute(stored)).one()[0] == data
    assert await db.run(lambda conn: conn.execute(stored).one()[0], read_only=True) == data
    as_text = select(events.c.data.cast(Text)).where(events.c.id == row["id"])
    text = await db.run(lambda conn: conn.execute(as_text).scalar_one(), read_only=True)
    assert (
        text
        == '{"body":"Grüße, 你好 👋","price_atomic":9007199254740993,"nested":[{"ok":true},null]}'
    )


@pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)
async def test_a_run_on_sqlite_is_on_the_loop_s_thread_unless_it_is_large(db: Database) -> None:
    loop_thread = threading.get_ident()

    def where(conn: Connection) -> int:
        conn.execute(insert(Organization), [_org_row("placed")])
        return threading.get_ident()

    assert await db.run(where) == loop_thread
    assert await db.run(where, read_only=False, beside_loop=True) != loop_thread
    assert await _count_async(db, "placed") == 2


@pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)
async def test_a_run_meeting_a_held_write_lock_waits_for_it_beside_the_loop(db: Database) -> None:
    """The async engine's transaction holds the write lock across awaits: waiting for it on
    the loop's thread would stop the very loop that transaction needs to finish."""
    loop_thread = threading.get_ident()
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold_the_lock() -> None:
        async with db.transaction() as session:
            await session.execute(insert(Organization), [_org_row("held-first")])
            holding.set()
            await release.wait()
            # More statements while the run waits: the loop, and the lock's holder, go on.
            await session.execute(insert(Organization), [_org_row("held-first")])

    def write(conn: Connection) -> tuple[int, int]:
        conn.execute(insert(Organization), [_org_row("held-second")])
        return threading.get_ident(), _count(conn, "held-first")

    holder = asyncio.create_task(hold_the_lock())
    await holding.wait()
    run = asyncio.create_task(db.run(write))
    await asyncio.sleep(0)  # the run starts, finds the lock held and waits beside the loop
    assert not run.done()
    release.set()
    thread, first_rows = await asyncio.wait_for(run, 10)
    await holder
    assert thread != loop_thread
    assert first_rows == 2  # it ran after the holder committed
    assert await _count_async(db, "held-second") == 1
    # The loop's connection is free again: the next run is back on the loop's thread.
    assert await db.run(lambda conn: threading.get_ident(), read_only=True) == loop_thread


@pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)
async def test_writes_on_the_loop_s_thread_are_checkpointed_beside_it(db: Database) -> None:
    def autocheckpoint(conn: Connection) -> int:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())

    # The loop's connection never checkpoints (that waits for the disk) ...
    assert await db.run(autocheckpoint, read_only=True) == 0
    runner = db._runner
    assert runner is not None
    before = runner.checkpoints
    rows = [_org_row("logged") for _ in range(20)]
    await db.run(lambda conn: conn.execute(insert(Organization), rows))
    # ... a write on it starts one on the runner's thread, where it waits for the disk.
    assert runner.checkpoint is not None
    await runner.checkpoint
    assert runner.checkpoints == before + 1
    assert await _count_async(db, "logged") == 20
