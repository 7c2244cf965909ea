"""A column matched against a list (`lists.one_of`): on PostgreSQL the list is one array
parameter however long it is, on SQLite a parameter per value; the same rows either way. The
suppressions among a send's numbers and the per-recipient counts are looked up so."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from app.services import credits, send_limits, suppressions
from app.services.ids import utcnow
from tests.support.factories import new_tenant
from tests.support.statements import statements_run

NUMBERS = [f"+1415555{n:04d}" for n in range(1000)]


def reading(table: str, statements: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The SELECTs of `table` among `statements` (from `statements_run`)."""
    return [
        (sql, parameters)
        for sql, parameters in statements
        if sql.lstrip().upper().startswith("SELECT") and f"FROM {table}" in sql
    ]


async def test_suppressed_among_a_thousand_numbers_is_one_statement_with_the_list_as_one_value(
    db, engine_name
):
    mine, theirs = await new_tenant(db, "mine"), await new_tenant(db, "theirs")
    async with db.transaction() as session:
        now = utcnow()
        await suppressions.suppress(
            session, mine.project_id, [(NUMBERS[3], "manual"), (NUMBERS[999], "opt_out")], now
        )
        await suppressions.suppress(session, theirs.project_id, [(NUMBERS[5], "manual")], now)
    wanted = {(mine.project_id, number) for number in NUMBERS}
    with statements_run() as statements:
        found = await db.run(lambda conn: suppressions.suppressed_among(conn, wanted))
    assert found == {(mine.project_id, NUMBERS[3]), (mine.project_id, NUMBERS[999])}
    [(sql, parameters)] = reading("suppressions", statements)
    if engine_name == "postgresql":
        assert "= ANY (" in sql and "IN (" not in sql
        assert len(parameters) == 2 and sorted(parameters[1]) == NUMBERS
    else:
        assert "IN (" in sql and len(parameters) == 1 + len(NUMBERS)


async def test_recipient_usage_counts_each_of_a_thousand_numbers_in_its_own_project(
    db, engine_name, client
):
    tenant = await new_tenant(db, "usage")
    other = await new_tenant(db, "other")
    for project_id in (tenant.project_id, other.project_id):
        await credits.grant(db, project_id, 10**9, note="test")
    for key, to in (
        (tenant.headers, NUMBERS[:2]),
        (tenant.headers, NUMBERS[1:2]),
        (other.headers, NUMBERS[:1]),
    ):
        sent = await client.post("/v1/messages", json={"to": to, "message": "hi"}, headers=key)
        assert sent.status_code == 202, sent.text
    now = utcnow() + timedelta(seconds=1)
    with statements_run() as statements:
        usage = await db.run(
            lambda conn: send_limits.recipient_usage(
                conn, NUMBERS, now, project_ids=[tenant.project_id]
            )
        )
    assert {key: used[send_limits.HOUR_S].count for key, used in usage.items()} == {
        (tenant.project_id, NUMBERS[0]): 1,
        (tenant.project_id, NUMBERS[1]): 2,
    }
    [(sql, parameters)] = reading("messages", statements)
    if engine_name == "postgresql":
        assert "= ANY (" in sql and "IN (" not in sql
        lists_given = [p for p in parameters if isinstance(p, list)]
        assert len(parameters) == 7 and lists_given == [NUMBERS, [tenant.project_id]]
    else:
        assert "IN (" in sql and len(parameters) == 6 + len(NUMBERS) + 1
