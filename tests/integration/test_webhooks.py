"""Webhook endpoints: the signing secret is shown once and stored only sealed under the
operator key; every route keeps to its project; URLs Simwire must not call are refused, saying
why; bad input is a 400 with a clear code."""

from __future__ import annotations

import base64
import re

import httpx
import pytest
from sqlalchemy import select

from app.api.app import create_app
from app.db.engine import Database
from app.db.models import Webhook
from app.domain.events import EVENT_TYPES
from app.services import webhooks
from app.services.ids import utcnow
from app.settings import Settings
from app.webhooks.secrets import SecretBox
from tests.conftest import TEST_SECRET_KEY, app_client
from tests.support.factories import new_tenant

HOOK = "http://127.0.0.1:9/hook"


async def create(client: httpx.AsyncClient, headers: dict[str, str], **body: object) -> dict:
    response = await client.post("/v1/webhooks", headers=headers, json={"url": HOOK, **body})
    assert response.status_code == 201, response.text
    return response.json()


async def stored(db: Database, webhook_id: str) -> Webhook:
    async with db.reading() as session:
        return (await session.execute(select(Webhook).where(Webhook.id == webhook_id))).scalar_one()


async def test_create_shows_the_secret_once_and_stores_it_sealed(client, db):
    tenant = await new_tenant(db)
    created = await create(client, tenant.headers, description="orders")
    assert created["id"].startswith("wh_")
    assert created["url"] == HOOK
    assert created["events"] == list(EVENT_TYPES)
    assert created["enabled"] is True
    assert created["description"] == "orders"
    secret = created["secret"]
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]+=*", secret)
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64

    row = await stored(db, created["id"])
    assert secret not in row.secret_sealed
    assert secret.removeprefix("whsec_") not in row.secret_sealed
    assert SecretBox(TEST_SECRET_KEY).open(row.secret_sealed, row.id) == secret
    with pytest.raises(ValueError):
        SecretBox("another-operator-key-" + "x" * 32).open(row.secret_sealed, row.id)
    with pytest.raises(ValueError):
        SecretBox(TEST_SECRET_KEY).open(row.secret_sealed, "wh_someone_else")

    one = (await client.get(f"/v1/webhooks/{created['id']}", headers=tenant.headers)).json()
    listed = (await client.get("/v1/webhooks", headers=tenant.headers)).json()
    assert "secret" not in one
    assert listed["count"] == 1 and "secret" not in listed["data"][0]
    assert one == {key: value for key, value in created.items() if key != "secret"}


async def test_an_event_filter_is_kept_in_canonical_order(client, db):
    tenant = await new_tenant(db)
    created = await create(
        client, tenant.headers, events=["message.delivered", "message.sent", "message.sent"]
    )
    assert created["events"] == ["message.sent", "message.delivered"]


async def test_patch_changes_only_what_it_names(client, db):
    tenant = await new_tenant(db)
    created = await create(client, tenant.headers, events=["message.sent"], description="a")
    path = f"/v1/webhooks/{created['id']}"
    response = await client.patch(path, headers=tenant.headers, json={"enabled": False})
    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is False
    assert response.json()["events"] == ["message.sent"]
    assert response.json()["description"] == "a"
    changed = await client.patch(
        path,
        headers=tenant.headers,
        json={"url": "http://127.0.0.1:10/other", "events": ["message.received"]},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["url"], body["events"], body["enabled"]) == (
        "http://127.0.0.1:10/other",
        ["message.received"],
        False,
    )
    again = (await client.get(path, headers=tenant.headers)).json()
    assert again == body
    bad = await client.patch(path, headers=tenant.headers, json={"events": ["message.lost"]})
    assert bad.status_code == 400 and bad.json()["error"] == "unknown_event_type"


async def test_rotate_issues_a_new_secret_and_the_old_one_signs_for_a_day(client, db, settings):
    tenant = await new_tenant(db)
    created = await create(client, tenant.headers)
    rotated = await client.post(f"/v1/webhooks/{created['id']}/rotate", headers=tenant.headers)
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != created["secret"]
    row = await stored(db, created["id"])
    now = utcnow()
    assert webhooks.signing_secrets(settings, row, now) == [new_secret, created["secret"]]
    assert row.previous_expires_at is not None
    later = row.previous_expires_at
    assert webhooks.signing_secrets(settings, row, later) == [new_secret]


async def test_delete_one_and_delete_all(client, db):
    tenant = await new_tenant(db)
    first, second, third = [await create(client, tenant.headers) for _ in range(3)]
    gone = await client.delete(f"/v1/webhooks/{first['id']}", headers=tenant.headers)
    assert gone.status_code == 200 and gone.json() == {"success": True, "deleted": 1}
    missing = await client.get(f"/v1/webhooks/{first['id']}", headers=tenant.headers)
    assert missing.status_code == 404
    again = await client.delete(f"/v1/webhooks/{first['id']}", headers=tenant.headers)
    assert again.status_code == 404
    all_gone = await client.delete("/v1/webhooks", headers=tenant.headers)
    assert all_gone.status_code == 200 and all_gone.json() == {"success": True, "deleted": 2}
    assert (await client.get("/v1/webhooks", headers=tenant.headers)).json()["count"] == 0


async def test_one_project_never_reaches_another_projects_webhooks(client, db):
    ours = await new_tenant(db, "ours")
    theirs = await new_tenant(db, "theirs")
    their_hook = await create(client, theirs.headers)
    path = f"/v1/webhooks/{their_hook['id']}"
    assert (await client.get("/v1/webhooks", headers=ours.headers)).json()["count"] == 0
    assert (await client.get(path, headers=ours.headers)).status_code == 404
    assert (
        await client.patch(path, headers=ours.headers, json={"enabled": False})
    ).status_code == 404
    assert (await client.post(path + "/rotate", headers=ours.headers)).status_code == 404
    assert (await client.delete(path, headers=ours.headers)).status_code == 404
    assert (await client.delete("/v1/webhooks", headers=ours.headers)).json()["deleted"] == 0
    still = await client.get(path, headers=theirs.headers)
    assert still.status_code == 200 and still.json()["enabled"] is True


async def test_webhooks_need_the_webhooks_manage_scope(client, db):
    reader = await new_tenant(db, scopes=["messages.read"])
    assert (await client.get("/v1/webhooks", headers=reader.headers)).status_code == 403
    response = await client.post("/v1/webhooks", headers=reader.headers, json={"url": HOOK})
    assert response.status_code == 403
    assert response.json()["required_scope"] == "webhooks.manage"
    assert (await client.get("/v1/webhooks")).status_code == 401


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "not a url"}, "invalid_url"),
        ({"url": "ftp://files.example.com/hook"}, "invalid_url"),
        ({"url": "https://"}, "invalid_url"),
        ({"url": "https://a.example.com/" + "x" * 2030}, "invalid_url"),
        ({"url": "https://user:pw@example.com/hook"}, "invalid_url"),
        ({"url": HOOK, "events": ["message.bounced"]}, "unknown_event_type"),
        ({"url": HOOK, "events": []}, "invalid_input"),
        ({"url": HOOK, "secret": "mine"}, "invalid_request"),
        ({"url": HOOK, "description": "x" * 501}, "invalid_input"),
        ({"url": HOOK, "description": "a\u0000b"}, "invalid_input"),
        ({"url": "http://127.0.0.1/a\u0000b"}, "invalid_url"),
    ],
)
async def test_bad_input_is_400_with_a_clear_code(client, db, body, code):
    tenant = await new_tenant(db)
    response = await client.post("/v1/webhooks", headers=tenant.headers, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code


async def test_a_url_of_2048_characters_is_taken(client, db):
    tenant = await new_tenant(db)
    url = "http://127.0.0.1:9/" + "x" * (2048 - len("http://127.0.0.1:9/"))
    assert len(url) == 2048
    assert (await create(client, tenant.headers, url=url))["url"] == url


@pytest.fixture
async def strict_client(settings: Settings, db: Database):
    strict = settings.model_copy(update={"webhook_allow_private": False})
    async with app_client(create_app(strict, db)) as http:
        yield http


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://93.184.215.14/hook", "only https URLs are allowed"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://localhost/hook", "'localhost' resolves to"),
        ("https://10.0.0.1/hook", "private"),
        ("https://192.168.1.1/hook", "private"),
        ("https://172.16.5.4/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("https://169.254.10.1/hook", "link-local"),
        ("https://100.64.0.1/hook", "CGNAT"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://[::1]/hook", "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://[::ffff:10.1.2.3]/hook", "private"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[fd00:ec2::254]/hook", "cloud metadata"),
        ("https://[::]/hook", "unspecified"),
        ("https://no-such-host.invalid/hook", "does not resolve"),
    ],
)
async def test_urls_simwire_must_not_call_are_refused_saying_why(strict_client, db, url, reason):
    tenant = await new_tenant(db)
    response = await strict_client.post("/v1/webhooks", headers=tenant.headers, json={"url": url})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "webhook_url_not_allowed"
    assert reason in body["reason"] and reason in body["message"]
    async with db.reading() as session:
        assert (await session.execute(select(Webhook))).first() is None


async def test_a_public_https_address_is_taken_and_patching_to_a_private_one_is_not(
    strict_client, db
):
    tenant = await new_tenant(db)
    response = await strict_client.post(
        "/v1/webhooks", headers=tenant.headers, json={"url": "https://93.184.215.14/hook"}
    )
    assert response.status_code == 201, response.text
    path = f"/v1/webhooks/{response.json()['id']}"
    patched = await strict_client.patch(
        path, headers=tenant.headers, json={"url": "https://[::ffff:169.254.169.254]/"}
    )
    assert patched.status_code == 400
    assert patched.json()["error"] == "webhook_url_not_allowed"
    assert (await strict_client.get(path, headers=tenant.headers)).json()["url"] == (
        "https://93.184.215.14/hook"
    )


async def test_without_an_operator_key_no_webhook_is_created(settings, db):
    keyless = settings.model_copy(update={"secret_key": None})
    tenant = await new_tenant(db)
    async with app_client(create_app(keyless, db)) as http:
        response = await http.post("/v1/webhooks", headers=tenant.headers, json={"url": HOOK})
    assert response.status_code == 503
    assert "SIMWIRE_SECRET_KEY" in response.json()["message"]
    async with db.reading() as session:
        assert (await session.execute(select(Webhook))).first() is None
