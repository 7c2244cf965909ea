"""What the engines of this process run, and a SQLite database to run it on: for the tests that
read query plans."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.db.engine import Database
from app.db.models import Message
from app.services.outbound import OutboundItem, enqueue
from tests.support.factories import new_tenant


@contextlib.contextmanager
def statements_run() -> Iterator[list[tuple[str, Any]]]:
    """Every statement that reads rows (SELECT, UPDATE, DELETE) any engine of this process
    runs inside the block, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            seen.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", note)


@dataclass
class QueuedMessageDatabase:
    path: Path
    db: Database
    project_id: str
    message: Message


@contextlib.asynccontextmanager
async def queued_message_database(
    template: Path, tmp_path: Path, name: str
) -> AsyncIterator[QueuedMessageDatabase]:
    """A copy of the migrated SQLite `template` holding one tenant and one queued message."""
    path = tmp_path / name
    shutil.copyfile(template, path)
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        tenant = await new_tenant(db)
        async with db.transaction() as session:
            [row] = await enqueue(
                session, tenant.project_id, [OutboundItem("+15550200001", "hi", "GSM-7", 1)]
            )
        yield QueuedMessageDatabase(path, db, tenant.project_id, row)
    finally:
        await db.dispose()
