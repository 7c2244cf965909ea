"""What a caller sends is understood or refused by name: unknown and missing fields, the size
limit, timestamps in one format, the field names other gateways use, and a warning when no
phone can take a message yet."""

from __future__ import annotations

import asyncio
import re

import httpx
from sqlalchemy import update
from sqlmodel import col

from app.api.app import create_app
from app.db.engine import Database
from app.db.models import Sim
from app.services import credits, devices
from app.services.inbound import ReceivedSms, store_inbound
from tests.conftest import app_client
from tests.integration.test_hub import RawPhone
from tests.support.factories import new_tenant
from tests.support.live import eventually, fast_settings, live_server

SEND = {"to": "+14155550100", "message": "Your code is 4821"}
# A timestamp as the API writes it: ISO 8601 in UTC, ending in Z.
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


async def test_a_typo_in_a_field_name_is_refused_naming_the_field(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000)

    send = await client.post("/v1/messages", json={**SEND, "tll_s": 60}, headers=tenant.headers)
    quote = await client.post("/v1/quotes", json={**SEND, "tll_s": 60}, headers=tenant.headers)
    batch = await client.post(
        "/v1/messages",
        json={"messages": [{**SEND, "tagg": "x"}], "regoin": "US"},
        headers=tenant.headers,
    )
    in_item = await client.post(
        "/v1/messages", json={"messages": [{**SEND, "tagg": "x"}]}, headers=tenant.headers
    )
    quote_batch = await client.post("/v1/quotes", json={"messages": [SEND]}, headers=tenant.headers)

    for response, field in [
        (send, "tll_s"),
        (quote, "tll_s"),
        (batch, "regoin"),
        (in_item, "tagg"),
        (quote_batch, "messages"),
    ]:
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"] == "unknown_field" and body["field"] == field
        assert f"`{field}`" in body["message"]
    assert "messages[0]" in in_item.json()["message"]
    # The fields it does take still work, on the send and on its quote alike.
    known = {**SEND, "ttl_s": 60, "tag": "otp", "region": "US", "sim": 0}
    assert (await client.post("/v1/quotes", json=known, headers=tenant.headers)).status_code == 200
    sent = await client.post("/v1/messages", json=known, headers=tenant.headers)
    assert sent.status_code == 202, sent.text


async def test_an_empty_body_names_the_missing_fields(client, db):
    tenant = await new_tenant(db)
    for url in ("/v1/messages", "/v1/quotes"):
        empty_object = await client.post(url, json={}, headers=tenant.headers)
        only_to = await client.post(url, json={"to": SEND["to"]}, headers=tenant.headers)
        nothing = await client.post(
            url, content=b"", headers={**tenant.headers, "Content-Type": "application/json"}
        )

        assert empty_object.status_code == 400
        assert empty_object.json()["error"] == "invalid_body"
        assert empty_object.json()["missing_fields"] == ["to", "message"]
        assert "`to`" in empty_object.json()["message"]
        assert only_to.json()["missing_fields"] == ["message"]
        assert nothing.status_code == 400, nothing.text
        assert nothing.json()["error"] in ("invalid_body", "malformed_json")
        assert "to" in nothing.json()["message"] or nothing.json()["error"] == "malformed_json"


async def test_a_body_over_the_limit_is_413_naming_the_limit(settings, db):
    small = settings.model_copy(update={"max_request_bytes": 2_000})
    tenant = await new_tenant(db)
    async with app_client(create_app(small, db)) as http:
        response = await http.post(
            "/v1/messages", json={**SEND, "message": "x" * 5_000}, headers=tenant.headers
        )

    assert response.status_code == 413
    body = response.json()
    assert body["error"] == "body_too_large" and body["limit_bytes"] == 2_000
    assert "2000 bytes" in body["message"]


async def test_every_timestamp_the_api_writes_is_utc_with_z(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000)
    paired = await devices.pair_device(db, tenant.project_id, "pixel")
    sent = (await client.post("/v1/messages", json=SEND, headers=tenant.headers)).json()
    answers = [
        (await client.post("/v1/quotes", json=SEND, headers=tenant.headers)).json(),
        (await client.get(f"/v1/messages/{sent['messages'][0]['id']}", headers=tenant.headers)),
        (await client.get("/v1/messages", headers=tenant.headers)),
        (await client.get(f"/v1/requests/{sent['request_id']}", headers=tenant.headers)),
        (await client.get("/v1/devices", headers=tenant.headers)),
        (await client.get("/v1/keys", headers=tenant.headers)),
        (await client.get("/v1/credits", headers=tenant.headers)),
    ]

    stamps = []
    for answer in answers:
        stamps += _timestamps(answer if isinstance(answer, dict) else answer.json())
    assert len(stamps) >= 8 and paired.device.id
    assert [s for s in stamps if not s.endswith("Z")] == []


def _timestamps(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _timestamps(value)]
    if isinstance(node, list):
        return [s for value in node for s in _timestamps(value)]
    return [node] if isinstance(node, str) and ISO.match(node) else []


async def test_pairing_takes_model_and_os_version_and_lists_them(client, db):
    tenant = await new_tenant(db)

    paired = await client.post(
        "/v1/devices",
        json={"name": "shop phone", "model": "Pixel 8", "os_version": "Android 15"},
        headers=tenant.headers,
    )
    listed = (await client.get("/v1/devices", headers=tenant.headers)).json()

    assert paired.status_code == 201, paired.text
    assert paired.json()["model"] == "Pixel 8" and paired.json()["os_version"] == "Android 15"
    [device] = listed["data"]
    assert device["model"] == "Pixel 8"
    assert device["os_version"] == "Android 15" and device["os"] == "Android 15"


async def test_messages_can_be_filtered_by_sim_number_or_slot_and_by_inbound_outbound(client, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    [sim] = await devices.report_sims(
        db, paired.device, [devices.ReportedSim(1, "+15550100001", "Carrier", None)]
    )
    await store_inbound(db, paired.device, ReceivedSms("p-1", "+14155550199", "hi", None, 1))
    await credits.grant(db, tenant.project_id, 1_000_000)
    await client.post("/v1/messages", json=SEND, headers=tenant.headers)

    async def ids(query: str) -> list[str]:
        response = await client.get(f"/v1/messages?{query}", headers=tenant.headers)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["data"]]

    [inbound] = await ids(f"sim={sim.id}")
    assert await ids("sim=1") == [inbound]
    assert await ids("sim=%2B15550100001") == [inbound]
    assert await ids("sim=5550100001") == [inbound]
    assert await ids("sim=2") == []
    assert await ids("direction=inbound") == [inbound] == await ids("direction=in")
    outbound = await ids("direction=outbound")
    assert len(outbound) == 1 and outbound == await ids("direction=out")
    assert (await client.get("/v1/messages?direction=sideways", headers=tenant.headers)).json()[
        "error"
    ] == "invalid_input"


async def test_a_send_or_quote_with_no_phone_online_warns_that_it_waits(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000)

    alone = await client.post("/v1/messages", json=SEND, headers=tenant.headers)
    quoted = await client.post("/v1/quotes", json=SEND, headers=tenant.headers)
    paired = await devices.pair_device(db, tenant.project_id)
    await devices.report_sims(db, paired.device, [devices.ReportedSim(0, "+15550100001")])
    served = await client.post("/v1/messages", json=SEND, headers=tenant.headers)
    pinned_elsewhere = await client.post(
        "/v1/messages", json={**SEND, "sim": "+15550100999"}, headers=tenant.headers
    )

    assert alone.status_code == 202
    [warning] = alone.json()["warnings"]
    assert warning["code"] == "no_phone_online" and "86400 s" in warning["message"]
    assert quoted.json()["warnings"][0]["code"] == "no_phone_online"
    assert served.json()["warnings"] == []
    assert pinned_elsewhere.json()["warnings"][0]["code"] == "no_phone_online"


async def test_looking_for_a_phone_waits_on_no_writer(client, db, settings):
    """A quote's or send's look for an online phone is a read: a long write elsewhere (another
    process holding SQLite's write lock, a PostgreSQL transaction on the SIM) does not hold
    it up."""
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    await devices.report_sims(db, paired.device, [devices.ReportedSim(0, "+15550100001")])
    writer = Database(settings.database_url)
    try:
        async with writer.transaction() as session:
            await session.execute(
                update(Sim).where(col(Sim.device_id) == paired.device.id).values(carrier="held")
            )
            quoted = await asyncio.wait_for(
                client.post("/v1/quotes", json=SEND, headers=tenant.headers), timeout=10
            )
    finally:
        await writer.dispose()
    assert quoted.status_code == 200
    assert quoted.json()["warnings"] == []


async def test_the_phones_hello_updates_what_pairing_said(settings, db):
    tenant = await new_tenant(db)
    async with (
        live_server(fast_settings(settings), db) as server,
        httpx.AsyncClient(base_url=server.url, headers=tenant.headers) as http,
    ):
        paired = await http.post(
            "/v1/devices", json={"model": "Pixel 8", "os_version": "Android 15"}
        )
        phone = await RawPhone.connect(server, paired.json()["token"])
        await phone.send(
            {"type": "hello", "device": {"model": "Pixel 9", "os": "Android 16"}, "sims": []}
        )

        async def listed() -> dict | None:
            [device] = (await http.get("/v1/devices")).json()["data"]
            return device if device["model"] == "Pixel 9" else None

        device = await eventually(listed)
        await phone.close()

    assert device["os_version"] == "Android 16" == device["os"]
