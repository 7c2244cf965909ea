"""A server killed (SIGKILL, as `kill -9`) while a group-committed batch of sends is being
written, before its commit, loses nothing it answered 202 and charges nothing it did not: the
sends of that batch got no answer and left no message, request or charge behind."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from app.db.models import Message, MessageRequest
from app.services import credits
from tests.e2e.test_instances import Instance
from tests.support.factories import new_tenant

RATE = 35_000


async def test_a_kill_before_a_batch_commits_loses_no_answered_send_and_charges_none_other(
    database_url, db
):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 100 * RATE)
    # The first batch commits; the process dies in the second, before its commit.
    server = Instance(
        database_url,
        "crashing",
        {"SIMWIRE_CRASH_AT": "send_batch_commit", "SIMWIRE_CRASH_AFTER": "1"},
    )
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            first = await http.post(
                "/v1/messages",
                json={"to": "+14155550100", "message": "before the crash"},
                headers=tenant.headers,
            )
            assert first.status_code == 202, first.text
            outcomes = await asyncio.gather(
                *(
                    http.post(
                        "/v1/messages",
                        json={"to": f"+1415555{n:04d}", "message": f"in the crash {n}"},
                        headers=tenant.headers,
                    )
                    for n in range(1, 11)
                ),
                return_exceptions=True,
            )
        assert all(isinstance(o, httpx.TransportError) for o in outcomes), outcomes
        assert server.process.wait(10) == -9
    finally:
        server.stop()
    async with db.sessions() as session:
        requests = list((await session.execute(select(MessageRequest.id))).scalars())
        bodies = list((await session.execute(select(Message.body))).scalars())
    assert requests == [first.json()["request_id"]]
    assert bodies == ["before the crash"]
    balance, ledger_total = await credits.ledger_sum(db, tenant.project_id)
    assert balance == ledger_total == 99 * RATE
