"""The event outbox: an event exists exactly when the transaction that recorded it committed,
and `GET /v1/events` lists a project's events newest first with every filter and the cursor
returning exactly the right rows, to the right keys, never another project's."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from app.db.engine import Database
from app.services import events
from app.services.ids import iso_utc, utcnow
from tests.support.factories import new_tenant

NOW = utcnow()


async def record(db: Database, project_id: str, type: str, n: int, **data: object) -> str:
    async with db.transaction() as session:
        event = await events.record_event(
            session, project_id, type, {"n": n, **data}, now=NOW + timedelta(seconds=n)
        )
    return event.id


async def listed(client: httpx.AsyncClient, headers: dict[str, str], **params: object) -> dict:
    response = await client.get("/v1/events", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_an_event_commits_or_rolls_back_with_its_transaction(client, db):
    tenant = await new_tenant(db)
    kept = await record(db, tenant.project_id, "message.sent", 1, id="msg_1")
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await events.record_event(session, tenant.project_id, "message.failed", {"n": 2})
            raise RuntimeError("the change failed after its event was written")
    body = await listed(client, tenant.headers)
    assert [event["id"] for event in body["data"]] == [kept]
    assert body["data"][0] == {
        "id": kept,
        "type": "message.sent",
        "created_at": iso_utc(NOW + timedelta(seconds=1)),
        "project_id": tenant.project_id,
        "data": {"n": 1, "id": "msg_1"},
    }
    assert body["count"] == 1 and body["next_cursor"] is None


async def test_record_event_refuses_a_type_that_does_not_exist(db):
    tenant = await new_tenant(db)
    async with db.transaction() as session:
        with pytest.raises(ValueError, match="message.bounced"):
            await events.record_event(session, tenant.project_id, "message.bounced", {})


async def test_events_are_listed_newest_first_and_filtered(client, db):
    tenant = await new_tenant(db)
    types = ["message.queued", "message.sent", "message.delivered", "device.online"] * 3
    ids = [await record(db, tenant.project_id, kind, n) for n, kind in enumerate(types)]
    newest_first = ids[::-1]

    assert [e["id"] for e in (await listed(client, tenant.headers))["data"]] == newest_first
    sent = await listed(client, tenant.headers, type="message.sent")
    assert [e["id"] for e in sent["data"]] == [ids[9], ids[5], ids[1]]
    both = await listed(client, tenant.headers, type="message.sent,device.online")
    assert [e["id"] for e in both["data"]] == [ids[11], ids[9], ids[7], ids[5], ids[3], ids[1]]
    since = await listed(client, tenant.headers, since=iso_utc(NOW + timedelta(seconds=9)))
    assert [e["id"] for e in since["data"]] == [ids[11], ids[10], ids[9]]
    after = await listed(client, tenant.headers, since_id=ids[8])
    assert [e["id"] for e in after["data"]] == [ids[11], ids[10], ids[9]]
    narrowed = await listed(client, tenant.headers, since_id=ids[2], type="device.online")
    assert [e["id"] for e in narrowed["data"]] == [ids[11], ids[7], ids[3]]


async def test_the_cursor_walks_every_event_once(client, db):
    tenant = await new_tenant(db)
    ids = [await record(db, tenant.project_id, "message.sent", n) for n in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        body = await listed(client, tenant.headers, **params)
        seen += [event["id"] for event in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert pages == 3


async def test_one_project_never_sees_another_projects_events(client, db):
    ours = await new_tenant(db, "ours")
    theirs = await new_tenant(db, "theirs")
    our_event = await record(db, ours.project_id, "message.sent", 1)
    their_event = await record(db, theirs.project_id, "message.sent", 2)

    assert [e["id"] for e in (await listed(client, ours.headers))["data"]] == [our_event]
    assert [e["id"] for e in (await listed(client, theirs.headers))["data"]] == [their_event]
    response = await client.get(
        "/v1/events", headers=ours.headers, params={"since_id": their_event}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert response.json()["param"] == "since_id"


@pytest.mark.parametrize("scope", ["webhooks.manage", "messages.read", "admin"])
async def test_either_reading_scope_lists_events(client, db, scope):
    tenant = await new_tenant(db, scopes=[scope])
    event_id = await record(db, tenant.project_id, "device.online", 1)
    assert [e["id"] for e in (await listed(client, tenant.headers))["data"]] == [event_id]


async def test_other_scopes_and_no_key_are_refused(client, db):
    tenant = await new_tenant(db, scopes=["messages.send", "devices.manage"])
    response = await client.get("/v1/events", headers=tenant.headers)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert response.json()["accepted_scopes"] == ["webhooks.manage", "messages.read"]
    anonymous = await client.get("/v1/events")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"type": "message.bounced"}, "type", "invalid_input"),
        ({"type": "message.sent,nope"}, "type", "invalid_input"),
        ({"since": "yesterday"}, "since", "invalid_input"),
        ({"limit": "0"}, "limit", "invalid_input"),
        ({"cursor": "not-a-cursor"}, "cursor", "invalid_cursor"),
        ({"since_id": "evt_missing"}, "since_id", "invalid_input"),
    ],
)
async def test_bad_query_values_are_400_naming_their_parameter(client, db, params, param, code):
    tenant = await new_tenant(db)
    response = await client.get("/v1/events", headers=tenant.headers, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == code
    assert response.json()["param"] == param
