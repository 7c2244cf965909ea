"""The dashboard's pages over HTTP on both engines (no browser): forms refuse a POST without
their CSRF token, the session cookies are HttpOnly and SameSite=Lax (Secure over https), every
page carries a Content-Security-Policy, a member cannot create keys, another organization's
project and its objects are not reachable on any project route, signing out ends the session,
an expired access token is refreshed, a locked sign-in says when to try again, and none of it
is in the OpenAPI document."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from litestar import Litestar

from app.api.app import create_app
from app.db.engine import Database
from app.services import accounts, credits, devices, projects, webhooks
from app.settings import Settings
from tests.support.accounts import install_clock, invite_code
from tests.support.dashboard import csrf_of, dashboard_register, dashboard_sign_in


@pytest.fixture
def app(settings: Settings, db: Database) -> Litestar:
    return create_app(settings, db)


def _client(app: Litestar, scheme: str = "http") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"{scheme}://simwire.test"
    )


@pytest.fixture
async def browser(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as http:
        yield http


async def _owner_with_project(
    http: httpx.AsyncClient, db: Database, email: str = "owner@example.com"
) -> str:
    """Registers through the dashboard (an invite owning a new organization), creates a
    project there, and returns its id; `http` is signed in."""
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


async def test_a_post_without_its_csrf_token_is_refused(
    app: Litestar, browser: httpx.AsyncClient, db: Database
) -> None:
    project_id = await _owner_with_project(browser, db)
    keys_page = await browser.get(f"/dashboard/p/{project_id}/keys")
    before = len(await projects.list_keys(db, project_id))

    missing = await browser.post(f"/dashboard/p/{project_id}/keys", data={"name": "k"})
    wrong = await browser.post(
        f"/dashboard/p/{project_id}/keys", data={"name": "k", "csrf_token": "0" * 64}
    )
    assert missing.status_code == wrong.status_code == 403
    assert "csrf_refused" in missing.text
    assert len(await projects.list_keys(db, project_id)) == before

    made = await browser.post(
        f"/dashboard/p/{project_id}/keys", data={"name": "k", "csrf_token": csrf_of(keys_page)}
    )
    assert made.status_code == 201
    assert len(await projects.list_keys(db, project_id)) == before + 1

    # Every other form of the dashboard refuses a POST without it, before it does anything.
    posts = [
        route.path_format
        for route in app.routes
        if route.path_format.startswith("/dashboard") and "POST" in getattr(route, "methods", ())
    ]
    assert len(posts) >= 16, posts
    for path in posts:
        url = path.replace("{project_id}", project_id)
        url = re.sub(r"\{[a-z_]+\}", "x_missing", url)
        answer = await browser.post(url, data={"name": "k", "to": "+14155550100"})
        assert answer.status_code == 403, (path, answer.status_code)
        assert "csrf_refused" in answer.text, path
    assert len(await projects.list_keys(db, project_id)) == before + 1

    # Signed-out forms too: a sign-in posted without the cookie's token is refused.
    async with _client(app) as stranger:
        refused = await stranger.post(
            "/dashboard/signin",
            data={"email": "owner@example.com", "password": "violet-harbour-42-lanterns"},
        )
        assert refused.status_code == 403
        assert "simwire_access" not in refused.headers.get("set-cookie", "")


def _set_cookies(response: httpx.Response) -> dict[str, str]:
    found = {}
    for header in response.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0]
        found[name] = header.lower()
    return found


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_session_cookies_are_httponly_and_lax_and_secure_over_https(
    app: Litestar, db: Database, scheme: str
) -> None:
    email = f"cookies-{scheme}@example.com"
    async with _client(app, scheme) as http:
        registered = await dashboard_register(http, email, await invite_code(db))
        assert registered.status_code == 303
        signed_in = await dashboard_sign_in(http, email)
    assert signed_in.status_code == 303
    cookies = _set_cookies(signed_in)
    for name in ("simwire_access", "simwire_refresh"):
        flags = [part.strip() for part in cookies[name].split(";")]
        assert "httponly" in flags
        assert "samesite=lax" in flags
        assert "path=/dashboard" in flags
        assert ("secure" in flags) == (scheme == "https")


async def test_a_trusted_proxy_saying_https_makes_the_cookies_secure(
    settings: Settings, db: Database
) -> None:
    behind = create_app(settings.model_copy(update={"trusted_proxies": ["127.0.0.1/32"]}), db)
    invite = await invite_code(db)

    async def register_from(peer: str, email: str) -> httpx.Response:
        # The proxy speaks plain http to us, so the client here is told of Secure cookies it
        # would not send back over http: hand the CSRF cookie back by hand.
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=behind, client=(peer, 40000)),
            base_url="http://simwire.test",
            headers={"X-Forwarded-Proto": "https"},
        ) as http:
            page = await http.get("/dashboard/register")
            csrf_cookie = page.headers["set-cookie"].split(";")[0]
            return await http.post(
                "/dashboard/register",
                headers={"Cookie": csrf_cookie},
                data={
                    "csrf_token": csrf_of(page),
                    "name": "Proxied",
                    "email": email,
                    "password": "violet-harbour-42-lanterns",
                    "invite_code": invite if peer == "127.0.0.1" else await invite_code(db),
                },
            )

    trusted = await register_from("127.0.0.1", "proxied@example.com")
    assert trusted.status_code == 303, trusted.text
    assert "secure" in _set_cookies(trusted)["simwire_access"].split("; ")
    # The same header from anyone else is not believed.
    untrusted = await register_from("203.0.113.9", "direct@example.com")
    assert untrusted.status_code == 303, untrusted.text
    assert "secure" not in _set_cookies(untrusted)["simwire_access"].split("; ")


async def test_every_page_carries_a_content_security_policy(
    browser: httpx.AsyncClient, db: Database
) -> None:
    signed_out = await browser.get("/dashboard/signin")
    project_id = await _owner_with_project(browser, db)
    pages = [signed_out] + [
        await browser.get(f"/dashboard/p/{project_id}{section}")
        for section in (
            "",
            "/live",
            "/messages",
            "/send",
            "/phones",
            "/keys",
            "/agents",
            "/webhooks",
            "/credits",
        )
    ]
    pages.append(await browser.get("/dashboard/projects"))
    for page in pages:
        assert page.status_code == 200, (page.url, page.text[:300])
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        # No inline script anywhere: every <script> has a src.
        assert "<script>" not in page.text
        assert all(" src=" in tag for tag in page.text.split("<script")[1:])
    overview = pages[1]
    assert 'href="/docs"' in overview.text and 'href="/llms.txt"' in overview.text
    script = await browser.get("/dashboard/static/dashboard.js")
    assert script.status_code == 200 and "data-live" in script.text


_FIELD = re.compile(r"<(input|select|textarea)\b([^>]*)>")


def _unlabelled_fields(page: str) -> list[str]:
    """Every visible form field without a <label for=its id>, and duplicate ids."""
    labels = set(re.findall(r'<label for="([^"]+)"', page))
    ids = re.findall(r'\bid="([^"]+)"', page)
    problems = [f"duplicate id {i}" for i in set(ids) if ids.count(i) > 1]
    for kind, attributes in _FIELD.findall(page):
        if 'type="hidden"' in attributes:
            continue
        found = re.search(r'\bid="([^"]+)"', attributes)
        if found is None or found.group(1) not in labels:
            problems.append(f"<{kind}{attributes}>")
    return problems


async def test_every_form_field_has_a_label_and_every_action_is_a_button(
    browser: httpx.AsyncClient, db: Database
) -> None:
    pages = [await browser.get("/dashboard/signin"), await browser.get("/dashboard/register")]
    project_id = await _owner_with_project(browser, db)
    await devices.pair_device(db, project_id, "desk")
    for section in (
        "",
        "/messages",
        "/send",
        "/phones",
        "/keys",
        "/agents",
        "/webhooks",
        "/credits",
    ):
        pages.append(await browser.get(f"/dashboard/p/{project_id}{section}"))
    pages.append(await browser.get("/dashboard/projects"))
    registered = await browser.post("/v1/agents/register", json={"name": "labelled-bot"})
    pages.append(await browser.get(urlsplit(registered.json()["claim_url"]).path))
    for page in pages:
        assert page.status_code == 200, page.url
        assert _unlabelled_fields(page.text) == [], page.url
        # Actions are buttons in forms or links, never script-only click targets.
        assert "onclick" not in page.text and 'href="#"' not in page.text
        assert '<a class="skip" href="#main">' in page.text and '<main id="main">' in page.text


async def test_a_member_cannot_create_keys(app: Litestar, db: Database) -> None:
    async with _client(app) as owner:
        project_id = await _owner_with_project(owner, db)
    organization_id = (await projects.get_project(db, project_id)).organization_id
    before = len(await projects.list_keys(db, project_id))
    async with _client(app) as member:
        joined = await dashboard_register(
            member, "member@example.com", await invite_code(db, organization_id, "member")
        )
        assert joined.status_code == 303
        overview = await member.get(f"/dashboard/p/{project_id}")
        assert overview.status_code == 200  # members read
        keys_page = await member.get(f"/dashboard/p/{project_id}/keys")
        assert keys_page.status_code == 200
        assert "owners and admins" in keys_page.text
        refused = await member.post(
            f"/dashboard/p/{project_id}/keys",
            data={"name": "mine", "csrf_token": csrf_of(overview)},
        )
        assert refused.status_code == 403
        paired = await member.post(
            f"/dashboard/p/{project_id}/phones",
            data={"name": "p", "csrf_token": csrf_of(overview)},
        )
        assert paired.status_code == 403
    assert len(await projects.list_keys(db, project_id)) == before


def _project_routes(app: Litestar) -> list[tuple[str, str]]:
    """Every dashboard route about one project, with its methods (from the app itself, so a
    page added later is covered)."""
    return [
        (method, route.path_format)
        for route in app.routes
        if route.path_format.startswith("/dashboard/p/{project_id}")
        for method in sorted(getattr(route, "methods", ()))
        if method in ("GET", "POST")
    ]


async def test_another_organizations_project_is_not_reachable(app: Litestar, db: Database) -> None:
    async with _client(app) as alice, _client(app) as bob:
        alices = await _owner_with_project(alice, db, "alice@example.com")
        bobs = await _owner_with_project(bob, db, "bob@example.com")
        # Alice's objects, one of each kind a dashboard path names.
        issued = await projects.create_key(db, alices, "alice-ci")
        paired = await devices.pair_device(db, alices, "alice-phone")
        (sim,) = await devices.report_sims(
            db, paired.device, [devices.ReportedSim(slot=0, number="+15550100002")]
        )
        hook = await webhooks.create_webhook(
            db, app.state["settings"], alices, "http://127.0.0.1:9/a"
        )
        await credits.grant(db, alices, 1_000_000)
        key = {"Authorization": f"Bearer {issued.raw}"}
        sent = await alice.post(
            "/v1/messages", json={"to": "+14155550100", "message": "hi"}, headers=key
        )
        assert sent.status_code == 202, sent.text
        agent = (await alice.post("/v1/agents/register", json={"name": "alice-bot"})).json()
        claim_path = urlsplit(agent["claim_url"]).path
        claim_page = await alice.get(claim_path)
        claimed = await alice.post(
            claim_path,
            data={
                "csrf_token": csrf_of(claim_page),
                "verification_code": agent["verification_code"],
                "project_id": alices,
            },
        )
        assert claimed.status_code == 303, claimed.text
        alices_ids = {
            "key_id": issued.key.id,
            "device_id": paired.device.id,
            "sim_id": sim.id,
            "webhook_id": hook.webhook.id,
            "message_id": sent.json()["messages"][0]["id"],
            "agent_id": claimed.headers["location"].rsplit("=", 1)[1],
        }

        page = await bob.get(f"/dashboard/p/{bobs}")
        token = csrf_of(page)
        assert alices not in (await bob.get("/dashboard/projects")).text
        form = {
            "csrf_token": token,
            "name": "x",
            "to": "+14155550100",
            "message": "hi",
            "url": "http://127.0.0.1:9/b",
            "locked": "1",
            "scopes": ["messages.read"],
        }
        routes = _project_routes(app)
        assert len(routes) >= 24, routes
        for method, path in routes:
            filled = path
            for name, value in alices_ids.items():
                filled = filled.replace("{" + name + "}", value)
            # Alice's project: it does not exist for Bob.
            url = filled.replace("{project_id}", alices)
            answer = await bob.request(method, url, data=form if method == "POST" else None)
            assert answer.status_code == 404, (method, path, answer.status_code)
            if path.count("{") == 1:
                continue
            # Bob's own project, Alice's objects: never found there.
            url = filled.replace("{project_id}", bobs)
            answer = await bob.request(method, url, data=form if method == "POST" else None)
            if path.endswith("/phones/{device_id}/live"):
                # The pairing page's poll says the phone is not (or no longer) in the project.
                assert answer.status_code == 200 and "not in the project" in answer.text
                assert "alice-phone" not in answer.text
            else:
                assert answer.status_code == 404, (method, path, answer.status_code)
        switched = await bob.get("/dashboard/switch", params={"project": alices})
        assert switched.headers["location"] == "/dashboard"

        # Nothing of Alice's changed: her keys, phone, SIM, agent and webhooks are as they were.
        assert all(k.revoked_at is None for k in await projects.list_keys(db, alices))
        assert (await alice.get("/v1/project", headers=key)).status_code == 200
        agent_key = {"Authorization": f"Bearer {agent['api_key']}"}
        assert (await alice.get("/v1/project", headers=agent_key)).status_code == 200
    assert (await devices.authenticate_device(db, paired.token)).id == paired.device.id
    (after,) = (await devices.sim_inventory(db, alices, 60)).known_sims
    assert not after.locked
    assert [h.id for h in await webhooks.list_webhooks(db, alices)] == [hook.webhook.id]


async def test_signing_out_ends_the_session(browser: httpx.AsyncClient, db: Database) -> None:
    project_id = await _owner_with_project(browser, db)
    page = await browser.get(f"/dashboard/p/{project_id}")
    access = browser.cookies.get("simwire_access", path="/dashboard")
    assert access

    signed_out = await browser.post("/dashboard/signout", data={"csrf_token": csrf_of(page)})
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/dashboard/signin"
    cleared = _set_cookies(signed_out)
    assert "max-age=0" in cleared["simwire_access"]

    # The old cookies, kept by someone who copied them, no longer sign anyone in.
    browser.cookies.set("simwire_access", access, domain="simwire.test", path="/dashboard")
    again = await browser.get(f"/dashboard/p/{project_id}")
    assert again.status_code == 303
    assert again.headers["location"].startswith("/dashboard/signin")
    api = await browser.get("/v1/auth/user", headers={"Authorization": f"Bearer {access}"})
    assert api.status_code == 401


async def test_an_expired_access_token_is_refreshed_once_for_concurrent_pages(
    app: Litestar, browser: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    clock = install_clock(app)
    project_id = await _owner_with_project(browser, db)
    old_access = browser.cookies.get("simwire_access", path="/dashboard")
    clock.advance(seconds=settings.access_token_ttl_s + 60)

    # The live panel polls while a page loads: both find the expired token, one refresh.
    first, second = await asyncio.gather(
        browser.get(f"/dashboard/p/{project_id}"), browser.get(f"/dashboard/p/{project_id}/live")
    )
    assert first.status_code == second.status_code == 200
    new_access = browser.cookies.get("simwire_access", path="/dashboard")
    assert new_access and new_access != old_access
    user = await accounts.authenticate_user(db, settings, new_access, clock.now)
    assert user.user_id
    later = await browser.get(f"/dashboard/p/{project_id}/messages")
    assert later.status_code == 200


async def test_signed_out_visitors_go_to_sign_in_and_come_back(
    browser: httpx.AsyncClient, db: Database
) -> None:
    found = await browser.get("/dashboard/p/prj_whatever/messages")
    assert found.status_code == 303
    assert found.headers["location"] == "/dashboard/signin?next=/dashboard/p/prj_whatever/messages"
    await dashboard_register(browser, "back@example.com", await invite_code(db))
    page = await browser.get("/dashboard/signin?next=https://evil.example/")
    assert 'name="next" value="/dashboard"' in page.text


async def test_a_locked_sign_in_says_when_to_try_again(
    app: Litestar, browser: httpx.AsyncClient, db: Database
) -> None:
    clock = install_clock(app)
    await dashboard_register(browser, "locked@example.com", await invite_code(db))
    async with _client(app) as someone:
        for _ in range(10):
            wrong = await dashboard_sign_in(someone, "locked@example.com", "not-the-password-9")
            assert wrong.status_code == 401
        locked = await dashboard_sign_in(someone, "locked@example.com")
        assert locked.status_code == 429
        assert locked.headers["retry-after"] == str(15 * 60)
        assert "in 15 min" in locked.text
        assert "simwire_access" not in locked.headers.get("set-cookie", "")
        clock.advance(minutes=15)
        assert (await dashboard_sign_in(someone, "locked@example.com")).status_code == 303


async def test_dashboard_routes_are_not_in_the_openapi_document(
    browser: httpx.AsyncClient,
) -> None:
    document = (await browser.get("/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith("/dashboard")]
