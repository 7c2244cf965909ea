"""Credit sends that arrive together are written in one transaction, each answered only after
that commit, and each still all-or-nothing: a request short of credit or reusing an
Idempotency-Key fails alone while the others of its batch commit."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, insert, select, text

from app.db.models import LedgerEntry, Message, MessageRequest
from app.domain.errors import InsufficientCredits
from app.services import credits, quoting, sending
from app.services.ids import utcnow
from app.services.sending import GroupCommit
from tests.support.factories import new_tenant
from tests.support.live import eventually

RATE = 35_000


class Notes:
    def __init__(self) -> None:
        self.projects: list[str] = []

    async def notify_queued(self, project_id: str) -> None:
        self.projects.append(project_id)


@pytest.fixture
def held_commits(monkeypatch):
    """Makes every batch wait at its start until `release` is set; `entered` lists the sizes
    of the batches that reached that point."""
    release = asyncio.Event()
    entered: list[int] = []
    original = GroupCommit._commit

    async def held(self, batch):
        entered.append(len(batch))
        await release.wait()
        return await original(self, batch)

    monkeypatch.setattr(GroupCommit, "_commit", held)
    return release, entered


async def count(db, model) -> int:
    async with db.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def send(db, settings, project_id, n, notes, key=None, body=None):
    return asyncio.create_task(
        sending.send_with_credits(
            db,
            notes,
            settings,
            project_id,
            [quoting.Draft(f"+1415555{n:04d}", body or f"Order {n} shipped")],
            sending.SendOptions(idempotency_key=key),
            sending.request_fingerprint({"n": n, "body": body}),
        )
    )


async def test_each_send_is_answered_only_after_its_batch_commits(settings, db, held_commits):
    release, entered = held_commits
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 100 * RATE)
    notes = Notes()
    first = send(db, settings, tenant.project_id, 0, notes)
    await eventually(lambda: entered == [1])  # the first batch is writing (held)...
    waiting = [send(db, settings, tenant.project_id, n, notes) for n in range(1, 9)]
    await eventually(lambda: len(sending.group_commit(db).pending) == 8)
    assert not first.done() and not any(t.done() for t in waiting)
    assert await count(db, Message) == 0 and await count(db, MessageRequest) == 0
    release.set()
    answers = [await first] + [await t for t in waiting]
    assert entered == [1, 8]  # ...and the eight that arrived meanwhile went in one more
    async with db.sessions() as session:
        stored = set((await session.execute(select(MessageRequest.id))).scalars())
    assert stored == {a["request_id"] for a in answers}
    assert await count(db, Message) == 9 and notes.projects == [tenant.project_id] * 2
    balance, ledger_total = await credits.ledger_sum(db, tenant.project_id)
    assert balance == ledger_total == 91 * RATE


async def test_a_request_short_of_credit_fails_alone_in_its_batch(settings, db, held_commits):
    release, entered = held_commits
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 3 * RATE)
    await quoting.policy_for(db, settings, tenant.project_id)  # cached: nothing to wait for
    notes = Notes()
    tasks = [send(db, settings, tenant.project_id, n, notes) for n in range(5)]
    await eventually(lambda: entered)
    release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert entered == [5]
    accepted = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, InsufficientCredits)]
    assert len(accepted) == 3 and len(refused) == 2
    assert refused[0].details["balance_atomic"] == 0
    assert await count(db, MessageRequest) == 3 and await count(db, Message) == 3
    assert await count(db, LedgerEntry) == 4  # the grant and three charges
    assert await credits.ledger_sum(db, tenant.project_id) == (0, 0)


async def test_an_idempotency_key_used_twice_in_one_batch_answers_once(settings, db, held_commits):
    release, entered = held_commits
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    notes = Notes()
    plain = send(db, settings, tenant.project_id, 0, notes)
    await eventually(lambda: entered == [1])  # held: the keyed sends below gather behind it
    same = [send(db, settings, tenant.project_id, 1, notes, key="k1") for _ in range(2)]
    other_body = send(db, settings, tenant.project_id, 2, notes, key="k2")
    clash = send(db, settings, tenant.project_id, 3, notes, key="k2")
    await eventually(lambda: len(sending.group_commit(db).pending) == 4)
    release.set()
    first, again = await asyncio.gather(*same)
    assert first == again
    assert (await plain)["request_id"]
    # Two bodies under k2: whichever joined the batch first is sent, the other is refused.
    k2 = await asyncio.gather(other_body, clash, return_exceptions=True)
    assert sorted(type(o).__name__ for o in k2) == ["Conflict", "dict"]
    # The second use of each key waited for the next batch, where it found the first.
    assert entered == [1, 4, 2]
    assert await count(db, MessageRequest) == 3
    assert await credits.ledger_sum(db, tenant.project_id) == (7 * RATE, 7 * RATE)


@pytest.mark.parametrize("engine_name", ["postgresql"], indirect=True)
async def test_an_idempotency_key_committed_elsewhere_meanwhile_answers_as_that_request(
    settings, db
):
    """Another instance commits a request under the same key after this batch looked for it
    (PostgreSQL reads committed rows only; SQLite's write lock rules the race out): the
    batch's insert breaks the key's unique index, and the request answers as the other did,
    charging nothing."""
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    answer = {"request_id": "req_elsewhere", "messages": []}
    requests = MessageRequest.metadata.tables["requests"]
    async with db.engine.connect() as elsewhere:
        await elsewhere.begin()
        await elsewhere.execute(
            insert(requests).values(
                id="req_elsewhere",
                project_id=tenant.project_id,
                billing="credits",
                total_atomic=RATE,
                segment_count=1,
                idempotency_key="raced",
                request_sha256=sending.request_fingerprint({"n": 5, "body": None}),
                response=answer,
                created_at=utcnow(),
            )
        )
        raced = send(db, settings, tenant.project_id, 5, Notes(), key="raced")

        async def waits_on_the_other_insert() -> bool:
            async with db.engine.connect() as look:
                waiting = await look.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                )
                return bool(waiting.scalar_one())

        await eventually(waits_on_the_other_insert)
        await elsewhere.commit()
    assert await raced == answer
    assert await count(db, MessageRequest) == 1
    assert await credits.ledger_sum(db, tenant.project_id) == (10 * RATE, 10 * RATE)
