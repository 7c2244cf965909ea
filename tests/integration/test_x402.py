"""x402 pay-per-call against a real chain (anvil) and a live server, on both databases: the
official x402 client pays sends (v2, and v1 on a chain it knows by name), every wrong payment
is refused with its own reason and queues nothing, plain transfers pay once, top-ups credit the
ledger, refund credit is spent first, and a relayer out of gas refunds nothing it never took."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from pydantic import SecretStr
from sqlalchemy import func, select, update
from x402.http import decode_payment_required_header, encode_payment_signature_header
from x402.http.clients import x402HttpxClient
from x402.http.clients.httpx import x402_httpx_transport

from app.db.engine import Database
from app.db.models import LedgerEntry, Message, MessageRequest, Payment, StoredQuote
from app.payments.chain import ChainClient
from app.payments.devchain import DevChain, _send_and_wait, start_devchain
from app.payments.eip3009 import CLOCK_SKEW_S
from app.payments.networks import NetworkConfig
from app.payments.requirements import PaymentRequirement
from app.services import credits
from app.settings import Settings
from tests.support.devchain import official_client, sign_payment
from tests.support.factories import new_tenant
from tests.support.live import LiveServer, live_server

pytest_plugins = ["tests.support.devchain"]

SEND = {"to": "+14155550100", "message": "Your code is 4821"}
PRICE = 35_000  # one GSM-7 segment at the default 0.035 USDC


@dataclass
class Rig:
    """A live server paid on one dev chain, with what a test needs to pay it and check."""

    server: LiveServer
    http: httpx.AsyncClient
    chain: DevChain
    network: NetworkConfig
    reader: ChainClient
    db: Database

    def requirement(self, amount_atomic: int = PRICE) -> PaymentRequirement:
        return PaymentRequirement(self.network, amount_atomic)

    async def offer(
        self, body: dict[str, Any] = SEND, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        response = await self.http.post("/v1/messages", json=body, headers=headers)
        assert response.status_code == 402, response.text
        return response.json()["quote"]

    async def pay(
        self,
        header: str,
        quote_id: str | None,
        body: dict[str, Any] = SEND,
        version: int = 2,
        url: str = "/v1/messages",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {"PAYMENT-SIGNATURE" if version == 2 else "X-PAYMENT": header, **(headers or {})}
        if quote_id:
            sent["X-Quote-Id"] = quote_id
        return await self.http.post(url, json=body, headers=sent)

    async def balance(self, address: str) -> int:
        return await self.reader.usdc_balance(address)

    async def count(self, table: Any) -> int:
        async with self.db.sessions() as session:
            return int((await session.execute(select(func.count()).select_from(table))).scalar())


def decoded(header_value: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(header_value))


def encoded(payload: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


async def paid_rig(
    settings: Settings, db: Database, chain: DevChain, network: NetworkConfig
) -> AsyncIterator[Rig]:
    paid = settings.model_copy(
        update={
            "chain_rpc_url": chain.rpc_url,
            "chain_id": chain.chain_id,
            "usdc_address": chain.usdc,
            "usdc_name": chain.usdc_name,
            "usdc_version": chain.usdc_version,
            "pay_to": network.pay_to,
            "relayer_key": SecretStr(network.relayer_key or ""),
            "chain_v1_name": network.v1_name,
            "confirmations": 1,
        }
    )
    async with (
        live_server(paid, db) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as http,
        ChainClient(network) as reader,
    ):
        yield Rig(server, http, chain, network, reader, db)


@pytest.fixture(scope="module")
async def local_network(devchain: DevChain) -> NetworkConfig:
    """The session chain with this module's own relayer and pay-to address, so balances and
    relayer nonces here are not shared with other tests."""
    relayer: LocalAccount = Account.create()
    await devchain.set_eth_balance(relayer.address, 10**20)
    return devchain.network_config(
        relayer_key=relayer.key.to_0x_hex(), pay_to=Account.create().address, v1_name=None
    )


@pytest.fixture
async def rig(
    settings: Settings, db: Database, devchain: DevChain, local_network: NetworkConfig
) -> AsyncIterator[Rig]:
    async for made in paid_rig(settings, db, devchain, local_network):
        yield made


# ------------------------------------------------------------------------------- offers


async def test_without_a_chain_an_anonymous_send_is_401_saying_how_to_get_in(client) -> None:
    response = await client.post("/v1/messages", json=SEND)

    assert response.status_code == 401
    message = response.json()["message"]
    assert "API key" in message and "SIMWIRE_CHAIN_RPC_URL" in message


async def test_offer_carries_v2_header_v1_body_and_the_quote(rig: Rig) -> None:
    response = await rig.http.post("/v1/messages", json={**SEND, "to": [SEND["to"]] * 2})

    assert response.status_code == 402
    offer = decoded(response.headers["PAYMENT-REQUIRED"])
    assert offer["x402Version"] == 2
    [accepted] = offer["accepts"]
    assert accepted["scheme"] == "exact" and accepted["network"] == rig.network.network
    assert accepted["asset"] == rig.network.usdc_address
    assert accepted["payTo"] == rig.network.pay_to
    assert accepted["amount"] == str(2 * PRICE)
    assert accepted["extra"]["name"] == "USDC" and accepted["extra"]["version"] == "2"
    body = response.json()
    assert body["x402Version"] == 1 and body["error"] == "payment_required"
    quote = body["quote"]
    assert quote["quote_id"].startswith("quo_")
    assert accepted["extra"]["quote"]["quote_id"] == quote["quote_id"]
    assert quote["recipient_count"] == 2 and quote["segment_count"] == 1
    assert quote["message_length"] == len(SEND["message"]) and quote["encoding"]
    assert quote["per_message_rate"] == "0.035" and quote["messaging_fee"] == "0.07"
    assert quote["request_fee"] == "0" and quote["recipient_fee"] == "0"
    assert quote["total"] == "0.07" and quote["total_atomic"] == 2 * PRICE


async def test_screening_and_limits_come_before_any_payment_is_asked(rig: Rig) -> None:
    emergency = await rig.http.post("/v1/messages", json={"to": "911", "message": "hi"})
    too_many = await rig.http.post(
        "/v1/messages", json={"to": [f"+1415555{i:04d}" for i in range(11)], "message": "hi"}
    )

    assert emergency.status_code == 422
    assert emergency.json()["error"] == "emergency_number_blocked"
    assert "PAYMENT-REQUIRED" not in emergency.headers
    assert too_many.status_code == 400 and too_many.json()["error"] == "too_many_recipients"
    assert await rig.count(StoredQuote) == 0


# ---------------------------------------------------------------------- paying a send


async def test_official_v2_client_pays_a_send_and_balances_move_by_the_quote(
    rig: Rig, funded_payer: LocalAccount
) -> None:
    payer_before = await rig.balance(funded_payer.address)
    pay_to_before = await rig.balance(rig.network.pay_to)

    async with x402HttpxClient(
        official_client(funded_payer, rig.network), base_url=rig.server.url, timeout=30
    ) as http:
        response = await http.post("/v1/messages", json=SEND)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["request_id"].startswith("req_") and body["status"] == "processing"
    assert body["segment_count"] == 1 and len(body["messages"]) == 1
    settled = decoded(response.headers["PAYMENT-RESPONSE"])
    assert settled["success"] is True and settled["payer"] == funded_payer.address
    assert await rig.balance(funded_payer.address) == payer_before - PRICE
    assert await rig.balance(rig.network.pay_to) == pay_to_before + PRICE
    async with rig.db.sessions() as session:
        [payment] = (await session.execute(select(Payment))).scalars()
        [request] = (await session.execute(select(MessageRequest))).scalars()
        [message] = (await session.execute(select(Message))).scalars()
    assert payment.status == "settled" and payment.tx_hash == settled["transaction"]
    assert payment.amount_atomic == PRICE and payment.purpose == "send"
    assert request.billing == "x402" and request.payer == funded_payer.address.lower()
    assert request.payment_id == payment.id and message.billing == "x402"
    assert message.status == "queued" and message.price_atomic == PRICE
    readable = await rig.http.get(f"/v1/requests/{body['request_id']}")
    assert readable.status_code == 200


class _WithoutV2Offer(httpx.AsyncBaseTransport):
    """Hides the v2 header, so the official client falls back to the v1 body."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.payment_headers: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.payment_headers += [k for k in request.headers if "payment" in k.lower()]
        response = await self.inner.handle_async_request(request)
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "payment-required"]
        return httpx.Response(
            response.status_code, headers=headers, stream=response.stream, request=request
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(scope="module")
async def base_sepolia_chain() -> AsyncIterator[DevChain]:
    # x402 v1 clients know chains by legacy name only: v1 needs a chain id they know.
    chain = await start_devchain(chain_id=84532)
    try:
        yield chain
    finally:
        await chain.aclose()


async def test_official_client_forced_to_v1_pays_a_send(
    settings: Settings, db: Database, base_sepolia_chain: DevChain
) -> None:
    network = base_sepolia_chain.network_config(v1_name="base-sepolia")
    payer: LocalAccount = Account.create()
    await base_sepolia_chain.mint(payer.address, PRICE)
    async for rig in paid_rig(settings, db, base_sepolia_chain, network):
        pay_to_before = await rig.balance(network.pay_to)
        inner = _WithoutV2Offer()
        transport = x402_httpx_transport(official_client(payer, network), inner)
        async with httpx.AsyncClient(
            transport=transport, base_url=rig.server.url, timeout=30
        ) as http:
            response = await http.post("/v1/messages", json=SEND)

        assert response.status_code == 202, response.text
        assert "x-payment" in inner.payment_headers
        settled = decoded(response.headers["X-PAYMENT-RESPONSE"])
        assert settled["success"] is True and settled["network"] == "base-sepolia"
        assert await rig.balance(payer.address) == 0
        assert await rig.balance(network.pay_to) == pay_to_before + PRICE
        assert await rig.count(Message) == 1


async def test_a_replayed_header_that_names_its_quote_gets_the_first_answer_and_pays_once(
    rig: Rig, funded_payer: LocalAccount
) -> None:
    offer = await rig.http.post("/v1/messages", json=SEND)
    required = decode_payment_required_header(offer.headers["PAYMENT-REQUIRED"])
    payload = await official_client(funded_payer, rig.network).create_payment_payload(required)
    header = encode_payment_signature_header(payload)
    before = await rig.balance(funded_payer.address)

    first = await rig.pay(header, None)
    replay = await rig.pay(header, None)

    assert first.status_code == 202, first.text
    assert replay.status_code == 202 and replay.json() == first.json()
    assert replay.headers["PAYMENT-RESPONSE"] == first.headers["PAYMENT-RESPONSE"]
    assert await rig.balance(funded_payer.address) == before - PRICE
    assert await rig.count(Message) == 1 and await rig.count(Payment) == 1


async def test_replayed_header_is_refused_and_pays_once(
    rig: Rig, funded_payer: LocalAccount
) -> None:
    quote = await rig.offer()
    header = sign_payment(funded_payer, rig.requirement())
    before = await rig.balance(funded_payer.address)

    first = await rig.pay(header, quote["quote_id"])
    replay = await rig.pay(header, quote["quote_id"])

    assert first.status_code == 202, first.text
    assert replay.status_code == 409
    assert replay.json()["error"] == "authorization_used"
    failed = decoded(replay.headers["PAYMENT-RESPONSE"])
    assert failed["success"] is False and failed["errorReason"] == "authorization_used"
    assert await rig.balance(funded_payer.address) == before - PRICE
    assert await rig.count(Message) == 1


async def test_two_concurrent_requests_with_one_header_accept_exactly_one(
    rig: Rig, funded_payer: LocalAccount
) -> None:
    quote = await rig.offer()
    header = sign_payment(funded_payer, rig.requirement())
    before = await rig.balance(funded_payer.address)
    relayer = Account.from_key(rig.network.relayer_key).address
    sent_before = await rig.chain.w3.eth.get_transaction_count(relayer)

    responses = await asyncio.gather(*(rig.pay(header, quote["quote_id"]) for _ in range(2)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202, 409], [r.text for r in responses]
    refused = next(r for r in responses if r.status_code == 409).json()["error"]
    assert refused in ("authorization_used", "quote_used")
    assert await rig.balance(funded_payer.address) == before - PRICE
    assert await rig.count(Message) == 1 and await rig.count(Payment) == 1
    # The loser stopped at our reservation: one settlement transaction was ever sent.
    assert await rig.chain.w3.eth.get_transaction_count(relayer) == sent_before + 1


# ------------------------------------------------------------------ refused payments


def _signed_by_another_key(payer: LocalAccount, requirement: PaymentRequirement) -> str:
    forged = decoded(sign_payment(Account.create(), requirement))
    forged["payload"]["authorization"]["from"] = payer.address
    return encoded(forged)


REFUSALS = {
    "wrong_pay_to": (402, "invalid_pay_to", lambda p, r: sign_payment(p, r, to=_stranger())),
    "wrong_asset": (402, "invalid_asset", lambda p, r: sign_payment(p, r, asset=_stranger())),
    "wrong_network": (402, "invalid_network", lambda p, r: sign_payment(p, r, network="eip155:1")),
    "amount_short_by_one": (
        402,
        "invalid_amount",
        lambda p, r: sign_payment(p, r, value=r.amount_atomic - 1),
    ),
    "expired": (
        402,
        "authorization_expired",
        lambda p, r: sign_payment(p, r, valid_before=int(time.time()) - 1),
    ),
    "valid_until_2286": (
        402,
        "authorization_too_long",
        lambda p, r: sign_payment(p, r, valid_before=9_999_999_999),
    ),
    "not_yet_valid": (
        402,
        "authorization_not_yet_valid",
        lambda p, r: sign_payment(p, r, valid_after=int(time.time()) + 600),
    ),
    "signed_by_another_key": (402, "invalid_signature", _signed_by_another_key),
    "payer_without_funds": (
        402,
        "insufficient_balance",
        lambda p, r: sign_payment(Account.create(), r),
    ),
    "malformed_header": (400, "malformed_payment", lambda p, r: "not base64 json"),
}


def _stranger() -> str:
    return Account.create().address


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_wrong_payment_is_refused_with_its_reason_and_nothing_queued(
    rig: Rig, funded_payer: LocalAccount, case: str
) -> None:
    status, reason, build = REFUSALS[case]
    quote = await rig.offer()
    before = await rig.balance(funded_payer.address)

    response = await rig.pay(build(funded_payer, rig.requirement()), quote["quote_id"])

    assert response.status_code == status, response.text
    assert response.json()["error"] == reason
    assert response.json()["errorReason"] == reason
    assert decoded(response.headers["PAYMENT-RESPONSE"])["errorReason"] == reason
    assert await rig.count(Message) == 0 and await rig.count(Payment) == 0
    assert await rig.balance(funded_payer.address) == before


async def test_body_changed_after_quoting_is_refused(rig: Rig, funded_payer: LocalAccount) -> None:
    quote = await rig.offer()
    header = sign_payment(funded_payer, rig.requirement())

    response = await rig.pay(header, quote["quote_id"], body={**SEND, "message": "Code is 0000"})

    assert response.status_code == 402 and response.json()["error"] == "quote_mismatch"
    assert await rig.count(Message) == 0 and await rig.count(Payment) == 0


async def test_a_quote_paid_once_cannot_be_paid_again(rig: Rig, funded_payer: LocalAccount) -> None:
    quote = await rig.offer()
    first = await rig.pay(sign_payment(funded_payer, rig.requirement()), quote["quote_id"])
    before = await rig.balance(funded_payer.address)

    again = await rig.pay(sign_payment(funded_payer, rig.requirement()), quote["quote_id"])

    assert first.status_code == 202
    assert again.status_code == 409 and again.json()["error"] == "quote_used"
    assert await rig.balance(funded_payer.address) == before
    assert await rig.count(Message) == 1


async def test_relayer_out_of_gas_is_503_with_nothing_recorded_and_the_header_still_pays(
    rig: Rig, funded_payer: LocalAccount
) -> None:
    relayer = Account.from_key(rig.network.relayer_key).address
    quote = await rig.offer()
    header = sign_payment(funded_payer, rig.requirement())
    nonce = decoded(header)["payload"]["authorization"]["nonce"]
    await rig.chain.set_eth_balance(relayer, 0)
    try:
        refused = await rig.pay(header, quote["quote_id"])
    finally:
        await rig.chain.set_eth_balance(relayer, 10**20)

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "relayer_out_of_gas"
    assert await rig.count(Payment) == 0 and await rig.count(Message) == 0
    assert not await rig.reader.authorization_used(funded_payer.address, nonce)
    retried = await rig.pay(header, quote["quote_id"])
    assert retried.status_code == 202, retried.text


# -------------------------------------------------------------------- plain transfers


async def _transfer(chain: DevChain, sender: LocalAccount, to: str, amount: int) -> str:
    data = keccak(text="transfer(address,uint256)")[:4] + abi_encode(
        ["address", "uint256"], [to, amount]
    )
    receipt = await _send_and_wait(
        chain.w3, sender.key.to_0x_hex(), data, chain.usdc, chain.chain_id
    )
    return receipt["transactionHash"].to_0x_hex()


def claim(sender: LocalAccount, tx_hash: str, quote_id: str) -> dict[str, str]:
    """The headers that claim a plain transfer for a quote: its hash and the sender's
    EIP-191 signature over the quote id."""
    signed = Account.sign_message(encode_defunct(text=quote_id), sender.key)
    return {
        "X-Payment-Tx": tx_hash,
        "X-Payment-Tx-Signature": signed.signature.to_0x_hex(),
        "X-Quote-Id": quote_id,
    }


async def test_plain_transfer_pays_a_quote_and_its_hash_never_pays_twice(rig: Rig) -> None:
    sender = await rig.chain.new_payer(eth_wei=10**18)
    first_quote = await rig.offer()
    tx_hash = await _transfer(rig.chain, sender, rig.network.pay_to, PRICE)
    stray_hash = await _transfer(rig.chain, sender, _stranger(), PRICE)

    paid = await rig.http.post(
        "/v1/messages", json=SEND, headers=claim(sender, tx_hash, first_quote["quote_id"])
    )
    second_quote = await rig.offer()
    reused = await rig.http.post(
        "/v1/messages", json=SEND, headers=claim(sender, tx_hash, second_quote["quote_id"])
    )
    stray = await rig.http.post(
        "/v1/messages", json=SEND, headers=claim(sender, stray_hash, second_quote["quote_id"])
    )

    assert paid.status_code == 202, paid.text
    assert paid.json()["payment"]["payer"] == sender.address
    assert reused.status_code == 409 and reused.json()["error"] == "tx_already_used"
    assert stray.status_code == 402 and stray.json()["error"] == "no_transfer_to_pay_to"
    assert await rig.count(Message) == 1 and await rig.count(Payment) == 1


async def test_a_transfer_seen_on_chain_cannot_be_claimed_by_someone_else(rig: Rig) -> None:
    sender = await rig.chain.new_payer(eth_wei=10**18)
    watcher = Account.create()
    quote = await rig.offer()
    tx_hash = await _transfer(rig.chain, sender, rig.network.pay_to, PRICE)

    unsigned = await rig.http.post(
        "/v1/messages",
        json=SEND,
        headers={"X-Payment-Tx": tx_hash, "X-Quote-Id": quote["quote_id"]},
    )
    stolen = await rig.http.post(
        "/v1/messages", json=SEND, headers=claim(watcher, tx_hash, quote["quote_id"])
    )
    other_quote = await rig.offer()
    wrong_text = {
        **claim(sender, tx_hash, other_quote["quote_id"]),
        "X-Quote-Id": quote["quote_id"],
    }
    signed_for_another_quote = await rig.http.post("/v1/messages", json=SEND, headers=wrong_text)
    garbage = await rig.http.post(
        "/v1/messages",
        json=SEND,
        headers={**claim(sender, tx_hash, quote["quote_id"]), "X-Payment-Tx-Signature": "0x12"},
    )
    owner = await rig.http.post(
        "/v1/messages", json=SEND, headers=claim(sender, tx_hash, quote["quote_id"])
    )

    assert unsigned.status_code == 402 and unsigned.json()["error"] == "tx_signature_required"
    assert stolen.status_code == 402 and stolen.json()["error"] == "tx_signature_mismatch"
    assert signed_for_another_quote.json()["error"] == "tx_signature_mismatch"
    assert garbage.status_code == 402 and garbage.json()["error"] == "invalid_tx_signature"
    assert owner.status_code == 202, owner.text
    assert await rig.count(Message) == 1 and await rig.count(Payment) == 1


async def test_a_transfer_mined_before_the_quote_was_issued_pays_nothing(rig: Rig) -> None:
    sender = await rig.chain.new_payer(eth_wei=10**18)
    tx_hash = await _transfer(rig.chain, sender, rig.network.pay_to, PRICE)
    receipt = await rig.chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    mined_at = (await rig.chain.w3.eth.get_block(receipt["blockNumber"]))["timestamp"]
    quote_id = (await rig.offer())["quote_id"]
    async with rig.db.transaction() as session:
        # The quote is issued just past the clock skew allowed after the transfer's block.
        await session.execute(
            update(StoredQuote)
            .where(StoredQuote.id == quote_id)  # type: ignore[arg-type]
            .values(created_at=datetime.fromtimestamp(mined_at + CLOCK_SKEW_S + 1, UTC))
        )

    late = await rig.http.post("/v1/messages", json=SEND, headers=claim(sender, tx_hash, quote_id))

    assert late.status_code == 402 and late.json()["error"] == "tx_before_quote", late.text
    assert await rig.count(Message) == 0 and await rig.count(Payment) == 0


# ----------------------------------------------------------------- top-ups and refunds


async def test_topup_is_offered_then_paid_and_credits_the_ledger(
    rig: Rig, funded_payer: LocalAccount
) -> None:
    tenant = await new_tenant(rig.db, scopes=["credits.read"])
    offered = await rig.http.post(
        "/v1/credits/topup", json={"amount": "2.5"}, headers=tenant.headers
    )
    async with x402HttpxClient(
        official_client(funded_payer, rig.network),
        base_url=rig.server.url,
        headers=tenant.headers,
        timeout=30,
    ) as http:
        paid = await http.post("/v1/credits/topup", json={"amount": "2.5"})

    assert offered.status_code == 402
    assert decoded(offered.headers["PAYMENT-REQUIRED"])["accepts"][0]["amount"] == "2500000"
    assert paid.status_code == 200, paid.text
    assert paid.json()["balance_atomic"] == 2_500_000 and paid.json()["balance"] == "2.5"
    tx_hash = decoded(paid.headers["PAYMENT-RESPONSE"])["transaction"]
    async with rig.db.sessions() as session:
        [entry] = (await session.execute(select(LedgerEntry))).scalars()
    assert entry.kind == "topup" and entry.amount_atomic == 2_500_000
    assert entry.tx_hash == tx_hash
    assert await rig.count(Message) == 0
    anonymous = await rig.http.post("/v1/credits/topup", json={"amount": "1"})
    assert anonymous.status_code == 401


async def test_topup_paid_by_plain_transfer_credits_what_was_sent(rig: Rig) -> None:
    tenant = await new_tenant(rig.db)
    sender = await rig.chain.new_payer(eth_wei=10**18)
    offered = await rig.http.post("/v1/credits/topup", json={"amount": "1"}, headers=tenant.headers)
    quote_id = offered.json()["quote"]["quote_id"]
    tx_hash = await _transfer(rig.chain, sender, rig.network.pay_to, 1_000_000)

    headers = {**tenant.headers, **claim(sender, tx_hash, quote_id)}
    paid = await rig.http.post("/v1/credits/topup", json={"amount": "1"}, headers=headers)
    again = await rig.http.post("/v1/credits/topup", json={"amount": "1"}, headers=headers)

    assert paid.status_code == 200, paid.text
    assert paid.json()["balance_atomic"] == 1_000_000
    assert again.status_code == 409 and again.json()["error"] == "tx_already_used"
    balance, ledger_total = await credits.ledger_sum(rig.db, tenant.project_id)
    assert balance == ledger_total == 1_000_000


async def test_insufficient_credits_carries_a_topup_offer_for_the_shortfall(
    rig: Rig, funded_payer: LocalAccount
) -> None:
    tenant = await new_tenant(rig.db)
    await credits.grant(rig.db, tenant.project_id, 10_000)
    refused = await rig.http.post("/v1/messages", json=SEND, headers=tenant.headers)
    assert refused.status_code == 402, refused.text
    body = refused.json()
    assert body["error"] == "insufficient_credits" and body["balance_atomic"] == 10_000
    shortfall = body["required_atomic"] - 10_000
    offer = decoded(refused.headers["PAYMENT-REQUIRED"])
    assert offer["accepts"][0]["amount"] == str(shortfall)
    assert offer["resource"]["url"].endswith("/v1/credits/topup")
    assert body["topup"]["total_atomic"] == shortfall
    async with x402HttpxClient(
        official_client(funded_payer, rig.network),
        base_url=rig.server.url,
        headers=tenant.headers,
        timeout=30,
    ) as http:
        paid = await http.post("/v1/credits/topup", json={"amount": body["topup"]["total"]})
    assert paid.status_code == 200, paid.text
    sent = await rig.http.post("/v1/messages", json=SEND, headers=tenant.headers)
    assert sent.status_code == 202, sent.text
    assert await credits.ledger_sum(rig.db, tenant.project_id) == (0, 0)


async def test_a_refunded_payer_pays_only_the_rest_next_time(
    rig: Rig, funded_payer: LocalAccount
) -> None:
    two = {**SEND, "to": [SEND["to"], "+14155550101"]}
    quote = await rig.offer(two)
    first = await rig.pay(sign_payment(funded_payer, rig.requirement(2 * PRICE)), None, two)
    assert first.status_code == 202, first.text
    async with rig.db.transaction() as session:
        message = (await session.execute(select(Message).limit(1))).scalar_one()
        assert await credits.refund_message(session, message)
    before = await rig.balance(funded_payer.address)

    payer_header = {"X-Payer": funded_payer.address}
    discounted = await rig.offer(two, headers=payer_header)
    async with x402HttpxClient(
        official_client(funded_payer, rig.network),
        base_url=rig.server.url,
        headers=payer_header,
        timeout=30,
    ) as http:
        second = await http.post("/v1/messages", json=two)

    assert quote["total_atomic"] == 2 * PRICE
    assert discounted["credit_applied_atomic"] == PRICE
    assert discounted["amount_due_atomic"] == PRICE
    assert second.status_code == 202, second.text
    assert second.json()["payment"]["credit_applied_atomic"] == PRICE
    assert await rig.balance(funded_payer.address) == before - PRICE
    async with rig.db.sessions() as session:
        network = rig.network.network
        assert await credits.payer_balance(session, funded_payer.address, network) == 0
