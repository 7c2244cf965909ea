"""Sending on prepaid credits: quote, screen, charge once, dispatch, refund on failure."""

from __future__ import annotations

import asyncio
import shlex

import httpx
from click.testing import CliRunner
from sqlalchemy import func, select

from app.cli import main
from app.db.models import LedgerEntry, Message, MessageRequest
from app.phone.radios.fake import FakeRadio, fake_sims
from app.services import credits, devices
from tests.support.factories import new_tenant
from tests.support.live import eventually, fast_settings, live_server, start_phone

RATE = 35_000  # default USDC atomic units per segment


async def count(db, model, *where):
    async with db.sessions() as session:
        return (
            await session.execute(select(func.count()).select_from(model).where(*where))
        ).scalar_one()


async def message(db, message_id):
    async with db.sessions() as session:
        return (await session.execute(select(Message).where(Message.id == message_id))).scalar_one()


async def test_send_is_charged_dispatched_sent_and_delivered(settings, db, tmp_path):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(fast_settings(settings), db) as server:
        phone = await start_phone(server, paired.token, tmp_path / "p.db")
        try:
            async with httpx.AsyncClient(base_url=server.url) as http:
                response = await http.post(
                    "/v1/messages",
                    json={
                        "to": ["+14155550100", "+14155550101"],
                        "message": "Your table is ready",
                        "tag": "t1",
                    },
                    headers=tenant.headers,
                )
                assert response.status_code == 202, response.text
                body = response.json()
                assert body["status"] == "processing" and body["charged_atomic"] == 2 * RATE
                assert body["segment_count"] == 1 and body["recipient_count"] == 2
                assert body["messaging_fee_atomic"] == 2 * RATE and len(body["messages"]) == 2
                for sent in body["messages"]:
                    await eventually(lambda m=sent["id"]: _status(db, m, "delivered"))
        finally:
            await phone.stop()
    assert sorted(s.to for s in phone.radio.sent) == ["+14155550100", "+14155550101"]
    assert await credits.ledger_sum(db, tenant.project_id) == (1_000_000 - 2 * RATE,) * 2


async def _status(db, message_id, wanted):
    return (await message(db, message_id)).status == wanted


async def test_failing_radio_refunds_the_message(settings, db, tmp_path):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 100_000)
    paired = await devices.pair_device(db, tenant.project_id)
    async with live_server(fast_settings(settings), db) as server:
        phone = await start_phone(
            server, paired.token, tmp_path / "p.db", FakeRadio(sims=fake_sims(1), failure_rate=1.0)
        )
        try:
            async with httpx.AsyncClient(base_url=server.url) as http:
                body = (
                    await http.post(
                        "/v1/messages",
                        json={"to": "+14155550100", "message": "hi"},
                        headers=tenant.headers,
                    )
                ).json()
            message_id = body["messages"][0]["id"]
            await eventually(lambda: _status(db, message_id, "failed"))
        finally:
            await phone.stop()
    assert (await message(db, message_id)).error_code == "generic_failure"
    assert await credits.ledger_sum(db, tenant.project_id) == (100_000, 100_000)
    assert await count(db, LedgerEntry, LedgerEntry.kind == "refund") == 1


async def test_concurrent_sends_never_overdraw(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 50 * RATE)

    async def send(i):
        return await client.post(
            "/v1/messages",
            json={"to": f"+1415555{i:04d}", "message": "flash sale at noon"},
            headers=tenant.headers,
        )

    responses = await asyncio.gather(*(send(i) for i in range(200)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(202) == 50 and statuses.count(402) == 150
    refused = next(r.json() for r in responses if r.status_code == 402)
    assert refused["error"] == "insufficient_credits" and refused["required_atomic"] == RATE
    assert await credits.ledger_sum(db, tenant.project_id) == (0, 0)
    assert await count(db, Message) == 50
    assert await count(db, MessageRequest) == 50


async def test_insufficient_credits_charges_nothing_of_a_bulk_request(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 2 * RATE)
    response = await client.post(
        "/v1/messages",
        json={"to": ["+14155550100", "+14155550101", "+14155550102"], "message": "x"},
        headers=tenant.headers,
    )
    assert response.status_code == 402
    body = response.json()
    assert body.pop("docs_url").endswith("/docs/errors#insufficient_credits")
    assert body | {"message": ""} == {
        "error": "insufficient_credits",
        "message": "",
        "balance_atomic": 2 * RATE,
        "required_atomic": 3 * RATE,
        "fix": [
            f"simwire credits grant {tenant.project_id} 0.035",
            'POST /v1/credits/topup {"amount": "0.035"}',
        ],
    }
    assert await credits.ledger_sum(db, tenant.project_id) == (2 * RATE, 2 * RATE)
    assert await count(db, Message) == 0


async def test_insufficient_credits_names_fixes_and_the_grant_works_as_given(client, db, settings):
    tenant = await new_tenant(db)
    send = {"to": "+14155550100", "message": "first message"}
    refused = await client.post("/v1/messages", json=send, headers=tenant.headers)
    assert refused.status_code == 402
    body = refused.json()
    grant, topup = body["fix"]
    assert f"`{grant}`" in body["message"] and topup in body["message"]
    assert "/v1/credits/topup" in topup and "x402" in body["message"]
    command = shlex.split(grant)
    assert command[0] == "simwire"
    granted = await asyncio.to_thread(
        CliRunner().invoke, main, command[1:], env={"SIMWIRE_DATABASE_URL": settings.database_url}
    )
    assert granted.exit_code == 0, granted.output
    sent = await client.post("/v1/messages", json=send, headers=tenant.headers)
    assert sent.status_code == 202, sent.text


async def test_idempotent_retry_charges_once_and_other_body_conflicts(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    headers = {**tenant.headers, "Idempotency-Key": "order-1234"}
    payload = {"to": "+14155550100", "message": "Order 1234 shipped"}
    first, second = await asyncio.gather(
        client.post("/v1/messages", json=payload, headers=headers),
        client.post("/v1/messages", json=payload, headers=headers),
    )
    third = await client.post("/v1/messages", json=payload, headers=headers)
    assert first.status_code == second.status_code == third.status_code == 202
    assert first.json() == second.json() == third.json()
    assert await credits.ledger_sum(db, tenant.project_id) == (9 * RATE, 9 * RATE)
    other = await client.post(
        "/v1/messages", json={**payload, "message": "changed"}, headers=headers
    )
    assert other.status_code == 409 and other.json()["error"] == "conflict"
    assert await count(db, Message) == 1


async def test_long_idempotency_keys_never_collide_and_overlong_ones_are_refused(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    payload = {"to": "+14155550100", "message": "Order 1234 shipped"}
    # Two keys equal in their first 254 characters (200 used to be kept) name two requests.
    key_a, key_b = "k" * 254 + "a", "k" * 254 + "b"
    first = await client.post(
        "/v1/messages", json=payload, headers={**tenant.headers, "Idempotency-Key": key_a}
    )
    second = await client.post(
        "/v1/messages",
        json={**payload, "message": "Order 1235 shipped"},
        headers={**tenant.headers, "Idempotency-Key": key_b},
    )
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert first.json()["request_id"] != second.json()["request_id"]
    repeat = await client.post(
        "/v1/messages", json=payload, headers={**tenant.headers, "Idempotency-Key": key_a}
    )
    assert repeat.json() == first.json()
    async with db.sessions() as session:
        stored = set((await session.execute(select(MessageRequest.idempotency_key))).scalars())
    assert stored == {key_a, key_b}

    overlong = await client.post(
        "/v1/messages", json=payload, headers={**tenant.headers, "Idempotency-Key": "k" * 256}
    )
    assert overlong.status_code == 400
    assert overlong.json()["error"] == "invalid_idempotency_key"
    assert "255" in overlong.json()["message"]
    assert await count(db, Message) == 2
    assert await credits.ledger_sum(db, tenant.project_id) == (8 * RATE, 8 * RATE)


async def test_cancel_refunds_once_even_when_raced_with_dispatch(settings, db, tmp_path):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    paired = await devices.pair_device(db, tenant.project_id)
    async with (
        live_server(fast_settings(settings), db) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        body = (
            await http.post(
                "/v1/messages", json={"to": "+14155550100", "message": "hi"}, headers=tenant.headers
            )
        ).json()
        message_id = body["messages"][0]["id"]
        phone_task = asyncio.create_task(start_phone(server, paired.token, tmp_path / "p.db"))
        cancels = await asyncio.gather(
            *(
                http.post(f"/v1/messages/{message_id}/cancel", headers=tenant.headers)
                for _ in range(3)
            )
        )
        phone = await phone_task
        try:
            final = await eventually(lambda: _final(db, message_id))
        finally:
            await phone.stop()
    refunds = await count(db, LedgerEntry, LedgerEntry.kind == "refund")
    assert refunds == (1 if final == "canceled" else 0)
    assert [r.status_code for r in cancels].count(200) == (1 if final == "canceled" else 0)
    balance, total = await credits.ledger_sum(db, tenant.project_id)
    assert balance == total == (10 * RATE if final == "canceled" else 9 * RATE)


async def _final(db, message_id):
    status = (await message(db, message_id)).status
    return status if status in ("canceled", "delivered") else None


async def test_bad_input_is_400_with_its_code_and_stores_nothing(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    cases = [
        ({"message": "hi"}, "invalid_body"),
        ({"to": "+14155550100"}, "invalid_body"),
        ({"to": "+14155550100", "message": "x" * 1601}, "message_too_long"),
        ({"to": "+14155550100", "message": "   "}, "invalid_body"),
        ({"to": [f"+1415555{i:04d}" for i in range(1001)], "message": "hi"}, "too_many_recipients"),
        ({"to": "12345", "message": "hi"}, "invalid_number"),
        ({"to": 42, "message": "hi"}, "invalid_body"),
        ({"to": "+14155550100", "message": "hi", "ttl_s": "soon"}, "invalid_input"),
        ([1, 2], "invalid_body"),
    ]
    for payload, code in cases:
        response = await client.post("/v1/messages", json=payload, headers=tenant.headers)
        assert response.status_code == 400, (payload, response.text)
        assert response.json()["error"] == code, payload
    raw = await client.post(
        "/v1/messages",
        content=b"to=1",
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert raw.status_code == 400 and raw.json()["error"] == "malformed_json"
    assert await count(db, Message) == 0 and await count(db, MessageRequest) == 0
    assert await credits.ledger_sum(db, tenant.project_id) == (10 * RATE, 10 * RATE)


async def test_blocked_content_and_emergency_numbers_are_422_and_free(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    emergency = await client.post(
        "/v1/messages",
        json={"to": ["+14155550100", "911"], "message": "hi"},
        headers=tenant.headers,
    )
    assert emergency.status_code == 422
    assert (
        emergency.json()["error"] == "emergency_number_blocked"
        and emergency.json()["blocked_number"] == "911"
    )
    phishing = await client.post(
        "/v1/messages",
        json={
            "to": "+14155550100",
            "message": "Your bank account is locked. Verify now at http://192.168.4.20/login",
        },
        headers=tenant.headers,
    )
    assert phishing.status_code == 422 and phishing.json()["error"] == "content_blocked"
    assert "phishing" in phishing.json()["categories"]
    assert await count(db, Message) == 0
    assert await credits.ledger_sum(db, tenant.project_id) == (10 * RATE, 10 * RATE)


async def test_messages_list_form_and_unicode_pricing(client, db):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10 * RATE)
    response = await client.post(
        "/v1/messages",
        json={
            "messages": [
                {"to": "+14155550100", "message": "plain"},
                {"to": "+14155550101", "message": "日本語" * 30, "tag": "jp"},
            ]
        },
        headers=tenant.headers,
    )
    assert response.status_code == 202
    body = response.json()
    assert [m["segments"] for m in body["messages"]] == [1, 2]
    assert body["charged_atomic"] == 3 * RATE


async def test_send_needs_the_send_scope(client, db):
    tenant = await new_tenant(db, scopes=["messages.read"])
    response = await client.post(
        "/v1/messages", json={"to": "+14155550100", "message": "hi"}, headers=tenant.headers
    )
    assert response.status_code == 403
