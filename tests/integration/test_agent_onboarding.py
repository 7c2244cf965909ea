"""Agent self-registration and the human claim over the API on both engines: an inactive key
refused everywhere but its status, the claim with the code into a project with exactly the
granted scopes, expiry after 72 hours on a moved clock (then the purge), a duplicate name, the
hourly budget per address, five wrong codes locking the claim, a name taken in the project, the
owners' agent routes, and `agent.claimed` delivered to the agent's callback_url, signed."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest
from litestar import Litestar

from app.api.app import create_app
from app.db.engine import Database
from app.domain.agent_claims import CODE_ALPHABET
from app.services.retention import Retention, purge
from app.settings import Settings
from app.webhooks.delivery import DeliveryWorker
from tests.conftest import app_client
from tests.integration.test_mcp import body_of, mcp_session
from tests.support.accounts import MovableClock, SignedIn, install_clock, new_user, sign_in
from tests.support.live import live_server
from tests.support.receiver import running_receiver


@pytest.fixture
def app(settings: Settings, db: Database) -> Litestar:
    return create_app(settings, db)


@pytest.fixture
def clock(app: Litestar) -> MovableClock:
    return install_clock(app)


@pytest.fixture
async def http(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as client:
        yield client


async def register_agent(http: httpx.AsyncClient, name: str = "helper", **body) -> dict:
    answer = await http.post("/v1/agents/register", json={"name": name, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()


def agent_headers(registered: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {registered['api_key']}"}


async def owner_with_project(
    http: httpx.AsyncClient, db: Database, email: str = "owner@example.com"
) -> tuple[SignedIn, str]:
    owner = await new_user(http, db, email, f"org-{email}", "owner")
    made = await http.post("/v1/projects", json={"name": "agents"}, headers=owner.headers())
    assert made.status_code == 201, made.text
    return owner, made.json()["id"]


def claim_path(registered: dict) -> str:
    return "/v1/agents/claims/" + registered["claim_url"].rsplit("/", 1)[1]


async def claim(
    http: httpx.AsyncClient, user: SignedIn, registered: dict, project_id: str, **body
) -> httpx.Response:
    payload = {"verification_code": registered["verification_code"], "project_id": project_id}
    return await http.post(claim_path(registered), json={**payload, **body}, headers=user.headers())


def key_routes(app: Litestar) -> list[tuple[str, str]]:
    """Every operation that takes a project key, from the OpenAPI document."""
    found = []
    for path, operations in app.openapi_schema.to_schema()["paths"].items():
        for method, operation in operations.items():
            if path in ("/v1/agents/status", "/v1/phone/ws"):
                continue
            if {"bearerKey": []} in (operation.get("security") or []):
                found.append((method.upper(), path.replace("{", "").replace("}", "")))
    return found


async def test_an_agent_registers_waits_unclaimed_and_is_claimed_with_exactly_its_scopes(
    http, app, db, clock
):
    registered = await register_agent(
        http, description="Reads replies for Ada", metadata={"model": "m-1"}
    )
    assert registered["api_key"].startswith("sw_live_")
    code = registered["verification_code"]
    assert len(code) == 8 and set(code) <= set(CODE_ALPHABET)
    assert "/dashboard/claim/clm_" in registered["claim_url"]
    expires = datetime.fromisoformat(registered["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (clock.now + timedelta(hours=72))) < timedelta(seconds=2)
    assert "webhook_secret" not in registered

    status = await http.get("/v1/agents/status", headers=agent_headers(registered))
    assert status.status_code == 200, status.text
    assert status.json() == {
        "status": "unclaimed",
        "name": "helper",
        "claim_url": registered["claim_url"],
        "expires_at": registered["expires_at"],
    }

    routes = key_routes(app)
    assert len(routes) >= 25
    for method, path in routes:
        refused = await http.request(
            method, path, headers=agent_headers(registered), json={} if method != "GET" else None
        )
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["error"] == "agent_unclaimed"
        assert refused.json()["claim_url"] == registered["claim_url"]

    owner, project_id = await owner_with_project(http, db)
    view = await http.get(claim_path(registered))
    assert view.status_code == 200, view.text
    assert view.json()["agent"]["description"] == "Reads replies for Ada"
    assert view.json()["agent"]["metadata"] == {"model": "m-1"}
    assert view.json()["status"] == "unclaimed" and view.json()["attempts_left"] == 5
    assert view.json()["scopes"]["default"] == ["messages.read", "numbers.read"]
    assert "messages.send" in view.json()["scopes"]["optional"]

    claimed = await claim(
        http, owner, registered, project_id, verification_code=code.lower()[:4] + "-" + code[4:]
    )
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["scopes"] == ["messages.read", "numbers.read"]
    assert claimed.json()["status"] == "claimed" and claimed.json()["project_id"] == project_id

    status = (await http.get("/v1/agents/status", headers=agent_headers(registered))).json()
    assert status["status"] == "claimed" and status["project_id"] == project_id
    assert status["organization_id"] and status["claimed_at"]
    assert "claim_url" not in status

    # Exactly the granted scopes.
    headers = agent_headers(registered)
    assert (await http.get("/v1/messages", headers=headers)).status_code == 200
    assert (await http.get("/v1/sims", headers=headers)).status_code == 200
    for method, path, scope in [
        ("POST", "/v1/messages", "messages.send"),
        ("GET", "/v1/credits", "credits.read"),
        ("GET", "/v1/webhooks", "webhooks.manage"),
        ("GET", "/v1/keys", "keys.manage"),
    ]:
        body = {"to": "+14155550100", "message": "hi"} if method == "POST" else None
        refused = await http.request(method, path, headers=headers, json=body)
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["required_scope"] == scope

    again = await claim(http, owner, registered, project_id)
    assert again.status_code == 409 and again.json()["error"] == "already_claimed"


async def test_owners_list_rescope_regenerate_and_revoke_agent_keys(http, db):
    owner, project_id = await owner_with_project(http, db)
    registered = await register_agent(http)
    claimed = (await claim(http, owner, registered, project_id, scopes=["messages.read"])).json()
    as_owner = owner.headers(project_id)

    listed = (await http.get("/v1/agents", headers=as_owner)).json()
    assert [agent["id"] for agent in listed["data"]] == [claimed["id"]]
    assert listed["data"][0]["scopes"] == ["messages.read"]

    rescoped = await http.patch(
        f"/v1/agents/{claimed['id']}",
        json={"scopes": ["messages.read", "messages.send", "credits.read"]},
        headers=as_owner,
    )
    assert rescoped.status_code == 200, rescoped.text
    project = (await http.get("/v1/project", headers=agent_headers(registered))).json()
    assert project["scopes"] == ["messages.read", "messages.send", "credits.read"]
    too_much = await http.patch(
        f"/v1/agents/{claimed['id']}", json={"scopes": ["keys.manage"]}, headers=as_owner
    )
    assert too_much.status_code == 400

    regenerated = await http.post(f"/v1/agents/{claimed['id']}/regenerate", headers=as_owner)
    assert regenerated.status_code == 201, regenerated.text
    new_key = {"Authorization": f"Bearer {regenerated.json()['api_key']}"}
    assert (await http.get("/v1/project", headers=agent_headers(registered))).status_code == 401
    assert (await http.get("/v1/project", headers=new_key)).json()["scopes"] == [
        "messages.read",
        "messages.send",
        "credits.read",
    ]
    assert (await http.get("/v1/agents/status", headers=new_key)).json()["status"] == "claimed"

    revoked = await http.delete(f"/v1/agents/{claimed['id']}", headers=as_owner)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert (await http.get("/v1/project", headers=new_key)).status_code == 401

    # Another organization's owner sees none of it.
    other, other_project = await owner_with_project(http, db, "other@example.com")
    assert (
        await http.get(f"/v1/agents/{claimed['id']}", headers=other.headers(other_project))
    ).status_code == 404
    assert (await http.get("/v1/agents", headers=other.headers(other_project))).json()["count"] == 0


async def test_a_claim_expires_72_hours_after_registering_and_is_purged_a_day_later(
    http, db, clock
):
    owner, project_id = await owner_with_project(http, db)
    registered = await register_agent(http)
    clock.advance(hours=71, minutes=59)
    assert (await http.get(claim_path(registered))).json()["status"] == "unclaimed"
    clock.advance(minutes=1)
    assert (await http.get(claim_path(registered))).json()["status"] == "expired"
    status = (await http.get("/v1/agents/status", headers=agent_headers(registered))).json()
    assert status == {"status": "expired", "name": "helper", "expires_at": registered["expires_at"]}
    # The owner signs in again (their access token of three days ago has expired).
    tokens = (await sign_in(http, owner.email)).json()
    owner = SignedIn(owner.user_id, owner.email, tokens["access_token"], tokens["refresh_token"])
    late = await claim(http, owner, registered, project_id)
    assert late.status_code == 409 and late.json()["error"] == "claim_expired"
    # The same name may register again once the old claim expired.
    assert (await register_agent(http))["claim_url"] != registered["claim_url"]

    # The purge sweep removes it a day after it expired (the new registration stays).
    keep_the_rest = Retention(0, 0, 0, 0, 0)
    early = await purge(db, keep_the_rest, clock.now + timedelta(hours=23))
    assert early.agent_registrations_deleted == 0
    swept = await purge(db, keep_the_rest, clock.now + timedelta(hours=24))
    assert swept.agent_registrations_deleted == 1
    gone = await http.get("/v1/agents/status", headers=agent_headers(registered))
    assert gone.status_code == 401


async def test_the_same_unclaimed_name_from_the_same_address_is_409_with_its_link(http, db):
    first = await register_agent(http)
    again = await http.post("/v1/agents/register", json={"name": "helper"})
    assert again.status_code == 409, again.text
    body = again.json()
    assert body["error"] == "agent_already_registered"
    assert body["claim_url"] == first["claim_url"] and body["expires_at"] == first["expires_at"]
    assert "api_key" not in body
    assert (await register_agent(http, "another"))["claim_url"] != first["claim_url"]

    owner, project_id = await owner_with_project(http, db)
    assert (await claim(http, owner, first, project_id)).status_code == 200
    # Claimed: the name is free to register again.
    assert (await http.post("/v1/agents/register", json={"name": "helper"})).status_code == 201


async def test_more_than_five_registrations_an_hour_from_one_address_is_429(settings, db):
    limited = create_app(settings.model_copy(update={"rate_limits": True}), db)
    clock = install_clock(limited)
    async with app_client(limited) as http:
        for number in range(5):
            await register_agent(http, f"agent-{number}")
        clock.advance(minutes=10)
        refused = await http.post("/v1/agents/register", json={"name": "agent-5"})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "rate_limited"
        assert refused.json()["limit"] == "agent_registrations"
        assert int(refused.headers["retry-after"]) == 50 * 60
        clock.advance(minutes=50)
        await register_agent(http, "agent-5")


async def test_the_hourly_budget_comes_from_simwire_agent_registrations_per_hour(
    settings, db, monkeypatch
):
    monkeypatch.setenv("SIMWIRE_AGENT_REGISTRATIONS_PER_HOUR", "2")
    from_env = Settings(
        **{**settings.model_dump(exclude={"agent_registrations_per_hour"}), "rate_limits": True}
    )
    assert from_env.agent_registrations_per_hour == 2
    async with app_client(create_app(from_env, db)) as http:
        await register_agent(http, "first")
        await register_agent(http, "second")
        refused = await http.post("/v1/agents/register", json={"name": "third"})
        assert refused.status_code == 429, refused.text
        assert refused.json()["limit"] == "agent_registrations"
        assert 0 < int(refused.headers["retry-after"]) <= 3600


async def test_five_wrong_codes_lock_the_claim(http, db):
    owner, project_id = await owner_with_project(http, db)
    member = await new_user(http, db, "member@example.com", "org-owner@example.com", "member")
    registered = await register_agent(http)
    right = registered["verification_code"]
    wrong = "".join(CODE_ALPHABET[(CODE_ALPHABET.index(c) + 1) % len(CODE_ALPHABET)] for c in right)

    # A member may not claim, and does not use up the owner's tries.
    by_member = await claim(http, member, registered, project_id)
    assert by_member.status_code == 403
    for attempts_left in (4, 3, 2, 1):
        answer = await claim(http, owner, registered, project_id, verification_code=wrong)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == "invalid_verification_code"
        assert answer.json()["attempts_left"] == attempts_left
    fifth = await claim(http, owner, registered, project_id, verification_code=wrong)
    assert fifth.status_code == 403 and fifth.json()["error"] == "claim_locked"
    with_right_code = await claim(http, owner, registered, project_id, verification_code=right)
    assert with_right_code.status_code == 403 and with_right_code.json()["error"] == "claim_locked"
    view = (await http.get(claim_path(registered))).json()
    assert view["locked"] is True and view["attempts_left"] == 0
    refused = await http.get("/v1/messages", headers=agent_headers(registered))
    assert refused.status_code == 403 and refused.json()["error"] == "agent_unclaimed"


async def test_a_claimed_name_taken_by_a_key_of_the_project_is_422_on_name(http, db):
    owner, project_id = await owner_with_project(http, db)
    made = await http.post("/v1/keys", json={"name": "helper"}, headers=owner.headers(project_id))
    assert made.status_code == 201
    registered = await register_agent(http)
    taken = await claim(http, owner, registered, project_id)
    assert taken.status_code == 422, taken.text
    assert taken.json()["error"] == "name_taken" and taken.json()["param"] == "name"
    renamed = await claim(http, owner, registered, project_id, name="helper-2")
    assert renamed.status_code == 200 and renamed.json()["name"] == "helper-2"
    # A name clash is no wrong code.
    assert (await http.get(claim_path(registered))).json()["attempts_left"] == 5


async def test_agent_claimed_is_delivered_to_the_callback_url_signed(http, db, settings):
    owner, project_id = await owner_with_project(http, db)
    async with running_receiver(path="/agent") as agent_side, running_receiver() as project_side:
        # The project's own endpoint for agent.claimed gets it too; the agent's stays hidden.
        hook = await http.post(
            "/v1/webhooks",
            json={"url": project_side.url, "events": ["agent.claimed"]},
            headers=owner.headers(project_id),
        )
        assert hook.status_code == 201, hook.text
        registered = await register_agent(http, callback_url=agent_side.url)
        secret = registered["webhook_secret"]
        assert secret.startswith("whsec_")
        claimed = await claim(http, owner, registered, project_id, scopes=["messages.read"])
        assert claimed.status_code == 200, claimed.text

        worker = DeliveryWorker(db, settings)
        while await worker.run_once():
            await worker.drain()
        await worker.client.aclose()

        assert len(agent_side.received) == 1
        delivered = agent_side.received[0]
        event = delivered.json
        assert event["type"] == "agent.claimed" and event["project_id"] == project_id
        assert event["data"]["id"] == claimed.json()["id"]
        assert event["data"]["scopes"] == ["messages.read"]
        timestamp = delivered.headers["x-webhook-timestamp"]
        assert abs(time.time() - int(timestamp)) < 300
        expected = hmac.new(
            secret.encode(), f"{timestamp}.".encode() + delivered.body, hashlib.sha256
        ).hexdigest()
        assert hmac.compare_digest(expected, delivered.headers["x-webhook-signature"])
        assert delivered.headers["x-webhook-signature-256"] == "sha256=" + expected

        assert [one.json["id"] for one in project_side.received] == [event["id"]]
        listed = (await http.get("/v1/webhooks", headers=owner.headers(project_id))).json()
        assert [one["id"] for one in listed["data"]] == [hook.json()["id"]]

        # A later claim in the same project does not reach the first agent's callback.
        second = await register_agent(http, "second")
        assert (await claim(http, owner, second, project_id)).status_code == 200
        worker = DeliveryWorker(db, settings)
        while await worker.run_once():
            await worker.drain()
        await worker.client.aclose()
        assert len(agent_side.received) == 1 and len(project_side.received) == 2


async def test_a_callback_url_simwire_may_not_call_is_refused_at_registration(settings, db):
    strict = create_app(settings.model_copy(update={"webhook_allow_private": False}), db)
    async with app_client(strict) as http:
        refused = await http.post(
            "/v1/agents/register", json={"name": "x", "callback_url": "https://127.0.0.1/hook"}
        )
        assert refused.status_code == 400 and refused.json()["error"] == "webhook_url_not_allowed"


# A schema-valid value for each argument a tool may require.
SAMPLE_ARGS = {
    "to": "+14155550100",
    "message": "hi",
    "id": "msg_x",
    "request_id": "req_x",
    "message_id": "msg_x",
    "from_number": "+14155550100",
}


async def test_an_unclaimed_key_gets_agent_unclaimed_from_every_mcp_tool(settings, db):
    async with live_server(settings, db) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            registered = await register_agent(http)
        async with mcp_session(server, agent_headers(registered)) as session:
            tools = (await session.list_tools()).tools
            assert len(tools) >= 8
            for tool in tools:
                required = tool.input_schema.get("required", [])
                args = {name: SAMPLE_ARGS[name] for name in required}
                result = await session.call_tool(tool.name, args)
                assert result.is_error, tool.name
                body = body_of(result)
                assert body["error"] == "agent_unclaimed", (tool.name, body)
                assert body["claim_url"] == registered["claim_url"]
