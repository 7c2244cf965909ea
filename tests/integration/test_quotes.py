"""POST /v1/quotes: exact segments, prices in USDC atomic units, blocks listed, a signed quote
id and nothing stored."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from app.api.app import create_app
from app.db.models import StoredQuote
from app.domain import quote_tokens
from app.domain.errors import InvalidInput
from app.services import quoting
from app.services.projects import set_policy
from tests.conftest import app_client
from tests.support.factories import new_tenant


async def test_gsm_quote_with_prices_and_a_signed_quote_id_nothing_stored(client, db, settings):
    response = await client.post(
        "/v1/quotes", json={"to": ["+14155550100", "+14155550101"], "message": "Hello {world}"}
    )
    assert response.status_code == 200
    quote = response.json()
    assert quote["encoding"] == "GSM-7" and quote["segment_count"] == 1
    assert quote["characters"] == 13 and quote["septets_or_units"] == 15  # { and } cost 2
    assert quote["ucs2_reasons"] == []
    assert [r["price"] for r in quote["recipients"]] == ["0.035", "0.035"]
    assert quote["total"] == "0.07" and quote["total_atomic"] == 70_000
    assert quote["currency"] == "USDC" and quote["allowed"] is True and quote["blocked"] == []
    async with db.sessions() as session:
        assert (await session.execute(select(StoredQuote))).scalars().all() == []  # no write
    claims = quote_tokens.read(quote["quote_id"], quoting.quote_signing_key(settings))
    assert claims is not None and claims.project_id is None
    assert claims.total_atomic == 70_000 and claims.recipient_count == 2
    assert claims.total_segments == 2  # one each
    assert claims.expires_at == int(datetime.fromisoformat(quote["expires_at"]).timestamp())


async def test_ucs2_quote_explains_why_and_shows_parts(client):
    body = "Grüße 😀 " * 12
    response = await client.post(
        "/v1/quotes?explain=true", json={"to": "+14155550100", "message": body}
    )
    quote = response.json()
    assert quote["encoding"] == "UCS-2" and "😀" in quote["ucs2_reasons"]
    assert quote["segment_count"] == len(quote["parts"]) == 2
    assert "".join(p["text"] for p in quote["parts"]) == body
    assert all(p["units"] <= 67 for p in quote["parts"])


async def test_blocked_destinations_and_content_are_listed_not_priced(client):
    quote = (
        await client.post("/v1/quotes", json={"to": ["+14155550100", "112"], "message": "hello"})
    ).json()
    assert quote["allowed"] is False
    assert (
        quote["blocked"][0]["to"] == "112"
        and quote["blocked"][0]["error"] == "emergency_number_blocked"
    )
    assert len(quote["recipients"]) == 1 and quote["total_atomic"] == 35_000
    spam = (
        await client.post(
            "/v1/quotes",
            json={
                "to": "+14155550100",
                "message": "Cheap beer and wine delivered tonight, 2 for 1 on craft IPA",
            },
        )
    ).json()
    assert spam["allowed"] is False and spam["blocked"][0]["categories"] == ["alcohol"]


async def test_a_key_applies_its_projects_policy_and_operator_prices(settings, db):
    brewery = await new_tenant(db, "brewery")
    await set_policy(db, brewery.project_id, allowed_categories=["alcohol"], default_region="GB")
    priced = settings.model_copy(
        update={"price_country_rates": {"GB": "0.05"}, "fee_per_request": "0.01"}
    )
    async with app_client(create_app(priced, db)) as http:
        payload = {"to": "07400 123456", "message": "Our new craft IPA is on tap this Friday"}
        quote = (await http.post("/v1/quotes", json=payload, headers=brewery.headers)).json()
        anonymous = await http.post("/v1/quotes", json=payload)
    assert quote["allowed"] is True and quote["recipients"][0]["to"] == "+447400123456"
    assert quote["recipients"][0]["price_atomic"] == 50_000
    assert quote["fees"] == "0.01" and quote["total_atomic"] == 60_000
    assert anonymous.status_code == 400 and anonymous.json()["error"] == "invalid_number"


async def test_quote_input_errors(client):
    too_many = {"to": [f"+1415555{i:04d}" for i in range(1001)], "message": "hi"}
    for payload, code in [
        ({"to": "+1415", "message": "hi"}, "invalid_number"),
        ({"to": "+14155550100"}, "invalid_body"),
        ({"to": "+14155550100", "message": ""}, "invalid_body"),
        (too_many, "too_many_recipients"),
        ({"to": "+14155550100", "message": "hi", "region": "Narnia"}, "invalid_input"),
    ]:
        response = await client.post("/v1/quotes", json=payload)
        assert response.status_code == 400 and response.json()["error"] == code, payload


async def test_policy_can_never_allow_an_always_blocked_category(db):
    tenant = await new_tenant(db)
    with pytest.raises(InvalidInput):
        await set_policy(db, tenant.project_id, allowed_categories=["phishing"])
