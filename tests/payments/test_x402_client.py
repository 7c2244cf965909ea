"""The official x402 Python client pays our 402 offers, v2 and v1, end to end: our offer,
its signature, our decoder and verifier, settlement on anvil, our settlement header."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402.http.clients.httpx import x402_httpx_transport

from app.payments.chain import ChainClient
from app.payments.devchain import DevChain, start_devchain
from app.payments.eip3009 import verify_authorization
from app.payments.errors import PaymentInvalid
from app.payments.networks import NetworkConfig
from app.payments.requirements import PaymentRequirement
from app.payments.wire import (
    PAYMENT_REQUIRED_HEADER,
    decode_payment,
    payment_header_from,
    payment_required_body_v1,
    payment_required_header,
    payment_response_header,
    payment_response_header_name,
)
from tests.support.devchain import official_client

pytest_plugins = ["tests.support.devchain"]

PRICE = 30_000
URL = "http://simwire.test/v1/messages"
QUOTE = {"quote": {"quote_id": "q_test", "segment_count": 1, "total": "0.030000"}}


class PaidEndpoint:
    """A 402-protected endpoint built from our wire/eip3009/chain modules, as the API will be."""

    def __init__(self, requirement: PaymentRequirement, chain: ChainClient, offer_v2: bool):
        self.requirement = requirement
        self.chain = chain
        self.offer_v2 = offer_v2
        self.payment_headers: list[tuple[str, str]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        header = payment_header_from(request.headers)
        if header is None:
            return self._payment_required()
        self.payment_headers += [
            (name, value)
            for name, value in request.headers.items()
            if name.lower() in ("payment-signature", "x-payment")
        ]
        try:
            payment = decode_payment(header)
            verify_authorization(payment, self.requirement, int(time.time()))
            await self.chain.check_payable(payment)
        except PaymentInvalid as exc:
            return httpx.Response(402, json={"error": exc.code, "reason": exc.reason})
        settlement = await self.chain.settle_authorization(payment)
        response_header = payment_response_header(
            network=payment.network, transaction=settlement.tx_hash, payer=settlement.payer
        )
        return httpx.Response(
            202,
            json={"request_id": "req_1"},
            headers={payment_response_header_name(payment.x402_version): response_header},
        )

    def _payment_required(self) -> httpx.Response:
        kwargs: dict[str, Any] = {"resource_url": URL, "description": "1 SMS", "extra": QUOTE}
        headers = {}
        if self.offer_v2:
            headers[PAYMENT_REQUIRED_HEADER] = payment_required_header([self.requirement], **kwargs)
        body = payment_required_body_v1([self.requirement], **kwargs)
        return httpx.Response(402, json=body, headers=headers)


async def _pay(endpoint: PaidEndpoint, account: LocalAccount) -> httpx.Response:
    transport = x402_httpx_transport(
        official_client(account, endpoint.requirement.network), httpx.MockTransport(endpoint)
    )
    async with httpx.AsyncClient(transport=transport) as http:
        return await http.post(URL, json={"to": "+15555550100", "body": "hi"})


def _decoded(header_value: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(header_value))


async def test_official_v2_client_pays_our_offer(
    chain_client: ChainClient, devchain_network: NetworkConfig, funded_payer: LocalAccount
) -> None:
    requirement = PaymentRequirement(devchain_network, PRICE)
    endpoint = PaidEndpoint(requirement, chain_client, offer_v2=True)
    before = await chain_client.usdc_balance(funded_payer.address)

    response = await _pay(endpoint, funded_payer)

    assert response.status_code == 202, response.text
    [(name, value)] = endpoint.payment_headers
    assert name.lower() == "payment-signature"
    sent = _decoded(value)
    assert sent["x402Version"] == 2
    assert sent["accepted"]["network"] == devchain_network.network
    assert sent["accepted"]["extra"]["quote"]["quote_id"] == "q_test"
    assert sent["payload"]["authorization"]["validAfter"] == "0"
    settled = _decoded(response.headers["PAYMENT-RESPONSE"])
    assert settled["success"] is True and settled["payer"] == funded_payer.address
    assert await chain_client.usdc_balance(funded_payer.address) == before - PRICE


@pytest.fixture(scope="module")
async def base_sepolia_devchain() -> AsyncIterator[DevChain]:
    # x402 v1 clients know chains by legacy name only, so v1 needs a chain id they know.
    chain = await start_devchain(chain_id=84532)
    try:
        yield chain
    finally:
        await chain.aclose()


async def test_official_v1_client_pays_our_v1_body(base_sepolia_devchain: DevChain) -> None:
    network = base_sepolia_devchain.network_config(v1_name="base-sepolia")
    account: LocalAccount = Account.create()
    await base_sepolia_devchain.mint(account.address, PRICE)
    async with ChainClient(network) as chain:
        endpoint = PaidEndpoint(PaymentRequirement(network, PRICE), chain, offer_v2=False)

        response = await _pay(endpoint, account)

        assert response.status_code == 202, response.text
        [(name, value)] = endpoint.payment_headers
        assert name.lower() == "x-payment"
        sent = _decoded(value)
        assert sent["x402Version"] == 1
        assert sent["scheme"] == "exact" and sent["network"] == "base-sepolia"
        assert set(sent["payload"]) == {"authorization", "signature"}
        settled = _decoded(response.headers["X-PAYMENT-RESPONSE"])
        assert settled["success"] is True and settled["network"] == "base-sepolia"
        assert await chain.usdc_balance(account.address) == 0
