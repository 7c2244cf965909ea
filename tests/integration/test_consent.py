"""Recipient consent and sending limits on keyed sends, on both engines: STOP from a real phone
suppresses the sender (the next send is 422 and free, what was queued is canceled and
refunded), START lifts it, the automatic reply goes out once; the suppression list through the
API (tenant-isolated) and its CSV import; the project policy API with per-recipient limits and
high-cost destinations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from click.testing import CliRunner
from sqlalchemy import func, select

from app.api.app import create_app
from app.cli import main
from app.db.engine import Database
from app.db.models import Event, Message
from app.phone.radios.fake import FakeRadio
from app.services import consent, credits, devices, projects
from app.services.projects import create_key, set_policy
from app.settings import Settings
from tests.conftest import app_client
from tests.support.factories import TenantKeys, new_tenant
from tests.support.live import eventually, fast_settings, live_server, start_phone

RATE = 35_000  # one GSM-7 segment at the default 0.035 USDC
SUBSCRIBER = "+14155550123"
OTHER = "+14155550124"


async def send(
    http: httpx.AsyncClient, tenant: TenantKeys, to: str | list[str], **extra: object
) -> httpx.Response:
    return await http.post(
        "/v1/messages",
        json={"to": to, "message": "Your order shipped", **extra},
        headers=tenant.headers,
    )


async def outbound_count(db: Database, project_id: str) -> int:
    async with db.sessions() as session:
        return int(
            (
                await session.execute(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.project_id == project_id, Message.direction == "out")
                )
            ).scalar_one()
        )


async def message_row(db: Database, message_id: str) -> Message:
    async with db.sessions() as session:
        return (await session.execute(select(Message).where(Message.id == message_id))).scalar_one()


async def suppressed(http: httpx.AsyncClient, tenant: TenantKeys) -> dict[str, str]:
    body = (await http.get("/v1/suppressions", headers=tenant.headers)).json()
    return {row["number"]: row["reason"] for row in body["data"]}


async def test_stop_from_a_phone_refuses_the_next_send_for_free_and_start_lifts_it(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    paired = await devices.pair_device(db, tenant.project_id)
    async with (
        live_server(fast_settings(settings), db) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        phone = await start_phone(server, paired.token, tmp_path / "phone.db")
        try:
            # Pinned to a SIM this phone does not have, so it waits in the queue.
            waiting = await send(http, tenant, SUBSCRIBER, sim="7")
            assert waiting.status_code == 202, waiting.text
            waiting_id = waiting.json()["messages"][0]["id"]
            other = (await send(http, tenant, OTHER, sim="7")).json()["messages"][0]["id"]

            await phone.radio.receive("+1 (415) 555-0123", " Stop! ")
            assert await eventually(lambda: suppressed(http, tenant)) == {SUBSCRIBER: "opt_out"}
            canceled = await message_row(db, waiting_id)
            assert canceled.status == "canceled" and canceled.refunded
            assert (await message_row(db, other)).status == "queued"
            assert await credits.ledger_sum(db, tenant.project_id) == (9 * RATE, 9 * RATE)
            async with db.sessions() as session:
                events = (
                    (
                        await session.execute(
                            select(Event.type).where(
                                Event.project_id == tenant.project_id,
                                Event.type == "message.canceled",
                            )
                        )
                    )
                    .scalars()
                    .all()
                )
            assert events == ["message.canceled"]

            before = await outbound_count(db, tenant.project_id)
            refused = await send(http, tenant, SUBSCRIBER)
            assert refused.status_code == 422
            assert refused.json()["error"] == "recipient_opted_out"
            assert refused.json()["numbers"] == [SUBSCRIBER]
            mixed = await send(http, tenant, [OTHER, "(415) 555-0123"], region="US")
            assert mixed.status_code == 422 and mixed.json()["numbers"] == [SUBSCRIBER]
            assert await outbound_count(db, tenant.project_id) == before
            assert await credits.ledger_sum(db, tenant.project_id) == (9 * RATE, 9 * RATE)

            await phone.radio.receive(SUBSCRIBER, "start")

            async def lifted() -> bool:
                return await suppressed(http, tenant) == {}

            await eventually(lifted)
            again = await send(http, tenant, SUBSCRIBER)
            assert again.status_code == 202, again.text
            await eventually(lambda: [s for s in phone.radio.sent if s.to == SUBSCRIBER])
        finally:
            await phone.stop()


async def test_the_automatic_reply_answers_stop_and_help_once_for_free(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    reply = "You will get no more messages. Reply START to resubscribe."
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    live = fast_settings(settings, opt_out_reply=reply)
    async with live_server(live, db) as server:
        phone = await start_phone(server, paired.token, tmp_path / "phone.db")
        radio: FakeRadio = phone.radio
        try:
            await radio.receive(SUBSCRIBER, "STOP")
            await eventually(lambda: [s for s in radio.sent if s.to == SUBSCRIBER])
            await radio.receive(SUBSCRIBER, "unsubscribe")
            await radio.receive(OTHER, "Help")
            await eventually(lambda: [s for s in radio.sent if s.to == OTHER])

            async def both_stored() -> bool:
                async with db.sessions() as session:
                    count = (
                        await session.execute(
                            select(func.count())
                            .select_from(Message)
                            .where(Message.direction == "in")
                        )
                    ).scalar_one()
                return count == 3

            await eventually(both_stored)
        finally:
            await phone.stop()
    to_subscriber = [s for s in radio.sent if s.to == SUBSCRIBER]
    assert [s.body for s in to_subscriber] == [reply]
    [help_reply] = [s for s in radio.sent if s.to == OTHER]
    assert help_reply.body == consent.HELP_REPLY and "STOP" in help_reply.body
    async with db.sessions() as session:
        replies = (
            (await session.execute(select(Message).where(Message.direction == "out")))
            .scalars()
            .all()
        )
    assert {(m.billing, m.price_atomic, m.status) for m in replies} == {("system", 0, "delivered")}
    assert {m.sim_id for m in replies} == {replies[0].sim_id} and replies[0].sim_id
    assert await credits.ledger_sum(db, tenant.project_id) == (0, 0)


async def test_a_suppression_by_the_api_cancels_queued_messages_and_is_idempotent(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 5 * RATE)
    queued = (await send(client, tenant, [SUBSCRIBER, OTHER])).json()["messages"]
    assert await credits.ledger_sum(db, tenant.project_id) == (3 * RATE, 3 * RATE)

    created = await client.post(
        "/v1/suppressions", json={"number": SUBSCRIBER}, headers=tenant.headers
    )
    assert created.status_code == 201, created.text
    entry = created.json()
    assert entry["number"] == SUBSCRIBER and entry["reason"] == "manual"
    assert (await message_row(db, queued[0]["id"])).status == "canceled"
    assert (await message_row(db, queued[1]["id"])).status == "queued"
    assert await credits.ledger_sum(db, tenant.project_id) == (4 * RATE, 4 * RATE)

    repeat = await client.post(
        "/v1/suppressions",
        json={"number": "+1 415 555 0123", "reason": "bounced"},
        headers=tenant.headers,
    )
    assert repeat.status_code == 200 and repeat.json() == entry
    assert await credits.ledger_sum(db, tenant.project_id) == (4 * RATE, 4 * RATE)

    for body, code in [
        ({"number": "hello"}, "invalid_number"),
        ({"number": SUBSCRIBER, "reason": "nope"}, "invalid_reason"),
        ({"number": SUBSCRIBER, "why": "x"}, "unknown_field"),
        ({}, "invalid_body"),
    ]:
        bad = await client.post("/v1/suppressions", json=body, headers=tenant.headers)
        assert bad.status_code == 400 and bad.json()["error"] == code, body


async def test_suppressions_belong_to_one_project(client, db):
    owner = await new_tenant(db, "owner")
    issued = await create_key(db, owner.project_id, "sender", ["messages.send"])
    sender = TenantKeys(owner.project_id, issued.raw, issued.key.id)
    stranger = await new_tenant(db, "stranger")
    for tenant in (owner, stranger):
        await credits.grant(db, tenant.project_id, 5 * RATE)
    added = await client.post(
        "/v1/suppressions", json={"number": SUBSCRIBER}, headers=owner.headers
    )
    assert added.status_code == 201

    assert (await send(client, stranger, SUBSCRIBER)).status_code == 202
    assert await suppressed(client, stranger) == {}
    gone = await client.delete(f"/v1/suppressions/{SUBSCRIBER}", headers=stranger.headers)
    assert gone.status_code == 404
    assert (await send(client, owner, SUBSCRIBER)).json()["error"] == "recipient_opted_out"

    # messages.send reads and adds; lifting one takes admin.
    assert (await client.get("/v1/suppressions", headers=sender.headers)).status_code == 200
    refused = await client.delete(f"/v1/suppressions/{SUBSCRIBER}", headers=sender.headers)
    assert refused.status_code == 403
    lifted = await client.delete(f"/v1/suppressions/{SUBSCRIBER}", headers=owner.headers)
    assert lifted.status_code == 200 and lifted.json()["number"] == SUBSCRIBER
    assert (await send(client, owner, SUBSCRIBER)).status_code == 202


async def test_the_list_pages_newest_first_and_filters_by_number(client, db):
    tenant = await new_tenant(db)
    await client.patch("/v1/project/policy", json={"default_region": "US"}, headers=tenant.headers)
    numbers = [f"+1415555020{n}" for n in range(3)]
    for number in numbers:
        await client.post("/v1/suppressions", json={"number": number}, headers=tenant.headers)

    first = (await client.get("/v1/suppressions?limit=2", headers=tenant.headers)).json()
    assert [row["number"] for row in first["data"]] == numbers[:0:-1]
    rest = await client.get(
        f"/v1/suppressions?limit=2&cursor={first['next_cursor']}", headers=tenant.headers
    )
    assert [row["number"] for row in rest.json()["data"]] == numbers[:1]
    assert rest.json()["next_cursor"] is None
    national = await client.get(
        "/v1/suppressions", params={"number": "(415) 555-0201"}, headers=tenant.headers
    )
    assert [row["number"] for row in national.json()["data"]] == [numbers[1]]


async def test_csv_import_normalizes_numbers_reports_lines_and_cancels_queued(
    client, db, database_url, tmp_path
):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 2 * RATE)
    await client.patch("/v1/project/policy", json={"default_region": "GB"}, headers=tenant.headers)
    queued = (await send(client, tenant, "+447400123456")).json()["messages"][0]["id"]
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        "Number,reason\n"
        "07400 123456,\n"  # national in GB: the queued message's number
        f"{SUBSCRIBER},bounced\n"
        "+447400123456,manual\n"  # the first line again
        "not a number,\n"
        f"{OTHER},later\n"
        "999,\n",  # an emergency number is no recipient
        encoding="utf-8",
    )

    result = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["suppressions", "import", tenant.project_id, str(csv_file)],
        env={"SIMWIRE_DATABASE_URL": database_url},
    )

    assert result.exit_code == 0, result.output
    assert "imported=2 skipped=1 invalid=3" in result.output
    assert "line 5:" in result.output and "line 6:" in result.output
    assert "line 7:" in result.output
    assert await suppressed(client, tenant) == {"+447400123456": "manual", SUBSCRIBER: "bounced"}
    assert (await message_row(db, queued)).status == "canceled"
    assert await credits.ledger_sum(db, tenant.project_id) == (2 * RATE, 2 * RATE)

    again = await asyncio.to_thread(
        CliRunner().invoke,
        main,
        ["suppressions", "import", tenant.project_id, str(csv_file)],
        env={"SIMWIRE_DATABASE_URL": database_url},
    )
    assert "imported=0 skipped=3 invalid=3" in again.output


async def test_policy_reads_with_any_key_and_changes_with_admin(client, db):
    tenant = await new_tenant(db)
    issued = await create_key(db, tenant.project_id, "reader", ["messages.read"])
    read_key = TenantKeys(tenant.project_id, issued.raw, issued.key.id)

    default = await client.get("/v1/project/policy", headers=read_key.headers)
    assert default.status_code == 200
    assert default.json() == {
        "default_region": None,
        "allowed_categories": [],
        "blocked_terms": [],
        "allowed_domains": [],
        "credits_low_threshold_atomic": None,
        "recipient_per_hour": None,
        "recipient_per_day": None,
        "allow_high_cost_destinations": False,
        "updated_at": None,
    }
    change = {
        "default_region": "gb",
        "allowed_categories": ["alcohol"],
        "recipient_per_hour": 3,
        "recipient_per_day": 10,
        "credits_low_threshold_atomic": 500_000,
        "allow_high_cost_destinations": True,
    }
    forbidden = await client.patch("/v1/project/policy", json=change, headers=read_key.headers)
    assert forbidden.status_code == 403
    changed = await client.patch("/v1/project/policy", json=change, headers=tenant.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json() | {"updated_at": None} == {
        **default.json(),
        **change,
        "default_region": "GB",
    }
    partly = await client.patch(
        "/v1/project/policy", json={"recipient_per_hour": None}, headers=tenant.headers
    )
    assert partly.json()["recipient_per_hour"] is None and partly.json()["recipient_per_day"] == 10
    assert (await client.get("/v1/project/policy", headers=tenant.headers)).json() == partly.json()

    for body, param in [
        ({"recipient_per_hour": 0}, "recipient_per_hour"),
        ({"recipient_per_day": "5"}, "recipient_per_day"),
        ({"recipient_per_day": True}, "recipient_per_day"),
        ({"credits_low_threshold_atomic": -1}, "credits_low_threshold_atomic"),
        ({"default_region": "USA"}, "default_region"),
        ({"allowed_categories": ["phishing"]}, "allowed_categories"),
        ({"allow_high_cost_destinations": "yes"}, "allow_high_cost_destinations"),
        ({"blocked_terms": ["  "]}, "blocked_terms"),
    ]:
        bad = await client.patch("/v1/project/policy", json=body, headers=tenant.headers)
        assert bad.status_code == 400, body
        assert bad.json()["error"] == "invalid_policy" and bad.json()["param"] == param, body
    unknown = await client.patch(
        "/v1/project/policy", json={"recipients_per_hour": 3}, headers=tenant.headers
    )
    assert unknown.status_code == 400 and unknown.json()["error"] == "unknown_field"


async def test_a_project_limit_per_recipient_refuses_before_any_charge(settings, db):
    limited = settings.model_copy(update={"rate_limits": True})
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    async with app_client(create_app(limited, db)) as http:
        patched = await http.patch(
            "/v1/project/policy", json={"recipient_per_hour": 2}, headers=tenant.headers
        )
        assert patched.status_code == 200
        for _ in range(2):
            assert (await send(http, tenant, SUBSCRIBER)).status_code == 202
        refused = await send(http, tenant, [OTHER, SUBSCRIBER])
        assert refused.status_code == 429
        body = refused.json()
        assert body["error"] == "recipient_rate_limited" and body["number"] == SUBSCRIBER
        assert body["limit"] == 2 and body["window"] == "hour"
        assert 3590 <= int(refused.headers["Retry-After"]) <= 3600
        assert await credits.ledger_sum(db, tenant.project_id) == (8 * RATE, 8 * RATE)
        assert (await send(http, tenant, OTHER)).status_code == 202
        # Requests to one number that commit together count each other.
        together = await asyncio.gather(*(send(http, tenant, "+14155550125") for _ in range(3)))
        assert sorted(r.status_code for r in together) == [202, 202, 429]

        await http.patch(
            "/v1/project/policy", json={"recipient_per_hour": None}, headers=tenant.headers
        )
        assert (await send(http, tenant, SUBSCRIBER)).status_code == 202
    # With SIMWIRE_RATE_LIMITS=false (the default fixture) the policy's limit is not applied.
    await set_policy(db, tenant.project_id, recipient_per_hour=1)
    async with app_client(create_app(settings, db)) as http:
        assert (await send(http, tenant, SUBSCRIBER)).status_code == 202


async def test_high_cost_destinations_are_refused_unless_the_policy_allows_them(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 5 * RATE)
    quote = await client.post(
        "/v1/quotes",
        json={"to": ["+19005550100", SUBSCRIBER], "message": "hi"},
        headers=tenant.headers,
    )
    assert quote.status_code == 200, quote.text
    [blocked] = quote.json()["blocked"]
    assert blocked["error"] == "destination_not_allowed" and blocked["to"] == "+19005550100"
    assert "premium-rate" in blocked["message"]
    refused = await send(client, tenant, ["+448712345678"])
    assert refused.status_code == 422
    assert refused.json() | {"message": ""} == refused.json() | {
        "error": "destination_not_allowed",
        "number": "+448712345678",
        "kind": "premium_rate",
        "message": "",
    }
    assert (await send(client, tenant, "+445512345678")).json()["kind"] == "uan"
    assert await credits.ledger_sum(db, tenant.project_id) == (5 * RATE, 5 * RATE)

    await client.patch(
        "/v1/project/policy", json={"allow_high_cost_destinations": True}, headers=tenant.headers
    )
    allowed = await client.post(
        "/v1/quotes", json={"to": "+19005550100", "message": "hi"}, headers=tenant.headers
    )
    assert allowed.json()["blocked"] == []
    assert (await send(client, tenant, "+448712345678")).status_code == 202


async def test_keywords_over_the_inbound_batch_route_and_start_keeps_the_projects_own_entries(
    client, db
):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    await client.patch("/v1/project/policy", json={"default_region": "US"}, headers=tenant.headers)
    await client.post(
        "/v1/suppressions", json={"number": OTHER, "reason": "manual"}, headers=tenant.headers
    )

    async def inbound(*messages: tuple[str, str, str]) -> None:
        response = await client.post(
            "/v1/phone/inbound",
            json={"messages": [{"id": i, "address": a, "body": b} for i, a, b in messages]},
            headers={"Authorization": f"Bearer {paired.token}"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["stored"] == len(messages)

    await inbound(
        ("p1", SUBSCRIBER, "QUIT"),
        ("p2", "(415) 555-0125", "arrêt"),  # national, read in the project's region
        ("p3", "AMAZON", "STOP"),  # no phone number: nothing to suppress
        ("p4", "+14155550126", "please don't stop"),  # a sentence, not a keyword
    )
    assert await suppressed(client, tenant) == {
        SUBSCRIBER: "opt_out",
        "+14155550125": "opt_out",
        OTHER: "manual",
    }
    await inbound(("p5", SUBSCRIBER, "UNSTOP"), ("p6", OTHER, "START"))
    assert await suppressed(client, tenant) == {"+14155550125": "opt_out", OTHER: "manual"}


async def test_the_policy_command_sets_limits_threshold_and_high_cost(db, database_url):
    tenant = await new_tenant(db)

    async def policy(*options: str) -> tuple[int, str]:
        result = await asyncio.to_thread(
            CliRunner().invoke,
            main,
            ["project", "policy", tenant.project_id, *options],
            env={"SIMWIRE_DATABASE_URL": database_url},
        )
        return result.exit_code, result.output

    code, output = await policy(
        "--recipient-per-hour", "3", "--recipient-per-day", "12",
        "--credits-low-threshold", "5.00", "--allow-high-cost",
    )  # fmt: skip
    assert code == 0, output
    assert "credits_low=5 " in output and "recipient_per_hour=3" in output
    assert "recipient_per_day=12" in output and "high_cost=allowed" in output
    stored = await projects.get_policy(db, tenant.project_id)
    assert (stored.recipient_per_hour, stored.recipient_per_day) == (3, 12)
    assert stored.credits_low_threshold_atomic == 5_000_000
    assert stored.allow_high_cost_destinations

    code, output = await policy("--recipient-per-hour", "off", "--no-allow-high-cost")
    assert code == 0 and "recipient_per_hour=off" in output and "recipient_per_day=12" in output
    assert "high_cost=refused" in output and "credits_low=5 " in output
    code, output = await policy("--recipient-per-day", "0")
    assert code != 0 and "invalid_policy" in output
    code, output = await policy("--credits-low-threshold", "lots")
    assert code != 0 and "--credits-low-threshold" in output
