"""Owner accounts over the API on both engines: registering with and without an invite, duplicate
emails, sign-in, refresh-token rotation and reuse detection, sign-out, an unknown email answered
like a wrong password, the lockout after 10 failures, roles in a project, and user tokens kept to
their own organization on every route they can reach."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import select

from app.api.app import create_app
from app.db.engine import Database
from app.db.models import User
from app.services import credits, devices, webhooks
from app.services.retention import Retention, purge
from app.settings import Settings
from tests.conftest import app_client
from tests.support.accounts import (
    PASSWORD,
    MovableClock,
    install_clock,
    invite_code,
    new_user,
    register,
    sign_in,
)
from tests.support.factories import new_tenant


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


async def test_register_with_an_invite_then_sign_in_and_read_the_user(http, db):
    code = await invite_code(db)
    registered = await register(http, "Ada@Example.com", code)
    assert registered.status_code == 201, registered.text
    body = registered.json()
    assert body["success"] is True and body["user_id"].startswith("usr_") and body["message"]
    async with db.reading() as session:
        stored = (
            await session.execute(select(User.password_hash).where(User.id == body["user_id"]))
        ).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored

    tokens = await sign_in(http, "ada@example.com")
    assert tokens.status_code == 200, tokens.text
    pair = tokens.json()
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
    assert pair["refresh_token"].startswith("sw_rt_")

    me = await http.get(
        "/v1/auth/user", headers={"Authorization": f"Bearer {pair['access_token']}"}
    )
    assert me.status_code == 200, me.text
    user = me.json()
    assert user["id"] == body["user_id"] and user["email"] == "ada@example.com"
    assert user["name"] == "Ada Lovelace" and user["role"] == "owner"
    assert [org["role"] for org in user["organizations"]] == ["owner"]
    assert user["created_at"]


async def test_an_invite_into_an_organization_gives_its_role_and_works_once(http, db):
    code = await invite_code(db, "acme", "admin")
    assert (await register(http, "one@example.com", code)).status_code == 201
    again = await register(http, "two@example.com", code)
    assert again.status_code == 422 and again.json()["error"] == "invalid_invite"
    unknown = await register(http, "three@example.com", "sw_inv_" + "0" * 32)
    assert unknown.status_code == 422 and unknown.json()["error"] == "invalid_invite"

    pair = (await sign_in(http, "one@example.com")).json()
    me = (await http.get("/v1/auth/user", headers=_bearer(pair["access_token"]))).json()
    assert [(org["name"], org["role"]) for org in me["organizations"]] == [("acme", "admin")]


async def test_registering_without_an_invite_needs_open_registration(http, settings, db):
    refused = await register(http, "solo@example.com", None)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == "invite_required"

    opened = create_app(settings.model_copy(update={"open_registration": True}), db)
    async with app_client(opened) as open_http:
        registered = await register(open_http, "solo@example.com", None)
        assert registered.status_code == 201, registered.text
        pair = (await sign_in(open_http, "solo@example.com")).json()
        me = (await open_http.get("/v1/auth/user", headers=_bearer(pair["access_token"]))).json()
    assert me["role"] == "owner" and len(me["organizations"]) == 1


async def test_simwire_open_registration_true_lets_anyone_register(settings, db, monkeypatch):
    monkeypatch.setenv("SIMWIRE_OPEN_REGISTRATION", "true")
    from_env = Settings(**settings.model_dump(exclude={"open_registration"}))
    assert from_env.open_registration is True
    async with app_client(create_app(from_env, db)) as http:
        registered = await register(http, "open@example.com", None)
        assert registered.status_code == 201, registered.text


async def test_a_duplicate_email_is_409_whatever_its_case(http, db):
    assert (await register(http, "dup@example.com", await invite_code(db))).status_code == 201
    code = await invite_code(db)
    again = await register(http, "DUP@example.com", code)
    assert again.status_code == 409 and again.json()["error"] == "email_taken"
    # The refused registration did not use the invite up.
    assert (await register(http, "fresh@example.com", code)).status_code == 201


async def test_short_common_and_own_name_passwords_are_refused(http, db):
    code = await invite_code(db)
    short = await register(http, "pw@example.com", code, password="short")
    assert short.status_code == 400
    common = await register(http, "pw@example.com", code, password="Password123")
    assert common.status_code == 422 and common.json()["error"] == "weak_password"
    assert "common" in common.json()["message"]
    own = await register(http, "pw@example.com", code, password="pw@example.com")
    assert own.status_code == 422 and own.json()["error"] == "weak_password"
    assert (await register(http, "pw@example.com", code)).status_code == 201


async def test_refresh_rotates_and_a_reused_refresh_token_ends_the_sign_in(http, db):
    user = await new_user(http, db, "rot@example.com")
    first = user.refresh_token
    rotated = await http.post("/v1/auth/refresh", json={"refresh_token": first})
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first
    newer_access = second["access_token"]
    assert (await http.get("/v1/auth/user", headers=_bearer(newer_access))).status_code == 200

    # The first token again: someone holds a copy. The whole sign-in ends.
    reused = await http.post("/v1/auth/refresh", json={"refresh_token": first})
    assert reused.status_code == 401 and reused.json()["error"] == "invalid_refresh_token"
    assert "already used" in reused.json()["message"]
    after = await http.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert after.status_code == 401
    for token in (user.access_token, newer_access):
        gone = await http.get("/v1/auth/user", headers=_bearer(token))
        assert gone.status_code == 401 and gone.json()["error"] == "invalid_token"

    # Another sign-in of the same user is untouched.
    assert (await sign_in(http, "rot@example.com")).status_code == 200


async def test_logout_stops_the_access_and_refresh_tokens_at_once(http, db):
    user = await new_user(http, db, "bye@example.com")
    out = await http.post("/v1/auth/logout", headers=user.headers())
    assert out.status_code == 200 and out.json()["success"] is True
    assert (await http.get("/v1/auth/user", headers=user.headers())).status_code == 401
    refreshed = await http.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert refreshed.status_code == 401


async def test_access_tokens_expire_by_the_clock(http, db, clock):
    user = await new_user(http, db, "late@example.com")
    clock.advance(seconds=899)
    assert (await http.get("/v1/auth/user", headers=user.headers())).status_code == 200
    clock.advance(seconds=2)
    expired = await http.get("/v1/auth/user", headers=user.headers())
    assert expired.status_code == 401 and "expired" in expired.json()["message"]
    renewed = await http.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert renewed.status_code == 200
    assert (
        await http.get("/v1/auth/user", headers=_bearer(renewed.json()["access_token"]))
    ).status_code == 200


async def test_an_unknown_email_is_answered_like_a_wrong_password(http, db):
    await new_user(http, db, "known@example.com")

    async def attempt(email: str) -> tuple[float, int, dict[str, Any]]:
        started = time.perf_counter()
        answer = await sign_in(http, email, "not-the-password-at-all")
        return time.perf_counter() - started, answer.status_code, answer.json()

    wrong, unknown = [], []
    for _ in range(4):  # interleaved, so load on the machine hits both alike
        wrong.append(await attempt("known@example.com"))
        unknown.append(await attempt("nobody@example.com"))
    assert {(status, str(body)) for _, status, body in wrong} == {
        (status, str(body)) for _, status, body in unknown
    }
    assert wrong[0][1] == 401 and wrong[0][2]["error"] == "invalid_credentials"
    # Both verify an Argon2id hash: the medians are within a factor of two of each other.
    known_s = statistics.median(t for t, _, _ in wrong)
    unknown_s = statistics.median(t for t, _, _ in unknown)
    assert 0.5 < known_s / unknown_s < 2.0, (known_s, unknown_s)


async def test_ten_failures_lock_an_account_for_15_minutes(app, db, clock, settings):
    trusting = create_app(settings.model_copy(update={"trusted_proxies": ["127.0.0.1"]}), db)
    clock = install_clock(trusting)
    async with app_client(trusting) as http:
        await new_user(http, db, "lock@example.com")
        for attempt in range(10):
            # Each from another address: the account's own count locks it.
            wrong = await http.post(
                "/v1/auth/token",
                json={"email": "lock@example.com", "password": "wrong-password-0"},
                headers={"X-Forwarded-For": f"203.0.113.{attempt + 1}"},
            )
            assert wrong.status_code == 401, (attempt, wrong.text)
        clock.advance(seconds=60)
        locked = await http.post(
            "/v1/auth/token",
            json={"email": "lock@example.com", "password": PASSWORD},
            headers={"X-Forwarded-For": "198.51.100.7"},
        )
        assert locked.status_code == 429, locked.text
        assert locked.json()["error"] == "login_locked"
        assert int(locked.headers["retry-after"]) == 15 * 60 - 60
        clock.advance(seconds=15 * 60 - 60)
        assert (await sign_in(http, "lock@example.com")).status_code == 200


async def test_ten_failures_from_one_address_lock_that_address(http, db, clock):
    await new_user(http, db, "victim@example.com")
    for attempt in range(10):
        wrong = await sign_in(http, f"guess{attempt}@example.com", "wrong-password-0")
        assert wrong.status_code == 401
    locked = await sign_in(http, "victim@example.com")
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) == 15 * 60
    clock.advance(minutes=15)
    assert (await sign_in(http, "victim@example.com")).status_code == 200
    # The purge sweep forgets failures past the window: ten guesses, each counted twice
    # (account and address).
    swept = await purge(db, Retention(0, 0, 0, 0, 0), clock.now)
    assert swept.login_failures_deleted == 20


async def test_roles_members_read_admins_manage_keys(http, db):
    owner = await new_user(http, db, "owner@example.com", "roles-org", "owner")
    admin = await new_user(http, db, "admin@example.com", "roles-org", "admin")
    member = await new_user(http, db, "member@example.com", "roles-org", "member")

    created = await http.post("/v1/projects", json={"name": "shop"}, headers=owner.headers())
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]
    assert created.json()["key"]["key"].startswith("sw_live_")
    refused = await http.post("/v1/projects", json={"name": "mine"}, headers=member.headers())
    assert refused.status_code == 403

    listed = await http.get("/v1/projects", headers=member.headers())
    assert [(p["id"], p["role"]) for p in listed.json()["data"]] == [(project_id, "member")]

    as_member = member.headers(project_id)
    assert (await http.get("/v1/messages", headers=as_member)).status_code == 200
    seen = await http.get("/v1/project", headers=as_member)
    assert seen.status_code == 200 and seen.json()["id"] == project_id
    assert "keys.manage" not in seen.json()["scopes"]
    no_key = await http.post("/v1/keys", json={"name": "x"}, headers=as_member)
    assert no_key.status_code == 403 and no_key.json()["required_scope"] == "keys.manage"
    assert (await http.get("/v1/keys", headers=as_member)).status_code == 403
    assert (
        await http.post("/v1/devices", json={"name": "p"}, headers=as_member)
    ).status_code == 403
    for method, path in (("GET", "/v1/webhooks"), ("GET", "/v1/agents")):
        refused_here = await http.request(method, path, headers=as_member)
        assert refused_here.status_code == 403, (path, refused_here.text)

    as_admin = admin.headers(project_id)
    made = await http.post("/v1/keys", json={"name": "ci"}, headers=as_admin)
    assert made.status_code == 201, made.text
    assert (await http.post("/v1/devices", json={"name": "p"}, headers=as_admin)).status_code == 201
    assert (await http.get("/v1/agents", headers=as_admin)).status_code == 200
    hook = await http.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=as_admin
    )
    assert hook.status_code == 201, hook.text
    # No role sends: an API key is the credential for that.
    send = await http.post(
        "/v1/messages", json={"to": "+14155550100", "message": "hi"}, headers=as_admin
    )
    assert send.status_code == 403 and send.json()["required_scope"] == "messages.send"


async def test_a_user_token_names_its_project(http, db):
    user = await new_user(http, db, "nohdr@example.com")
    missing = await http.get("/v1/messages", headers=user.headers())
    assert missing.status_code == 400 and missing.json()["error"] == "project_required"
    assert (await http.get("/v1/projects", headers=user.headers())).status_code == 200
    # A project key is no user token, and a user token no project key.
    tenant = await new_tenant(db)
    wrong = await http.get("/v1/auth/user", headers=tenant.headers)
    assert wrong.status_code == 401 and wrong.json()["error"] == "user_token_required"


async def test_user_tokens_stay_in_their_organization_on_every_route(http, app, db, settings):
    mine = await new_user(http, db, "a@example.com", "org-a", "owner")
    theirs = await new_user(http, db, "b@example.com", "org-b", "owner")
    my_project = await http.post("/v1/projects", json={"name": "a"}, headers=mine.headers())
    their_project = await http.post("/v1/projects", json={"name": "b"}, headers=theirs.headers())
    my_id, their_id = my_project.json()["id"], their_project.json()["id"]
    # Objects of the other organization to name in paths: every kind a path can name.
    their_key = {"Authorization": f"Bearer {their_project.json()['key']['key']}"}
    paired = await devices.pair_device(db, their_id, "b-phone")
    (their_sim,) = await devices.report_sims(
        db, paired.device, [devices.ReportedSim(slot=0, number="+15550100001")]
    )
    hook = await webhooks.create_webhook(db, settings, their_id, "http://127.0.0.1:9/hook")
    await credits.grant(db, their_id, 1_000_000)
    sent = await http.post(
        "/v1/messages", json={"to": "+14155550100", "message": "hi"}, headers=their_key
    )
    assert sent.status_code == 202, sent.text
    agent = (await http.post("/v1/agents/register", json={"name": "b-agent"})).json()
    claimed = await http.post(
        "/v1/agents/claims/" + agent["claim_url"].rsplit("/", 1)[1],
        json={"verification_code": agent["verification_code"], "project_id": their_id},
        headers=theirs.headers(),
    )
    assert claimed.status_code == 200, claimed.text
    their_ids = {
        "key_id": their_project.json()["key"]["id"],
        "device_id": paired.device.id,
        "sim_id": their_sim.id,
        "webhook_id": hook.webhook.id,
        "delivery_id": await webhooks.create_test_delivery(db, their_id, hook.webhook.id),
        "message_id": sent.json()["messages"][0]["id"],
        "request_id": sent.json()["request_id"],
        "agent_id": claimed.json()["id"],
    }
    # Claiming into their project is refused like any other route, without using a try.
    mine_agent = (await http.post("/v1/agents/register", json={"name": "a-agent"})).json()
    mine_claim = "/v1/agents/claims/" + mine_agent["claim_url"].rsplit("/", 1)[1]
    into_theirs = await http.post(
        mine_claim,
        json={"verification_code": "AAAAAAAA", "project_id": their_id},
        headers=mine.headers(),
    )
    assert into_theirs.status_code == 404, into_theirs.text
    assert (await http.get(mine_claim)).json()["attempts_left"] == 5

    routes = _user_routes(app)
    assert len(routes) >= 25, routes
    for method, path in routes:
        # The other organization's project in the header: that project does not exist for us.
        url = _fill(path, their_ids)
        answer = await http.request(
            method, url, headers=mine.headers(their_id), json=_body_for(method)
        )
        assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
        if "{" in path:
            # Our own project, their objects: never reached (not found, or refused before
            # any lookup: a scope no role holds, a body this route needs).
            answer = await http.request(
                method, url, headers=mine.headers(my_id), json=_body_for(method)
            )
            assert answer.status_code in (400, 403, 404), (method, path, answer.text)

    # Their lists never show through ours, and nothing of theirs was touched.
    keys = (await http.get("/v1/keys", headers=mine.headers(my_id))).json()["data"]
    assert their_ids["key_id"] not in {key["id"] for key in keys}
    assert (await http.get("/v1/project", headers=their_key)).status_code == 200
    message = await http.get(f"/v1/messages/{their_ids['message_id']}", headers=their_key)
    assert message.json()["status"] == "queued"
    agent_key = {"Authorization": f"Bearer {agent['api_key']}"}
    assert (await http.get("/v1/project", headers=agent_key)).status_code == 200
    (sim,) = (await devices.sim_inventory(db, their_id, 60)).known_sims
    assert not sim.locked
    assert (await devices.authenticate_device(db, paired.token)).id == paired.device.id
    listed = (await http.get("/v1/projects", headers=mine.headers())).json()["data"]
    assert [p["id"] for p in listed] == [my_id]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _user_routes(app: Litestar) -> list[tuple[str, str]]:
    """Every operation a user token may call with `Simwire-Project`, from the OpenAPI document."""
    document = app.openapi_schema.to_schema()
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters" or path == "/v1/phone/ws":
                continue
            security = operation.get("security") or []
            if {"userToken": []} in security and {"bearerKey": []} in security:
                found.append((method.upper(), path))
    return found


def _fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + "x_missing" + path[end + 1 :]
    return path


def _body_for(method: str) -> Any:
    return {} if method in ("POST", "PATCH", "PUT") else None
