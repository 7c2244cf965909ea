"""The indexes of `messages` (migration 0017): an outbound message leaves most of its indexed
columns empty until a phone takes it, so those are indexed only where set, and the lookups by
them still go through an index on SQLite (which uses a partial index only when the query
implies its condition)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Connection

from app.services import outbound
from app.services.ids import utcnow
from app.services.reading import MessageFilter, list_messages
from tests.support.statements import queued_message_database, statements_run

WHERE_SET = {
    "ix_messages_sim_window": "sim_id",
    "ix_messages_from_number": "from_number",
    "ix_messages_tag": "tag",
    "ix_messages_in_reply_to": "in_reply_to",
}


def _indexes(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'"
        )
        return {name: sql or "" for name, sql in rows}


def _plans(path: Path, statements: list[tuple[str, object]]) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [
            step[3]
            for statement, parameters in statements
            for step in conn.execute(f"EXPLAIN QUERY PLAN {statement}", parameters or ())
            if "messages" in step[3]
        ]


def test_columns_an_outbound_message_leaves_empty_are_indexed_only_where_set(
    sqlite_template: Path,
) -> None:
    indexes = _indexes(sqlite_template)
    for name, column in WHERE_SET.items():
        assert indexes[name].endswith(f"WHERE {column} IS NOT NULL"), indexes[name]
    # `uq_messages_phone_id` (SQLite's autoindex) leads with device_id: a second index of it
    # only cost writes.
    assert "ix_messages_device_id" not in indexes
    assert "sqlite_autoindex_messages_1" in indexes


async def test_lookups_by_those_columns_still_use_an_index(
    tmp_path: Path, sqlite_template: Path
) -> None:
    async with queued_message_database(sqlite_template, tmp_path, "indexes.db") as queued:
        with statements_run() as seen:
            for filters in (
                MessageFilter(tag="promo"),
                MessageFilter(in_reply_to="msg_x"),
                MessageFilter(to="+15550200001"),
            ):
                await list_messages(queued.db, queued.project_id, filters)

            def device_lookups(conn: Connection) -> None:
                conn.execute(outbound._IN_FLIGHT_OF_DEVICE, {"device_id": "dev_x"}).all()
                conn.execute(
                    outbound._DISPATCHED_SINCE, {"sim_ids": ["sim_x"], "since": utcnow()}
                ).all()

            await queued.db.run(device_lookups)
        plans = _plans(queued.path, seen)
        assert len(plans) >= 5
        assert not [p for p in plans if p.startswith("SCAN messages")], plans
        used = " ".join(plans)
        for index in (
            "ix_messages_tag",
            "ix_messages_in_reply_to",
            "ix_messages_sim_window",
            "sqlite_autoindex_messages_1",
        ):
            assert index in used, plans
