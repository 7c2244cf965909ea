"""What the background loops read every second while nothing happens: on SQLite each of
their statements must be answered from an index, never by reading a table that grows with
history (events, messages, deliveries) from end to end, or an idle server's CPU would grow
with its past. SQLite uses a partial index only when the query repeats its condition
verbatim, which is easy to break without noticing."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import update

from app.db.engine import Database
from app.db.models import Message
from app.services import outbound
from app.services.events import record_event
from app.settings import Settings
from app.webhooks.delivery import DeliveryWorker
from app.webhooks.fanout import route_events
from tests.support.factories import new_tenant
from tests.support.statements import queued_message_database, statements_run

GROWING_TABLES = (
    "events",
    "messages",
    "requests",
    "ledger_entries",
    "webhook_deliveries",
    "webhook_attempts",
)


def whole_table_reads(path: Path, statements: list[tuple[str, Any]]) -> list[str]:
    """The plan steps of `statements` that read one of GROWING_TABLES without an index."""
    found = []
    with sqlite3.connect(path) as conn:
        for statement, parameters in statements:
            for step in conn.execute(f"EXPLAIN QUERY PLAN {statement}", parameters or ()):
                detail = step[3]
                for table in GROWING_TABLES:
                    if detail in (f"SCAN {table}", f"SCAN {table} AS {table}"):
                        found.append(f"{detail}: {statement}")
    return found


async def test_the_idle_rounds_read_no_growing_table_whole(
    tmp_path: Path, sqlite_template: Path
) -> None:
    path = tmp_path / "idle.db"
    shutil.copyfile(sqlite_template, path)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{path}", log_json=True)
    db = Database(settings.database_url)
    worker = DeliveryWorker(db, settings)
    try:
        tenant = await new_tenant(db)
        async with db.transaction() as session:
            for _ in range(3):
                await record_event(session, tenant.project_id, "message.queued", {"id": "msg_x"})
        assert await route_events(db) == 3  # all routed: what an idle server's table holds
        with statements_run() as seen:
            assert await worker.run_once() == 0
            assert await route_events(db) == 0
            assert not await outbound.has_queued(db, tenant.project_id)
            await outbound.sweep(db, ack_timeout_s=10, result_timeout_s=60, instance_id="i1")
        assert len(seen) >= 4
        assert whole_table_reads(path, seen) == []
    finally:
        await worker.client.aclose()
        await db.dispose()


async def test_a_sweep_with_work_reads_only_the_live_messages(
    tmp_path: Path, sqlite_template: Path
) -> None:
    async with queued_message_database(sqlite_template, tmp_path, "sweep.db") as queued:
        db = queued.db
        async with db.transaction() as session:
            await session.execute(
                update(Message)
                .where(Message.id == queued.message.id)  # type: ignore[arg-type]
                .values(expires_at=queued.message.created_at)
            )
        with statements_run() as seen:
            result = await outbound.sweep(
                db, ack_timeout_s=10, result_timeout_s=60, instance_id="i1"
            )
        assert result.expired == 1
        assert any(statement.startswith("UPDATE messages") for statement, _ in seen)
        assert whole_table_reads(queued.path, seen) == []
