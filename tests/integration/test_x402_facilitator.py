"""x402 settlement through a standard facilitator (`SIMWIRE_FACILITATOR_URL`), against anvil
and a live server on both databases: a small facilitator served here on a loopback port
settles with its own relayer; a paid send settles through it, a refusal is a 402 with its
reason, and a facilitator that is down is a 503 with the authorization unused."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from litestar import Litestar, Response, get, post
from sqlalchemy import func, select
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.schemas import PaymentPayload, PaymentRequirements

from app.db.engine import Database
from app.db.models import Message, MessageRequest, Payment
from app.payments import wire
from app.payments.chain import ChainClient
from app.payments.devchain import DevChain
from app.payments.errors import ChainUnavailable, SettlementFailed
from app.payments.networks import NetworkConfig
from app.payments.requirements import PaymentRequirement
from app.settings import Settings
from tests.support.devchain import sign_payment
from tests.support.live import LiveServer, live_server, serve_app
from tests.support.postgres import free_port

pytest_plugins = ["tests.support.devchain"]

SEND = {"to": "+14155550100", "message": "Your code is 4821"}
PRICE = 35_000  # one GSM-7 segment at the default 0.035 USDC


@dataclass
class FakeFacilitator:
    """The standard `/settle` endpoint, settling with its own relayer on the dev chain; set
    `refuse` to answer `success: false` with that `errorReason` instead."""

    chain: ChainClient
    url: str = ""
    refuse: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    transactions: list[str] = field(default_factory=list)

    def app(self) -> Litestar:
        @post("/settle", status_code=200)
        async def settle(data: dict[str, Any]) -> Response[dict[str, Any]]:
            self.requests.append(data)
            payload, requirements = data["paymentPayload"], data["paymentRequirements"]
            network = requirements["network"]
            if self.refuse:
                # Refusals come back as 400 with a SettleResponse body, as facilitators do.
                body = {
                    "success": False,
                    "errorReason": self.refuse,
                    "transaction": "",
                    "network": network,
                }
                return Response(body, status_code=400)
            header = base64.b64encode(json.dumps(payload).encode()).decode()
            payment = wire.decode_payment(header)
            try:
                settled = await self.chain.settle_authorization(payment)
            except (SettlementFailed, ChainUnavailable) as exc:
                body = {
                    "success": False,
                    "errorReason": exc.reason,
                    "transaction": "",
                    "network": network,
                }
                return Response(body, status_code=400)
            self.transactions.append(settled.tx_hash)
            body = {
                "success": True,
                "transaction": settled.tx_hash,
                "network": network,
                "payer": settled.payer,
            }
            return Response(body, status_code=200)

        @get("/supported")
        async def supported() -> dict[str, Any]:
            network = self.chain.network.network
            return {
                "kinds": [{"x402Version": 2, "scheme": "exact", "network": network}],
                "extensions": [],
                "signers": {},
            }

        return Litestar([settle, supported])


@pytest.fixture(scope="module")
async def facilitator_network(devchain: DevChain) -> NetworkConfig:
    """The session chain with this module's own pay-to address and the facilitator's relayer
    (our server gets no relayer key: only the facilitator sends transactions)."""
    relayer: LocalAccount = Account.create()
    await devchain.set_eth_balance(relayer.address, 10**20)
    return devchain.network_config(
        relayer_key=relayer.key.to_0x_hex(), pay_to=Account.create().address, v1_name=None
    )


@pytest.fixture(scope="module")
async def facilitator(facilitator_network: NetworkConfig) -> AsyncIterator[FakeFacilitator]:
    async with ChainClient(facilitator_network) as chain:
        fake = FakeFacilitator(chain)
        async with serve_app(fake.app()) as url:
            fake.url = url
            yield fake


@dataclass
class Rig:
    server: LiveServer
    http: httpx.AsyncClient
    network: NetworkConfig
    reader: ChainClient
    db: Database

    async def count(self, table: Any) -> int:
        async with self.db.sessions() as session:
            return int((await session.execute(select(func.count()).select_from(table))).scalar())

    async def offer(self) -> dict[str, Any]:
        response = await self.http.post("/v1/messages", json=SEND)
        assert response.status_code == 402, response.text
        return response.json()["quote"]

    async def pay(self, header: str, quote_id: str) -> httpx.Response:
        return await self.http.post(
            "/v1/messages", json=SEND, headers={"PAYMENT-SIGNATURE": header, "X-Quote-Id": quote_id}
        )


@contextlib.asynccontextmanager
async def rig_with(
    settings: Settings, db: Database, chain: DevChain, network: NetworkConfig, facilitator_url: str
) -> AsyncIterator[Rig]:
    paid = settings.model_copy(
        update={
            "chain_rpc_url": chain.rpc_url,
            "chain_id": chain.chain_id,
            "usdc_address": chain.usdc,
            "usdc_name": chain.usdc_name,
            "usdc_version": chain.usdc_version,
            "pay_to": network.pay_to,
            "relayer_key": None,
            "facilitator_url": facilitator_url,
            "confirmations": 1,
        }
    )
    async with (
        live_server(paid, db) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as http,
        ChainClient(network) as reader,
    ):
        yield Rig(server, http, network, reader, db)


@pytest.fixture
async def rig(
    settings: Settings,
    db: Database,
    devchain: DevChain,
    facilitator_network: NetworkConfig,
    facilitator: FakeFacilitator,
) -> AsyncIterator[Rig]:
    facilitator.refuse = None
    facilitator.requests.clear()
    async with rig_with(settings, db, devchain, facilitator_network, facilitator.url) as made:
        yield made


def decoded(header_value: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(header_value))


async def test_official_client_pays_a_send_settled_by_the_facilitator(
    rig: Rig, facilitator: FakeFacilitator, funded_payer: LocalAccount
) -> None:
    payer_before = await rig.reader.usdc_balance(funded_payer.address)
    pay_to_before = await rig.reader.usdc_balance(rig.network.pay_to)
    client = x402Client()
    register_exact_evm_client(client, funded_payer)
    client.set_spend_controls(
        {"allowed_assets": [{"network": rig.network.network, "asset": rig.network.usdc_address}]}  # type: ignore[typeddict-item]
    )

    async with x402HttpxClient(client, base_url=rig.server.url, timeout=30) as http:
        response = await http.post("/v1/messages", json=SEND)

    assert response.status_code == 202, response.text
    [request] = facilitator.requests
    assert request["x402Version"] == 2
    requirements = PaymentRequirements.model_validate(request["paymentRequirements"])
    payload = PaymentPayload.model_validate(request["paymentPayload"])
    assert requirements.amount == str(PRICE) and requirements.pay_to == rig.network.pay_to
    assert requirements.asset == rig.network.usdc_address
    assert requirements.extra["name"] == "USDC" and requirements.extra["version"] == "2"
    assert payload.accepted.network == requirements.network == rig.network.network
    assert payload.payload["authorization"]["value"] == str(PRICE)
    tx_hash = facilitator.transactions[-1]
    settled = decoded(response.headers["PAYMENT-RESPONSE"])
    assert settled["success"] is True and settled["transaction"] == tx_hash
    assert settled["payer"] == funded_payer.address
    assert await rig.reader.usdc_balance(funded_payer.address) == payer_before - PRICE
    assert await rig.reader.usdc_balance(rig.network.pay_to) == pay_to_before + PRICE
    async with rig.db.sessions() as session:
        [payment] = (await session.execute(select(Payment))).scalars()
        [message] = (await session.execute(select(Message))).scalars()
        [paid_request] = (await session.execute(select(MessageRequest))).scalars()
    assert payment.status == "settled" and payment.tx_hash == tx_hash
    assert payment.amount_atomic == PRICE and paid_request.payment_id == payment.id
    assert message.status == "queued" and message.billing == "x402"


async def test_facilitator_refusal_is_402_with_its_reason_and_nothing_queued(
    rig: Rig, facilitator: FakeFacilitator, funded_payer: LocalAccount
) -> None:
    quote = await rig.offer()
    header = sign_payment(funded_payer, PaymentRequirement(rig.network, PRICE))
    nonce = decoded(header)["payload"]["authorization"]["nonce"]
    before = await rig.reader.usdc_balance(funded_payer.address)
    facilitator.refuse = "invalid_exact_evm_payload_signature"

    refused = await rig.pay(header, quote["quote_id"])

    assert refused.status_code == 402, refused.text
    assert refused.json()["error"] == "invalid_exact_evm_payload_signature"
    failed = decoded(refused.headers["PAYMENT-RESPONSE"])
    assert failed["success"] is False
    assert failed["errorReason"] == "invalid_exact_evm_payload_signature"
    assert await rig.count(Payment) == 0 and await rig.count(Message) == 0
    assert await rig.reader.usdc_balance(funded_payer.address) == before
    assert not await rig.reader.authorization_used(funded_payer.address, nonce)
    # Nothing was kept: once the facilitator settles, the same header pays the same quote.
    facilitator.refuse = None
    retried = await rig.pay(header, quote["quote_id"])
    assert retried.status_code == 202, retried.text
    assert await rig.reader.usdc_balance(funded_payer.address) == before - PRICE


async def test_facilitator_down_is_503_with_the_authorization_unused(
    settings: Settings,
    db: Database,
    devchain: DevChain,
    facilitator_network: NetworkConfig,
    funded_payer: LocalAccount,
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    async with rig_with(settings, db, devchain, facilitator_network, down) as rig:
        quote = await rig.offer()
        header = sign_payment(funded_payer, PaymentRequirement(rig.network, PRICE))
        nonce = decoded(header)["payload"]["authorization"]["nonce"]
        before = await rig.reader.usdc_balance(funded_payer.address)

        refused = await rig.pay(header, quote["quote_id"])

        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "facilitator_unavailable"
        assert decoded(refused.headers["PAYMENT-RESPONSE"])["success"] is False
        assert await rig.count(Payment) == 0 and await rig.count(Message) == 0
        assert await rig.reader.usdc_balance(funded_payer.address) == before
        assert not await rig.reader.authorization_used(funded_payer.address, nonce)
