"""The dashboard's pages doing their work, over HTTP on both engines: an agent's claim page
(defaults, a wrong code, a member who may not claim, the claim), pending agents listed for the
organizations whose owners or admins opened their links (until claimed, locked or expired, then
purged), the overview's balance and spend windows, messages with filters and a
detail page, pairing a phone (QR and token once), SIM locks and revoking, rotating a key, a
webhook added, tested and its delivery listed, and the credits page with the x402 top-up
address."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import func, select

from app.api.app import create_app
from app.db.engine import Database
from app.db.models import AgentClaimOpening
from app.domain import pricing
from app.domain.errors import Unauthorized
from app.services import credits, devices, projects, webhooks
from app.services.devices import ReportedSim
from app.services.retention import Retention, purge
from app.settings import Settings
from tests.support.accounts import install_clock, invite_code
from tests.support.dashboard import csrf_of, dashboard_register
from tests.support.live import fast_settings, live_server
from tests.support.receiver import running_receiver


@pytest.fixture
def app(settings: Settings, db: Database) -> Litestar:
    return create_app(settings, db)


def _client(app: Litestar | str) -> httpx.AsyncClient:
    if isinstance(app, str):
        return httpx.AsyncClient(base_url=app)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://simwire.test")


@pytest.fixture
async def owner(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as http:
        yield http


async def _project(http: httpx.AsyncClient, db: Database, email: str = "o@example.com") -> str:
    registered = await dashboard_register(http, email, await invite_code(db))
    assert registered.status_code == 303, registered.text
    page = await http.get("/dashboard/projects")
    created = await http.post(
        "/dashboard/projects", data={"csrf_token": csrf_of(page), "name": "shop"}
    )
    assert created.status_code == 201, created.text
    # The new project's keys page, with its first key shown once.
    assert 'id="new-key" class="secret">sw_' in created.text
    found = re.search(
        r'<a href="/dashboard/p/(prj_[0-9a-f]+)">Go to its overview</a>', created.text
    )
    assert found, created.text
    return found.group(1)


def _checked(page: httpx.Response, scope: str) -> bool:
    tag = re.search(rf'<input type="checkbox" id="grant-{re.escape(scope)}"[^>]*>', page.text)
    assert tag, scope
    return "checked" in tag.group(0)


async def test_an_agent_is_claimed_on_its_claim_page(
    app: Litestar, owner: httpx.AsyncClient, db: Database
) -> None:
    project_id = await _project(owner, db)
    registered = await owner.post(
        "/v1/agents/register",
        json={"name": "order-bot", "description": "Texts customers", "metadata": {"v": "1"}},
    )
    assert registered.status_code == 201, registered.text
    agent = registered.json()
    claim_path = "/dashboard/claim/" + agent["claim_url"].rsplit("/", 1)[1]

    async with _client(app) as stranger:
        away = await stranger.get(claim_path)
        assert away.status_code == 303
        assert away.headers["location"] == f"/dashboard/signin?next={claim_path}"

    page = await owner.get(claim_path)
    assert page.status_code == 200
    assert "order-bot" in page.text and "Texts customers" in page.text
    assert _checked(page, "messages.read") and _checked(page, "numbers.read")
    for optional in ("messages.send", "numbers.lock", "webhooks.manage", "credits.read"):
        assert not _checked(page, optional)
    assert "keys.manage" not in page.text  # never offered

    wrong = await owner.post(
        claim_path,
        data={
            "csrf_token": csrf_of(page),
            "verification_code": "AAAAAAAA",
            "project_id": project_id,
            "scopes": ["messages.read"],
        },
    )
    assert wrong.status_code == 422
    assert "4 tries left" in wrong.text

    # A member of the organization reads the page but may not claim.
    organization_id = (await projects.get_project(db, project_id)).organization_id
    async with _client(app) as member:
        await dashboard_register(
            member, "m@example.com", await invite_code(db, organization_id, "member")
        )
        seen = await member.get(claim_path)
        assert "you manage none" in seen.text
        refused = await member.post(
            claim_path,
            data={
                "csrf_token": csrf_of(seen),
                "verification_code": agent["verification_code"],
                "project_id": project_id,
            },
        )
        assert refused.status_code == 403

    claimed = await owner.post(
        claim_path,
        data={
            "csrf_token": csrf_of(page),
            "verification_code": agent["verification_code"].lower(),
            "project_id": project_id,
            "scopes": ["messages.read", "numbers.read", "credits.read"],
        },
    )
    assert claimed.status_code == 303, claimed.text
    agents_page = await owner.get(claimed.headers["location"])
    assert "is claimed" in agents_page.text and "order-bot" in agents_page.text
    key = {"Authorization": f"Bearer {agent['api_key']}"}
    scopes = (await owner.get("/v1/project", headers=key)).json()["scopes"]
    assert sorted(scopes) == ["credits.read", "messages.read", "numbers.read"]

    agent_id = re.search(r'data-agent="([^"]+)"', agents_page.text).group(1)  # type: ignore[union-attr]
    revoked = await owner.post(
        f"/dashboard/p/{project_id}/agents/{agent_id}/revoke",
        data={"csrf_token": csrf_of(agents_page)},
    )
    assert revoked.status_code == 303
    assert (await owner.get("/v1/project", headers=key)).status_code == 401
    again = await owner.get(claim_path)
    assert 'data-claim-status="claimed"' in again.text


async def _wrong_code(
    client: httpx.AsyncClient, claim_path: str, csrf: str, project_id: str
) -> httpx.Response:
    """A claim tried with a code that is never right."""
    data = {"csrf_token": csrf, "verification_code": "AAAAAAAA", "project_id": project_id}
    return await client.post(claim_path, data=data)


def _pending_row(page: httpx.Response, agent_id: str) -> str | None:
    found = re.search(
        rf'<tr data-pending-agent="{re.escape(agent_id)}">(.*?)</tr>', page.text, re.S
    )
    return found.group(1) if found else None


async def _openings(db: Database) -> int:
    async with db.reading() as session:
        return int(
            (
                await session.execute(select(func.count()).select_from(AgentClaimOpening))
            ).scalar_one()
        )


async def test_an_agent_is_pending_for_the_organizations_that_opened_its_link(
    app: Litestar, owner: httpx.AsyncClient, db: Database
) -> None:
    clock = install_clock(app)
    project_id = await _project(owner, db)
    agents_path = f"/dashboard/p/{project_id}/agents"
    organization_id = (await projects.get_project(db, project_id)).organization_id

    async def agent(name: str) -> dict:
        registered = await owner.post(
            "/v1/agents/register", json={"name": name, "description": f"{name} waits"}
        )
        assert registered.status_code == 201, registered.text
        body = registered.json()
        body["path"] = "/dashboard/claim/" + body["claim_url"].rsplit("/", 1)[1]
        return body

    opened, unopened, by_member, to_lock = [
        await agent(name) for name in ("opened-bot", "unopened-bot", "member-bot", "lock-bot")
    ]
    empty = await owner.get(agents_path)
    assert "No pending agent." in empty.text

    # The owner opens two links; a member of the organization opens another (members do not
    # claim, so nothing is pending for them); nobody opens the fourth.
    claim_page = await owner.get(opened["path"])
    await owner.get(to_lock["path"])
    async with _client(app) as member:
        await dashboard_register(
            member, "m@example.com", await invite_code(db, organization_id, "member")
        )
        assert (await member.get(by_member["path"])).status_code == 200
        members_view = await member.get(agents_path)
        assert "owners and admins" in members_view.text
        assert _pending_row(members_view, opened["agent_id"]) is None
    wrong = await _wrong_code(owner, opened["path"], csrf_of(claim_page), project_id)
    assert wrong.status_code == 422
    for _ in range(5):
        await _wrong_code(owner, to_lock["path"], csrf_of(claim_page), project_id)

    listed = await owner.get(agents_path)
    row = _pending_row(listed, opened["agent_id"])
    assert row is not None, listed.text
    assert "opened-bot waits" in row and "Grace Hopper" in row
    assert "pending" in row and "4 tries left" in row
    assert f'href="{opened["path"]}"' in row
    locked_row = _pending_row(listed, to_lock["agent_id"])
    assert locked_row is not None and "locked" in locked_row and "href=" not in locked_row
    assert _pending_row(listed, unopened["agent_id"]) is None
    assert _pending_row(listed, by_member["agent_id"]) is None

    # An admin of the organization sees what the owner opened.
    async with _client(app) as admin:
        await dashboard_register(
            admin, "a@example.com", await invite_code(db, organization_id, "admin")
        )
        assert _pending_row(await admin.get(agents_path), opened["agent_id"]) is not None

    # Another organization sees none of it until one of its owners is handed a link; a code
    # tried into its own project (no page opened) makes that agent pending there too.
    async with _client(app) as bob:
        bobs = await _project(bob, db, "bob@example.com")
        bobs_agents = f"/dashboard/p/{bobs}/agents"
        theirs = await bob.get(bobs_agents)
        assert "No pending agent." in theirs.text
        assert all(
            _pending_row(theirs, a["agent_id"]) is None
            for a in (opened, unopened, by_member, to_lock)
        )
        tried = await _wrong_code(bob, unopened["path"], csrf_of(theirs), bobs)
        assert tried.status_code == 422
        theirs = await bob.get(bobs_agents)
        assert _pending_row(theirs, unopened["agent_id"]) is not None
        assert _pending_row(theirs, opened["agent_id"]) is None
    assert _pending_row(await owner.get(agents_path), unopened["agent_id"]) is None

    # Claimed: no longer pending, listed with the claimed agents.
    claimed = await owner.post(
        opened["path"],
        data={
            "csrf_token": csrf_of(claim_page),
            "verification_code": opened["verification_code"],
            "project_id": project_id,
        },
    )
    assert claimed.status_code == 303, claimed.text
    after = await owner.get(agents_path)
    assert _pending_row(after, opened["agent_id"]) is None
    assert f'data-agent="{opened["agent_id"]}"' in after.text

    # Expired: gone from the list at once; the purge a day later takes the registrations and
    # every organization's openings of them.
    clock.advance(hours=72)
    expired = await owner.get(agents_path)
    assert expired.status_code == 200
    assert _pending_row(expired, to_lock["agent_id"]) is None
    assert "No pending agent." in expired.text
    assert await _openings(db) == 2  # lock-bot's (this organization) and unopened-bot's (Bob's)
    swept = await purge(db, Retention(0, 0, 0, 0, 0), clock.now + timedelta(hours=24))
    assert swept.agent_registrations_deleted == 3
    assert await _openings(db) == 0


async def test_messages_are_sent_listed_filtered_and_shown(
    owner: httpx.AsyncClient, db: Database
) -> None:
    project_id = await _project(owner, db)
    await credits.grant(db, project_id, 1_000_000)
    form = await owner.get(f"/dashboard/p/{project_id}/send")
    sent = await owner.post(
        f"/dashboard/p/{project_id}/send",
        data={
            "csrf_token": csrf_of(form),
            "to": "+14155550101\n+14155550102",
            "message": "Pickup at 5",
            "tag": "orders",
        },
    )
    assert sent.status_code == 303, sent.text
    listed = await owner.get(sent.headers["location"])
    assert listed.text.count('data-message="msg_') == 2

    queued = await owner.get(
        f"/dashboard/p/{project_id}/messages", params={"status": "queued", "to": "+14155550102"}
    )
    ids = re.findall(r'data-message="(msg_[^"]+)"', queued.text)
    assert len(ids) == 1
    assert not re.findall(
        r'data-message="',
        (await owner.get(f"/dashboard/p/{project_id}/messages?status=delivered")).text,
    )
    assert (await owner.get(f"/dashboard/p/{project_id}/messages?tag=other")).text.count(
        'data-message="'
    ) == 0
    bad = await owner.get(f"/dashboard/p/{project_id}/messages?status=nonsense")
    assert bad.status_code == 400

    detail = await owner.get(f"/dashboard/p/{project_id}/messages/{ids[0]}")
    assert detail.status_code == 200
    assert "Pickup at 5" in detail.text and "+14155550102" in detail.text
    live = await owner.get(f"/dashboard/p/{project_id}/messages/{ids[0]}/live")
    assert 'data-status="queued"' in live.text
    overview = await owner.get(f"/dashboard/p/{project_id}/live")
    assert 'data-figure="spend-24h"' in overview.text

    # Screening and pricing are the API's: an emergency number is refused, nothing charged.
    balance = (await credits.project_ledger(db, project_id)).balance_atomic
    blocked = await owner.post(
        f"/dashboard/p/{project_id}/send",
        data={"csrf_token": csrf_of(form), "to": "911", "message": "help"},
    )
    assert blocked.status_code in (400, 422)
    assert (await credits.project_ledger(db, project_id)).balance_atomic == balance


def _figure(page: httpx.Response, name: str) -> str:
    found = re.search(rf'data-figure="{name}">([^<]+)<', page.text)
    assert found, name
    return found.group(1)


async def test_the_overview_shows_the_balance_and_the_spend_of_24_hours_and_7_days(
    app: Litestar, owner: httpx.AsyncClient, db: Database
) -> None:
    clock = install_clock(app)
    project_id = await _project(owner, db)
    await credits.grant(db, project_id, 1_000_000)
    form = await owner.get(f"/dashboard/p/{project_id}/send")
    sent = await owner.post(
        f"/dashboard/p/{project_id}/send",
        data={"csrf_token": csrf_of(form), "to": "+14155550101\n+14155550102", "message": "Hi"},
    )
    assert sent.status_code == 303, sent.text
    balance = (await credits.project_ledger(db, project_id, limit=1)).balance_atomic
    spent = 1_000_000 - balance
    assert spent > 0

    today = await owner.get(f"/dashboard/p/{project_id}/live")
    assert _figure(today, "balance") == f"{pricing.format_usdc(balance)} USDC"
    assert _figure(today, "spend-24h") == f"{pricing.format_usdc(spent)} USDC"
    assert _figure(today, "spend-7d") == f"{pricing.format_usdc(spent)} USDC"
    # Two days on, the charge has left the 24-hour window but not the 7-day one.
    clock.advance(days=2)
    later = await owner.get(f"/dashboard/p/{project_id}")
    assert _figure(later, "spend-24h") == f"{pricing.format_usdc(0)} USDC"
    assert _figure(later, "spend-7d") == f"{pricing.format_usdc(spent)} USDC"
    clock.advance(days=6)
    gone = await owner.get(f"/dashboard/p/{project_id}/live")
    assert _figure(gone, "spend-7d") == f"{pricing.format_usdc(0)} USDC"
    assert _figure(gone, "balance") == f"{pricing.format_usdc(balance)} USDC"


async def test_pairing_shows_the_qr_and_token_once_then_locks_and_revokes(
    owner: httpx.AsyncClient, db: Database
) -> None:
    project_id = await _project(owner, db)
    phones = await owner.get(f"/dashboard/p/{project_id}/phones")
    paired = await owner.post(
        f"/dashboard/p/{project_id}/phones",
        data={"csrf_token": csrf_of(phones), "name": "front desk"},
    )
    assert paired.status_code == 200
    assert 'src="data:image/png;base64,' in paired.text
    token = re.search(r'id="device-token" class="secret">(sw_dev_[0-9a-f]+)<', paired.text)
    assert token
    device = await devices.authenticate_device(db, token.group(1))
    assert device.name == "front desk"
    state = await owner.get(f"/dashboard/p/{project_id}/phones/{device.id}/live")
    assert 'data-online="false"' in state.text

    await devices.report_sims(db, device, [ReportedSim(slot=0, number="+15550100000")])
    listing = await owner.get(f"/dashboard/p/{project_id}/phones")
    assert token.group(1) not in listing.text
    sim_id = re.search(r"<code>(sim_[0-9a-f]+)</code>", listing.text).group(1)  # type: ignore[union-attr]
    locked = await owner.post(
        f"/dashboard/p/{project_id}/sims/{sim_id}/lock",
        data={"csrf_token": csrf_of(listing), "locked": "1"},
    )
    assert locked.status_code == 303
    inventory = await devices.sim_inventory(db, project_id, 60)
    assert [sim.locked for sim in inventory.known_sims] == [True]

    revoked = await owner.post(
        f"/dashboard/p/{project_id}/phones/{device.id}/revoke",
        data={"csrf_token": csrf_of(listing)},
    )
    assert revoked.status_code == 303
    with pytest.raises(Unauthorized):
        await devices.authenticate_device(db, token.group(1))


async def test_rotating_a_key_shows_the_new_one_and_stops_the_old(
    owner: httpx.AsyncClient, db: Database
) -> None:
    project_id = await _project(owner, db)
    page = await owner.get(f"/dashboard/p/{project_id}/keys")
    made = await owner.post(
        f"/dashboard/p/{project_id}/keys",
        data={"csrf_token": csrf_of(page), "name": "ci", "scopes": ["messages.read"]},
    )
    old = re.search(r'id="new-key" class="secret">([^<]+)<', made.text).group(1)  # type: ignore[union-attr]
    key_id = next(k.id for k in await projects.list_keys(db, project_id) if k.name == "ci")
    rotated = await owner.post(
        f"/dashboard/p/{project_id}/keys/{key_id}/rotate", data={"csrf_token": csrf_of(page)}
    )
    assert rotated.status_code == 201
    new = re.search(r'id="new-key" class="secret">([^<]+)<', rotated.text).group(1)  # type: ignore[union-attr]
    assert new != old
    assert (await owner.get("/v1/project", headers={"X-Api-Key": old})).status_code == 401
    after = await owner.get("/v1/project", headers={"X-Api-Key": new})
    assert after.json()["scopes"] == ["messages.read"]


async def test_a_webhook_is_added_tested_and_its_delivery_listed(
    settings: Settings, db: Database
) -> None:
    async with (
        running_receiver() as receiver,
        live_server(fast_settings(settings), db) as server,
        _client(server.url) as http,
    ):
        project_id = await _project(http, db)
        page = await http.get(f"/dashboard/p/{project_id}/webhooks")
        added = await http.post(
            f"/dashboard/p/{project_id}/webhooks",
            data={
                "csrf_token": csrf_of(page),
                "url": receiver.url,
                "description": "orders",
                "events": ["message.delivered", "webhook.test"],
            },
        )
        assert added.status_code == 201
        assert re.search(r'id="webhook-secret" class="secret">whsec_', added.text)
        (hook,) = await webhooks.list_webhooks(db, project_id)
        assert hook.events == ["message.delivered", "webhook.test"]
        tested = await http.post(
            f"/dashboard/p/{project_id}/webhooks/{hook.id}/test",
            data={"csrf_token": csrf_of(page)},
        )
        assert tested.status_code == 303
        assert [r.json["type"] for r in receiver.received] == ["webhook.test"]
        deliveries = await http.get(tested.headers["location"])
        assert "webhook.test" in deliveries.text and ">200" in deliveries.text


async def test_the_credits_page_shows_the_ledger_and_the_topup_address(
    settings: Settings, db: Database
) -> None:
    pay_to = "0x" + "ab" * 20
    paying = settings.model_copy(
        update={
            "chain_rpc_url": "http://127.0.0.1:9",
            "chain_id": 84532,
            "usdc_address": "0x" + "cd" * 20,
            "pay_to": pay_to,
        }
    )
    async with _client(create_app(paying, db)) as http:
        project_id = await _project(http, db)
        await credits.grant(db, project_id, 2_500_000, note="welcome")
        page = await http.get(f"/dashboard/p/{project_id}/credits")
    assert page.status_code == 200
    assert "2.5 USDC" in page.text and "grant" in page.text and "welcome" in page.text
    assert f'id="pay-to">{pay_to}<' in page.text
    assert 'alt="QR code of the pay-to address' in page.text
