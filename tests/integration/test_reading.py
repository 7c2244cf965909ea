"""The read side of messages and credits: every filter and the cursor return exactly the right
rows, one project never sees another's, cancel refunds once, x402 requests are readable by id."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from click.testing import CliRunner
from sqlalchemy import func, select, update

from app.cli import main
from app.db.engine import Database
from app.db.models import LedgerEntry, Message, MessageRequest
from app.services import credits, devices, outbound
from app.services.ids import new_id, utcnow
from tests.support.factories import TenantKeys, new_tenant

PRICE = 35_000
NOW = utcnow()


async def new_request(
    db: Database, project_id: str, count: int, *, billing: str = "credits", tag: str | None = None
) -> tuple[str, list[str]]:
    """A request of `count` queued messages; a credits request is charged like a real send."""
    async with db.transaction() as session:
        request = MessageRequest(
            id=new_id("req"),
            project_id=project_id,
            billing=billing,
            payer="0x" + "ab" * 20 if billing == "x402" else None,
            network="eip155:84532" if billing == "x402" else None,
            total_atomic=PRICE * count,
            segment_count=count,
            created_at=utcnow(),
        )
        session.add(request)
        await session.flush()
        if billing == "credits":
            await credits.charge_project(session, project_id, PRICE * count, request.id)
        rows = await outbound.enqueue(
            session,
            project_id,
            [
                outbound.OutboundItem(
                    to=f"+1202555{i:04d}",
                    body=f"hello {i}",
                    encoding="GSM-7",
                    segment_count=1,
                    price_atomic=PRICE,
                    tag=tag,
                )
                for i in range(count)
            ],
            request_id=request.id,
            billing=billing,
        )
    return request.id, [row.id for row in rows]


async def set_fields(db: Database, message_id: str, **values: Any) -> None:
    async with db.transaction() as session:
        await session.execute(update(Message).where(Message.id == message_id).values(**values))


async def add_inbound(
    db: Database, project_id: str, sender: str, sim_id: str | None, to: str, **values: Any
) -> str:
    fields: dict[str, Any] = {"created_at": utcnow(), **values}
    message = Message(
        id=new_id("msg"),
        project_id=project_id,
        direction="in",
        status="received",
        to_number=to,
        from_number=sender,
        body=f"from {sender}",
        encoding="GSM-7",
        segment_count=1,
        sim_id=sim_id,
        **fields,
    )
    async with db.transaction() as session:
        session.add(message)
    return message.id


@dataclass
class Seeded:
    tenant: TenantKeys
    sims: dict[str, str]  # number -> sim id
    request_id: str = ""
    ids: list[str] = field(default_factory=list)


SIM_A1, SIM_A2 = "+15550001111", "+15550002222"


async def seed_project(db: Database, name: str, grant_atomic: int = 10_000_000) -> Seeded:
    """~30 messages with a spread of directions, statuses, tags, SIMs, ages and archive flags."""
    tenant = await new_tenant(db, name)
    await credits.grant(db, tenant.project_id, grant_atomic)
    paired = await devices.pair_device(db, tenant.project_id)
    sims = await devices.report_sims(
        db,
        paired.device,
        [devices.ReportedSim(slot=0, number=SIM_A1), devices.ReportedSim(slot=1, number=SIM_A2)],
    )
    seeded = Seeded(tenant, {sim.number or "": sim.id for sim in sims})
    request_id, promo = await new_request(db, tenant.project_id, 10, tag="promo")
    _, plain = await new_request(db, tenant.project_id, 12)
    seeded.request_id = request_id
    outcomes = ["sent", "delivered", "failed", "expired", "canceled", "sending", "accepted"]
    for i, message_id in enumerate(promo + plain):
        values: dict[str, Any] = {}
        if i % 3:
            values["status"] = outcomes[i % len(outcomes)]
            values["sim_id"] = sims[i % 2].id
            values["device_id"] = paired.device.id
            values["attempts"] = 1
        if i % 5 == 0:
            values["created_at"] = NOW - timedelta(days=3 + i)
        if i in (4, 13):
            values["archived"] = True
        if values:
            await set_fields(db, message_id, **values)
    inbound = []
    for i, sender in enumerate(["AMAZON", "+12025550000", "AMAZON", "+447700900123", "12345"]):
        sim_number = SIM_A1 if i % 2 == 0 else SIM_A2
        extra: dict[str, Any] = {"archived": True} if i == 3 else {}
        if i == 1:
            extra["created_at"] = NOW - timedelta(days=2)
        inbound.append(
            await add_inbound(
                db, tenant.project_id, sender, seeded.sims[sim_number], sim_number, **extra
            )
        )
    seeded.ids = promo + plain + inbound
    return seeded


async def all_rows(db: Database, project_id: str) -> list[Message]:
    async with db.sessions() as session:
        return list(
            (
                await session.execute(
                    select(Message)
                    .where(Message.project_id == project_id)
                    .order_by(Message.seq.desc())
                )
            ).scalars()
        )


async def page_through(client, headers, params: dict[str, str], limit: int = 7) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = await client.get("/v1/messages", params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body["data"]) <= limit
        seen += [m["id"] for m in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the cursor never ended")


async def test_every_filter_and_the_cursor_return_exactly_the_matching_rows(client, db):
    a = await seed_project(db, "a")
    b = await seed_project(db, "b")
    rows = await all_rows(db, a.tenant.project_id)
    sim_number = {sim_id: number for number, sim_id in a.sims.items()}
    by_id = {row.id: row for row in rows}
    assert len(rows) == 27
    middle = rows[len(rows) // 2]
    since = NOW - timedelta(days=2, hours=1)

    def sender(row: Message) -> str | None:
        return row.from_number if row.direction == "in" else sim_number.get(row.sim_id or "")

    def delivered_promo(row: Message) -> bool:
        return row.direction == "out" and row.status == "delivered" and row.tag == "promo"

    cases: list[tuple[dict[str, str], Any]] = [
        ({}, lambda r: True),
        ({"direction": "in"}, lambda r: r.direction == "in"),
        ({"direction": "out"}, lambda r: r.direction == "out"),
        ({"status": "failed"}, lambda r: r.status == "failed"),
        ({"status": "failed,expired"}, lambda r: r.status in ("failed", "expired")),
        ({"status": "received"}, lambda r: r.status == "received"),
        ({"tag": "promo"}, lambda r: r.tag == "promo"),
        ({"sim": a.sims[SIM_A1]}, lambda r: r.sim_id == a.sims[SIM_A1]),
        ({"to": "+12025550003"}, lambda r: r.to_number == "+12025550003"),
        ({"to": SIM_A2}, lambda r: r.to_number == SIM_A2),
        ({"from": "AMAZON"}, lambda r: r.from_number == "AMAZON"),
        ({"from": SIM_A1}, lambda r: sender(r) == SIM_A1),
        ({"since": since.isoformat()}, lambda r: r.created_at >= since),
        ({"since": since.strftime("%Y-%m-%dT%H:%M:%SZ")}, lambda r: r.created_at >= since),
        ({"since_id": middle.id}, lambda r: r.seq > middle.seq),
        ({"direction": "out", "status": "delivered", "tag": "promo"}, delivered_promo),
    ]
    for params, predicate in cases:
        for archived, flag in [(None, False), ("false", False), ("true", True)]:
            query = {**params, **({"archived": archived} if archived else {})}
            expected = [r.id for r in rows if r.archived == flag and predicate(r)]
            seen = await page_through(client, a.tenant.headers, query)
            assert seen == expected, query
    assert {by_id[i].direction for i in await page_through(client, a.tenant.headers, {})} == {
        "in",
        "out",
    }
    # `to=+1…` typed unencoded in a URL arrives as a space; it still means the + number.
    spaced = await client.get(
        "/v1/messages?to=%2012025550003&archived=true", headers=a.tenant.headers
    )
    plussed = await client.get(
        "/v1/messages", params={"to": "+12025550003", "archived": "true"}, headers=a.tenant.headers
    )
    assert spaced.json()["data"] == plussed.json()["data"]
    # Project B's messages share tags, numbers and statuses but never show up for A.
    b_ids = set(b.ids)
    for params in [{}, {"tag": "promo"}, {"archived": "true"}, {"from": "AMAZON"}]:
        assert not b_ids & set(await page_through(client, a.tenant.headers, params, limit=1000))


async def test_message_json_has_the_documented_shape(client, db):
    seeded = await seed_project(db, "a")
    rows = {r.id: r for r in await all_rows(db, seeded.tenant.project_id)}
    listing = (
        await client.get("/v1/messages", params={"limit": "1000"}, headers=seeded.tenant.headers)
    ).json()
    keys = {
        "id", "request_id", "direction", "status", "to", "from", "body", "encoding", "segments",
        "price_atomic", "tag", "sim_id", "device_id", "attempts", "error_code", "archived",
        "created_at", "sent_at", "delivered_at", "failed_at", "expires_at", "in_reply_to",
    }  # fmt: skip
    for item in listing["data"]:
        assert set(item) == keys
        row = rows[item["id"]]
        if row.direction == "in":
            assert item["status"] == "received" and item["from"] == row.from_number
            assert item["to"] in (SIM_A1, SIM_A2) and item["request_id"] is None
            assert item["in_reply_to"] == row.in_reply_to
        else:
            assert item["in_reply_to"] is None
            assert item["to"] == row.to_number and item["price_atomic"] == PRICE
            assert item["segments"] == 1 and item["encoding"] == "GSM-7"
            expected_from = {v: k for k, v in seeded.sims.items()}.get(row.sim_id or "")
            assert item["from"] == expected_from
    one = listing["data"][0]
    fetched = await client.get(f"/v1/messages/{one['id']}", headers=seeded.tenant.headers)
    assert fetched.status_code == 200 and fetched.json() == one


async def test_request_status_counts_and_messages(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000)
    request_id, ids = await new_request(db, tenant.project_id, 4)
    for message_id, status in zip(ids, ["delivered", "sent", "failed", "queued"], strict=True):
        await set_fields(db, message_id, status=status)
    body = (await client.get(f"/v1/requests/{request_id}", headers=tenant.headers)).json()
    assert body["request_id"] == request_id and body["status"] == "processing"
    assert (body["total"], body["delivered"], body["sent"], body["failed"], body["queued"]) == (
        4,
        1,
        2,
        1,
        1,
    )
    assert [m["id"] for m in body["messages"]] == ids
    await set_fields(db, ids[3], status="expired")
    body = (await client.get(f"/v1/requests/{request_id}", headers=tenant.headers)).json()
    assert body["status"] == "partial_delivery" and body["failed"] == 2 and body["queued"] == 0


async def test_another_projects_key_sees_nothing_of_a_project(client, db):
    a = await seed_project(db, "a")
    b = await new_tenant(db, "b")
    await credits.grant(db, b.project_id, 500_000)
    queued_a = next(r.id for r in await all_rows(db, a.tenant.project_id) if r.status == "queued")
    for method, path in [
        ("get", f"/v1/messages/{queued_a}"),
        ("post", f"/v1/messages/{queued_a}/cancel"),
        ("post", f"/v1/messages/{queued_a}/archive"),
        ("get", f"/v1/requests/{a.request_id}"),
    ]:
        response = await getattr(client, method)(path, headers=b.headers)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"
    row = next(r for r in await all_rows(db, a.tenant.project_id) if r.id == queued_a)
    assert row.status == "queued" and not row.archived
    listing = (await client.get("/v1/messages", headers=b.headers)).json()
    assert listing == {"data": [], "count": 0, "next_cursor": None}
    stats = (await client.get("/v1/stats", headers=b.headers)).json()
    assert stats["total_queued"] == stats["total_received"] == stats["spend_atomic"] == 0
    credit = (await client.get("/v1/credits", headers=b.headers)).json()
    assert credit["balance_atomic"] == 500_000 and [e["kind"] for e in credit["ledger"]] == [
        "grant"
    ]
    # since_id and cursor cannot reach across projects either.
    response = await client.get("/v1/messages", params={"since_id": queued_a}, headers=b.headers)
    assert response.status_code == 400 and response.json()["param"] == "since_id"


async def test_stats_count_own_messages_and_spend_from_the_ledger(client, db):
    a = await seed_project(db, "a")
    await seed_project(db, "b")
    rows = await all_rows(db, a.tenant.project_id)
    day, week = NOW - timedelta(hours=24), NOW - timedelta(days=7)

    def count(statuses: tuple[str, ...], since: datetime | None = None) -> int:
        return sum(r.status in statuses and (since is None or r.created_at >= since) for r in rows)

    # Refund two of A's failed messages as the lifecycle would.
    async with db.transaction() as session:
        refundable = [r for r in rows if r.status in ("failed", "expired", "canceled")][:2]
        for row in refundable:
            message = await session.get(Message, row.seq)
            await credits.refund_message(session, message)
    stats = (await client.get("/v1/stats", headers=a.tenant.headers)).json()
    assert stats["total_sent"] == count(("sent", "delivered")) > 0
    assert stats["total_delivered"] == count(("delivered",)) > 0
    assert stats["total_received"] == count(("received",)) == 5
    assert stats["total_failed"] == count(("failed", "expired")) > 0
    assert stats["total_queued"] == count(("queued", "sending", "accepted")) > 0
    for name, since in [("last_24h", day), ("last_7d", week)]:
        assert stats[name] == {
            "sent": count(("sent", "delivered"), since),
            "received": count(("received",), since),
            "failed": count(("failed", "expired"), since),
        }
    assert stats["last_24h"] != stats["last_7d"]
    assert stats["spend_atomic"] == 22 * PRICE - 2 * PRICE
    assert stats["spend"] == "0.7"


async def test_cancel_refunds_exactly_once_even_when_raced(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000)
    _, (first, second, third) = await new_request(db, tenant.project_id, 3)
    await set_fields(db, third, status="sent")

    async def refunds(message_id: str) -> int:
        async with db.sessions() as session:
            return (
                await session.execute(
                    select(func.count()).where(
                        LedgerEntry.message_id == message_id, LedgerEntry.kind == "refund"
                    )
                )
            ).scalar_one()

    async def balance() -> int:
        return (await client.get("/v1/credits", headers=tenant.headers)).json()["balance_atomic"]

    assert await balance() == 1_000_000 - 3 * PRICE
    canceled = await client.post(f"/v1/messages/{first}/cancel", headers=tenant.headers)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    again = await client.post(f"/v1/messages/{first}/cancel", headers=tenant.headers)
    assert again.status_code == 409
    assert (
        again.json()["error"] == "not_cancelable" and again.json()["current_status"] == "canceled"
    )
    assert await refunds(first) == 1 and await balance() == 1_000_000 - 2 * PRICE

    raced = await asyncio.gather(
        *[client.post(f"/v1/messages/{second}/cancel", headers=tenant.headers) for _ in range(4)]
    )
    codes = sorted(r.status_code for r in raced)
    assert codes == [200, 409, 409, 409]
    assert all((r.json().get("status") or r.json()["current_status"]) == "canceled" for r in raced)
    assert await refunds(second) == 1 and await balance() == 1_000_000 - PRICE

    sent = await client.post(f"/v1/messages/{third}/cancel", headers=tenant.headers)
    assert sent.status_code == 409 and sent.json()["current_status"] == "sent"
    assert await refunds(third) == 0 and await balance() == 1_000_000 - PRICE
    balance_now, ledger_total = await credits.ledger_sum(db, tenant.project_id)
    assert balance_now == ledger_total == 1_000_000 - PRICE


async def test_archive_hides_from_default_listing_and_is_idempotent(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000)
    _, ids = await new_request(db, tenant.project_id, 3)
    for _ in range(2):
        response = await client.post(f"/v1/messages/{ids[1]}/archive", headers=tenant.headers)
        assert response.status_code == 200 and response.json()["archived"] is True
    live = (await client.get("/v1/messages", headers=tenant.headers)).json()
    assert [m["id"] for m in live["data"]] == [ids[2], ids[0]]
    archived = (
        await client.get("/v1/messages", params={"archived": "true"}, headers=tenant.headers)
    ).json()
    assert [m["id"] for m in archived["data"]] == [ids[1]]
    fetched = await client.get(f"/v1/messages/{ids[1]}", headers=tenant.headers)
    assert fetched.json()["archived"] is True


async def test_x402_request_is_readable_by_its_id_alone_and_credits_request_is_not(client, db):
    owner = await new_tenant(db)
    other = await new_tenant(db, "other")
    await credits.grant(db, owner.project_id, 1_000_000)
    paid_id, paid_messages = await new_request(db, owner.project_id, 2, billing="x402")
    credit_id, _ = await new_request(db, owner.project_id, 1)

    anonymous = await client.get(f"/v1/requests/{paid_id}")
    assert anonymous.status_code == 200
    assert anonymous.json()["billing"] == "x402"
    assert [m["id"] for m in anonymous.json()["messages"]] == paid_messages
    for unknown in (credit_id, "req_" + "0" * 32):
        response = await client.get(f"/v1/requests/{unknown}")
        assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert (await client.get(f"/v1/requests/{credit_id}", headers=owner.headers)).status_code == 200
    assert (await client.get(f"/v1/requests/{paid_id}", headers=owner.headers)).status_code == 200
    assert (await client.get(f"/v1/requests/{paid_id}", headers=other.headers)).status_code == 404
    bad_key = {"Authorization": "Bearer sw_live_" + "0" * 32}
    assert (await client.get(f"/v1/requests/{paid_id}", headers=bad_key)).status_code == 401


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_QUERIES = [
    ("/v1/messages", {"limit": "0"}, "invalid_input", "limit"),
    ("/v1/messages", {"limit": "1001"}, "invalid_input", "limit"),
    ("/v1/messages", {"limit": "ten"}, "invalid_input", "limit"),
    ("/v1/messages", {"since": "yesterday"}, "invalid_input", "since"),
    ("/v1/messages", {"direction": "sideways"}, "invalid_input", "direction"),
    ("/v1/messages", {"status": "lost"}, "invalid_input", "status"),
    ("/v1/messages", {"archived": "maybe"}, "invalid_input", "archived"),
    ("/v1/messages", {"since_id": "msg_missing"}, "invalid_input", "since_id"),
    ("/v1/messages", {"cursor": "!!"}, "invalid_cursor", "cursor"),
    ("/v1/messages", {"cursor": _b64("12x")}, "invalid_cursor", None),
    ("/v1/messages", {"cursor": _b64("-3")}, "invalid_cursor", None),
    ("/v1/messages", {"cursor": _b64("7") + "="}, "invalid_cursor", None),
    ("/v1/credits", {"cursor": "bm9wZQ"}, "invalid_cursor", None),
    ("/v1/credits", {"limit": "-1"}, "invalid_input", "limit"),
]


async def test_bad_query_parameters_are_400_naming_the_problem(client, db):
    tenant = await new_tenant(db)
    for path, params, code, param in BAD_QUERIES:
        response = await client.get(path, params=params, headers=tenant.headers)
        assert response.status_code == 400, (params, response.text)
        body = response.json()
        assert body["error"] == code, params
        if param:
            assert body["param"] == param and f"`{param}`" in body["message"]


async def test_read_endpoints_need_a_key_with_the_right_scope(client, db):
    sender = await new_tenant(db, scopes=["messages.send"])
    for path, scope in [
        ("/v1/messages", "messages.read"),
        ("/v1/messages/msg_x", "messages.read"),
        ("/v1/stats", "messages.read"),
        ("/v1/credits", "credits.read"),
    ]:
        assert (await client.get(path)).status_code == 401
        response = await client.get(path, headers=sender.headers)
        assert response.status_code == 403 and response.json()["required_scope"] == scope
    reader = await new_tenant(db, "reader", scopes=["messages.read"])
    await credits.grant(db, reader.project_id, 1_000_000)
    _, (message_id,) = await new_request(db, reader.project_id, 1)
    for path in [f"/v1/messages/{message_id}/cancel", f"/v1/messages/{message_id}/archive"]:
        assert (await client.post(path)).status_code == 401
    response = await client.post(f"/v1/messages/{message_id}/cancel", headers=reader.headers)
    assert response.status_code == 403 and response.json()["required_scope"] == "messages.send"


async def test_credits_show_balance_and_page_the_ledger(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 12_500_000, note="welcome")
    await new_request(db, tenant.project_id, 2)
    body = (await client.get("/v1/credits", headers=tenant.headers)).json()
    assert body["balance_atomic"] == 12_500_000 - 2 * PRICE
    assert body["balance"] == "12.43" and body["currency"] == "USDC"
    assert [e["kind"] for e in body["ledger"]] == ["charge", "grant"]
    charge, grant = body["ledger"]
    assert charge["amount_atomic"] == -2 * PRICE and charge["request_id"].startswith("req_")
    assert grant["note"] == "welcome" and grant["balance_after_atomic"] == 12_500_000
    first = (await client.get("/v1/credits", params={"limit": "1"}, headers=tenant.headers)).json()
    assert [e["id"] for e in first["ledger"]] == [charge["id"]]
    rest = (
        await client.get(
            "/v1/credits",
            params={"limit": "1", "cursor": first["next_cursor"]},
            headers=tenant.headers,
        )
    ).json()
    assert [e["id"] for e in rest["ledger"]] == [grant["id"]] and rest["next_cursor"] is None


def cli(database_url: str, *args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(main, list(args), env={"SIMWIRE_DATABASE_URL": database_url})
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def test_cli_credits_grant_parses_usdc_exactly_and_show_prints_the_ledger(database_url):
    project_id = json.loads(cli(database_url, "project", "create", "shop", "--json"))["project_id"]
    assert "balance 12.5 USDC" in cli(database_url, "credits", "grant", project_id, "12.5")
    assert "balance 12.500001 USDC" in cli(database_url, "credits", "grant", project_id, "0.000001")
    for bad in ["0", "0.0000001", "-1", "1e3", "abc", "1.5.0"]:
        cli(database_url, "credits", "grant", project_id, bad, ok=False)
    assert "not_found" in cli(database_url, "credits", "grant", "prj_missing", "1", ok=False)
    shown = json.loads(cli(database_url, "credits", "show", project_id, "--json"))
    assert shown["balance_atomic"] == 12_500_001 and shown["balance"] == "12.500001"
    assert [e["amount_atomic"] for e in shown["ledger"]] == [1, 12_500_000]
    assert "balance: 12.500001 USDC" in cli(database_url, "credits", "show", project_id)


def test_cli_messages_lists_one_projects_messages(database_url):
    async def seed() -> tuple[str, list[str], str]:
        db = Database(database_url)
        try:
            a = await new_tenant(db, "a")
            b = await new_tenant(db, "b")
            await credits.grant(db, a.project_id, 1_000_000)
            await credits.grant(db, b.project_id, 1_000_000)
            _, out_ids = await new_request(db, a.project_id, 3)
            await set_fields(db, out_ids[0], status="delivered")
            in_id = await add_inbound(db, a.project_id, "AMAZON", None, SIM_A1)
            await new_request(db, b.project_id, 2)
            return a.project_id, out_ids, in_id
        finally:
            await db.dispose()

    project_id, out_ids, in_id = asyncio.run(seed())
    assert "--project" in cli(database_url, "messages", ok=False)
    listed = json.loads(cli(database_url, "messages", "--project", project_id, "--json"))
    assert [m["id"] for m in listed["data"]] == [in_id, *reversed(out_ids)]
    inbound = json.loads(
        cli(database_url, "messages", "--project", project_id, "--direction", "in", "--json")
    )
    assert [m["id"] for m in inbound["data"]] == [in_id] and inbound["data"][0]["from"] == "AMAZON"
    text = cli(database_url, "messages", "--project", project_id, "--status", "delivered")
    assert text.count("\n") == 1 and out_ids[0] in text
    limited = cli(database_url, "messages", "--project", project_id, "--limit", "2")
    assert limited.count("\n") == 2
    assert "status" in cli(
        database_url, "messages", "--project", project_id, "--status", "x", ok=False
    )
    assert "not_found" in cli(database_url, "messages", "--project", "prj_missing", ok=False)


def test_cursor_is_opaque_base64url_of_a_position():
    from app.services.reading import decode_cursor, encode_cursor

    for seq in (1, 7, 10**12):
        assert decode_cursor(encode_cursor(seq)) == seq
        assert "=" not in encode_cursor(seq)
