"""The facilitator client: the `/settle` body is what the `x402` package's facilitator reads,
and every answer short of a confirmed success maps to the right error, checked against anvil
(an answer the chain cannot confirm never counts as paid)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from x402.schemas import PaymentPayload, PaymentRequirements
from x402.schemas.v1 import PaymentPayloadV1, PaymentRequirementsV1

from app.payments.chain import ChainClient
from app.payments.eip3009 import verify_authorization
from app.payments.errors import ChainUnavailable, SettlementFailed
from app.payments.facilitator import FacilitatorClient, settle_request
from app.payments.networks import NetworkConfig
from app.payments.requirements import PaymentRequirement
from app.payments.wire import DecodedPayment, decode_payment
from tests.support.devchain import sign_payment

pytest_plugins = ["tests.support.devchain"]

PRICE = 25_000
URL = "http://facilitator.test"


@pytest.fixture
def requirement(devchain_network: NetworkConfig) -> PaymentRequirement:
    return PaymentRequirement(devchain_network, amount_atomic=PRICE)


def _payment(
    payer: LocalAccount, requirement: PaymentRequirement, version: int = 2
) -> DecodedPayment:
    payment = decode_payment(sign_payment(payer, requirement, x402_version=version))
    verify_authorization(payment, requirement, int(time.time()))
    return payment


def _facilitator(
    chain: ChainClient, answer: Callable[[dict[str, Any]], httpx.Response]
) -> FacilitatorClient:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url == f"{URL}/settle"
        return answer(json.loads(request.content))

    return FacilitatorClient(chain, url=URL, transport=httpx.MockTransport(handle))


def test_settle_body_is_the_x402_facilitator_request(
    funded_payer: LocalAccount, requirement: PaymentRequirement
) -> None:
    network = requirement.network
    v2 = settle_request(_payment(funded_payer, requirement), requirement)
    v1 = settle_request(_payment(funded_payer, requirement, version=1), requirement)

    assert v2["x402Version"] == 2 and v1["x402Version"] == 1
    payload = PaymentPayload.model_validate(v2["paymentPayload"])
    needed = PaymentRequirements.model_validate(v2["paymentRequirements"])
    assert payload.accepted.network == needed.network == network.network
    assert needed.amount == str(PRICE) and needed.pay_to == network.pay_to
    assert needed.extra == {"name": network.usdc_name, "version": network.usdc_version}
    assert payload.payload["authorization"]["from"] == funded_payer.address
    assert payload.payload["authorization"]["value"] == str(PRICE)
    assert len(bytes.fromhex(payload.payload["signature"][2:])) == 65
    payload_v1 = PaymentPayloadV1.model_validate(v1["paymentPayload"])
    needed_v1 = PaymentRequirementsV1.model_validate(v1["paymentRequirements"])
    assert payload_v1.network == needed_v1.network == network.v1_name
    assert needed_v1.max_amount_required == str(PRICE)


async def test_a_settlement_the_facilitator_reports_is_confirmed_on_chain(
    chain_client: ChainClient, funded_payer: LocalAccount, requirement: PaymentRequirement
) -> None:
    payment = _payment(funded_payer, requirement)
    settled = await chain_client.settle_authorization(payment)
    other = _payment(funded_payer, requirement)

    def reports(tx_hash: str) -> Callable[[dict[str, Any]], httpx.Response]:
        return lambda body: httpx.Response(
            200,
            json={"success": True, "transaction": tx_hash, "network": requirement.network.network},
        )

    confirmed = await _facilitator(chain_client, reports(settled.tx_hash)).settle(
        payment, requirement
    )
    # A real transaction that settled another authorization does not pay this one.
    with pytest.raises(SettlementFailed) as wrong:
        await _facilitator(chain_client, reports(settled.tx_hash)).settle(other, requirement)

    assert confirmed.tx_hash == settled.tx_hash and confirmed.amount == PRICE
    assert confirmed.payer == funded_payer.address
    assert wrong.value.reason == "transaction_reverted"


async def test_answers_without_a_confirmed_settlement(
    devchain_network: NetworkConfig, funded_payer: LocalAccount, requirement: PaymentRequirement
) -> None:
    network = devchain_network.network
    payment = _payment(funded_payer, requirement)
    answers: dict[str, httpx.Response] = {
        "facilitator_unavailable": httpx.Response(500, text="internal error"),
        "settlement_unknown": httpx.Response(
            200, json={"success": True, "transaction": "", "network": network}
        ),
        "receipt_timeout": httpx.Response(
            200, json={"success": True, "transaction": "0x" + "ab" * 32, "network": network}
        ),
    }
    pending = httpx.Response(
        200,
        json={
            "success": False,
            "errorReason": "settlement_pending",
            "transaction": "",
            "network": network,
        },
    )
    async with ChainClient(devchain_network, receipt_timeout_s=0.5) as chain:
        for reason, answer in answers.items():
            with pytest.raises(ChainUnavailable) as raised:
                await _facilitator(chain, lambda body, a=answer: a).settle(payment, requirement)
            assert raised.value.reason == reason, raised.value.message
        with pytest.raises(ChainUnavailable) as still_pending:
            await _facilitator(chain, lambda body: pending).settle(payment, requirement)
        assert await chain.authorization_used(payment.from_address, payment.nonce) is False

    assert still_pending.value.reason == "settlement_unknown"
    assert raised.value.tx_hash == "0x" + "ab" * 32
