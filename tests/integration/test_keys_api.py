"""API keys: shown once, stored hashed, scoped, revocable, rotatable, isolated per project."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import MetaData, select

from app.db.engine import Database
from app.domain.credentials import hash_secret
from tests.support.factories import new_tenant

KEY_RE = re.compile(r"^sw_live_[0-9a-f]{32}$")


async def all_stored_text(db: Database) -> str:
    """Every value of every table, as text: to prove a secret is nowhere in storage."""
    metadata = MetaData()
    async with db.engine.connect() as conn:
        await conn.run_sync(metadata.reflect)
        chunks = []
        for table in metadata.sorted_tables:
            for row in (await conn.execute(select(table))).all():
                chunks.append(repr(tuple(row)))
    return "\n".join(chunks)


async def test_created_key_is_shown_once_and_stored_only_as_hash(client, db, capfd):
    tenant = await new_tenant(db)
    response = await client.post("/v1/keys", json={"name": "ci"}, headers=tenant.headers)
    assert response.status_code == 201
    body = response.json()
    raw = body["key"]
    assert KEY_RE.match(raw)
    assert body["display_prefix"] == raw[:16]
    assert set(body["scopes"]) >= {"messages.send", "keys.manage"}

    listing = (await client.get("/v1/keys", headers=tenant.headers)).json()
    assert raw not in str(listing)
    assert {k["id"] for k in listing["data"]} == {tenant.key_id, body["id"]}

    assert (await client.get("/v1/project", headers={"X-Api-Key": raw})).status_code == 200
    stored = await all_stored_text(db)
    assert raw not in stored and tenant.key not in stored
    assert hash_secret(raw) in stored
    logged = capfd.readouterr()
    assert raw not in logged.out + logged.err
    assert tenant.key not in logged.out + logged.err


async def test_project_endpoint_tells_the_key_its_project_and_scopes(client, db):
    tenant = await new_tenant(db, scopes=["messages.read", "credits.read"])
    body = (await client.get("/v1/project", headers=tenant.headers)).json()
    assert body["id"] == tenant.project_id
    assert body["scopes"] == ["messages.read", "credits.read"]
    assert body["key_id"] == tenant.key_id
    assert body["organization_id"].startswith("org_")


async def test_revoked_key_gets_401_at_once(client, db):
    tenant = await new_tenant(db)
    other = (await client.post("/v1/keys", json={}, headers=tenant.headers)).json()
    revoked = await client.delete(f"/v1/keys/{other['id']}", headers=tenant.headers)
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    response = await client.get("/v1/project", headers={"Authorization": f"Bearer {other['key']}"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_rotated_out_key_gets_401_and_new_key_works(client, db):
    tenant = await new_tenant(db)
    old = (
        await client.post("/v1/keys", json={"scopes": ["messages.read"]}, headers=tenant.headers)
    ).json()
    rotated = await client.post(f"/v1/keys/{old['id']}/rotate", headers=tenant.headers)
    assert rotated.status_code == 201
    new = rotated.json()
    assert new["key"] != old["key"] and new["scopes"] == ["messages.read"]
    old_auth = {"Authorization": f"Bearer {old['key']}"}
    new_auth = {"Authorization": f"Bearer {new['key']}"}
    assert (await client.get("/v1/project", headers=old_auth)).status_code == 401
    assert (await client.get("/v1/project", headers=new_auth)).status_code == 200


async def test_key_without_scope_gets_403(client, db):
    tenant = await new_tenant(db, scopes=["messages.read"])
    response = await client.get("/v1/keys", headers=tenant.headers)
    assert response.status_code == 403
    assert response.json() == {
        "error": "forbidden",
        "message": "this key lacks the 'keys.manage' scope",
        "required_scope": "keys.manage",
        "docs_url": "http://simwire.test/docs/errors#forbidden",
    }


async def test_admin_scope_implies_every_scope(client, db):
    tenant = await new_tenant(db, scopes=["admin"])
    assert (await client.get("/v1/keys", headers=tenant.headers)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sw_live_" + "0" * 32},
        {"Authorization": "Bearer nonsense"},
        {"X-Api-Key": "sw_live_short"},
        {"Authorization": "Basic abc"},
    ],
)
async def test_missing_or_invalid_key_gets_401(client, headers):
    response = await client.get("/v1/keys", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_project_a_cannot_see_or_touch_project_b_keys(client, db):
    a = await new_tenant(db, "a")
    b = await new_tenant(db, "b")
    listing = (await client.get("/v1/keys", headers=a.headers)).json()
    assert [k["id"] for k in listing["data"]] == [a.key_id]
    for method, path in [
        ("delete", f"/v1/keys/{b.key_id}"),
        ("post", f"/v1/keys/{b.key_id}/rotate"),
    ]:
        response = await getattr(client, method)(path, headers=a.headers)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"
    assert (await client.get("/v1/project", headers=b.headers)).status_code == 200


async def test_unknown_scope_is_rejected(client, db):
    tenant = await new_tenant(db)
    response = await client.post("/v1/keys", json={"scopes": ["root"]}, headers=tenant.headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert "root" in response.json()["message"]
