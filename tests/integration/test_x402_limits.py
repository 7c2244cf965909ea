"""No SMS bombing or pumping through pay-per-call, on a real dev chain and both databases: the
sixth paid message to one number in an hour, a wallet's sends past its hourly budget, a
suppressed number and a premium-rate one are all refused before any payment is asked for or
taken (no 402, no authorization settled, balances unchanged)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402.http.clients import x402HttpxClient

from app.db.engine import Database
from app.db.models import Payment, StoredQuote
from app.payments.devchain import DevChain
from app.payments.networks import NetworkConfig
from app.services import suppressions
from app.services.x402_runtime import x402_project_id
from app.settings import Settings
from tests.integration.test_x402 import SEND, Rig, paid_rig
from tests.support.devchain import official_client, sign_payment

pytest_plugins = ["tests.support.devchain"]


@pytest.fixture(scope="module")
async def limits_network(devchain: DevChain) -> NetworkConfig:
    relayer: LocalAccount = Account.create()
    await devchain.set_eth_balance(relayer.address, 10**20)
    return devchain.network_config(
        relayer_key=relayer.key.to_0x_hex(), pay_to=Account.create().address, v1_name=None
    )


@pytest.fixture
async def rig(
    settings: Settings, db: Database, devchain: DevChain, limits_network: NetworkConfig
) -> AsyncIterator[Rig]:
    # The limits are on here (the shared fixture turns every limit off); request budgets are
    # generous enough for the few calls below.
    limited = settings.model_copy(update={"rate_limits": True, "payer_sends_per_hour": 8})
    async for made in paid_rig(limited, db, devchain, limits_network):
        yield made


async def _paid_send(rig: Rig, payer: LocalAccount, to: str) -> int:
    async with x402HttpxClient(
        official_client(payer, rig.network), base_url=rig.server.url, timeout=30
    ) as http:
        response = await http.post("/v1/messages", json={**SEND, "to": to})
    return response.status_code


async def test_the_sixth_paid_send_to_one_number_in_an_hour_is_refused_before_any_offer(
    rig: Rig, devchain: DevChain
) -> None:
    payers = [await devchain.new_payer() for _ in range(2)]
    for n in range(5):  # two wallets share the number's budget
        assert await _paid_send(rig, payers[n % 2], SEND["to"]) == 202
    quotes, payments = await rig.count(StoredQuote), await rig.count(Payment)
    balance = await rig.balance(payers[0].address)

    refused = await rig.http.post("/v1/messages", json=SEND)
    assert refused.status_code == 429, refused.text
    assert "PAYMENT-REQUIRED" not in refused.headers
    body = refused.json()
    assert body["error"] == "recipient_rate_limited" and body["number"] == SEND["to"]
    assert body["limit"] == 5 and body["window"] == "hour"
    assert 3500 < int(refused.headers["Retry-After"]) <= 3600
    # The official client only pays a 402: it gets the 429 and pays nothing.
    assert await _paid_send(rig, payers[0], SEND["to"]) == 429
    assert await rig.balance(payers[0].address) == balance
    assert (await rig.count(StoredQuote), await rig.count(Payment)) == (quotes, payments)

    other = await rig.http.post("/v1/messages", json={**SEND, "to": "+14155550101"})
    assert other.status_code == 402


async def test_a_wallet_past_its_hourly_sends_is_refused_before_it_pays(
    rig: Rig, funded_payer: LocalAccount, devchain: DevChain
) -> None:
    for n in range(8):
        assert await _paid_send(rig, funded_payer, f"+1415555{200 + n:04d}") == 202
    balance = await rig.balance(funded_payer.address)
    payments = await rig.count(Payment)
    next_send = {**SEND, "to": "+14155550300"}

    hinted = await rig.http.post(
        "/v1/messages", json=next_send, headers={"X-Payer": funded_payer.address}
    )
    assert hinted.status_code == 429 and "PAYMENT-REQUIRED" not in hinted.headers
    assert hinted.json()["error"] == "payer_rate_limited"
    assert hinted.json()["payer"] == funded_payer.address.lower()
    assert 3500 < int(hinted.headers["Retry-After"]) <= 3600

    # Without the hint the offer is made; the signed payment is then refused, never settled.
    quote = await rig.offer(next_send)
    header = sign_payment(funded_payer, rig.requirement())
    paid = await rig.pay(header, quote["quote_id"], body=next_send)
    assert paid.status_code == 429 and paid.json()["error"] == "payer_rate_limited"
    assert await rig.balance(funded_payer.address) == balance
    assert await rig.count(Payment) == payments

    another = await devchain.new_payer()
    assert await _paid_send(rig, another, "+14155550300") == 202


async def test_suppressed_and_premium_rate_numbers_are_refused_before_any_offer(
    rig: Rig, settings: Settings
) -> None:
    project_id = await x402_project_id(rig.db, rig.server.app.state["settings"])
    await suppressions.add_suppression(rig.db, settings, project_id, "+14155550199")
    quotes = await rig.count(StoredQuote)

    opted_out = await rig.http.post("/v1/messages", json={**SEND, "to": "+14155550199"})
    assert opted_out.status_code == 422 and "PAYMENT-REQUIRED" not in opted_out.headers
    assert opted_out.json()["error"] == "recipient_opted_out"
    assert opted_out.json()["numbers"] == ["+14155550199"]

    premium = await rig.http.post("/v1/messages", json={**SEND, "to": "+19005550100"})
    assert premium.status_code == 422 and "PAYMENT-REQUIRED" not in premium.headers
    assert premium.json()["error"] == "destination_not_allowed"
    assert premium.json()["kind"] == "premium_rate"
    quoted = await rig.http.post("/v1/quotes", json={**SEND, "to": "+19005550100"})
    assert quoted.json()["blocked"][0]["error"] == "destination_not_allowed"
    assert quoted.status_code == 200 and quoted.json()["quote_id"].startswith("quo_")
    assert await rig.count(StoredQuote) == quotes  # refusals offer nothing; quotes are signed
