"""Agents paying per call, on a real chain (anvil) and a live server with a fake phone, on both
databases: `x402MCPSession` pays `send_sms` over MCP through the same settlement as REST (a
replayed payment is refused, a retry naming its payment identifier is answered once); a
wallet reads its replies with Sign-In-With-X and nothing else; every 402 carries a valid
Bazaar entry; and quotes mean the same on every surface."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, select
from x402.extensions.bazaar import validate_discovery_extension
from x402.extensions.sign_in_with_x import create_siwx_payload, encode_siwx_header
from x402.http import decode_payment_required_header
from x402.http.clients import x402HttpxClient
from x402.mcp import x402MCPSession
from x402.schemas import PaymentRequired

from app.db.models import Message, Payment
from app.payments.devchain import DevChain
from app.payments.networks import NetworkConfig
from app.services import credits, devices
from app.services.x402_runtime import x402_project_id
from tests.integration.test_mcp import body_of, mcp_session
from tests.integration.test_x402 import Rig, paid_rig
from tests.support.devchain import official_client
from tests.support.factories import new_tenant
from tests.support.live import RunningPhone, eventually, start_phone
from tests.support.mcp_compat import McpSessionForX402
from tests.support.receiver import running_receiver

pytest_plugins = ["tests.support.devchain"]

RATE = 35_000
TO = "+14155550100"


@pytest.fixture(scope="module")
async def agents_network(devchain: DevChain) -> NetworkConfig:
    relayer: LocalAccount = Account.create()
    await devchain.set_eth_balance(relayer.address, 10**20)
    return devchain.network_config(
        relayer_key=relayer.key.to_0x_hex(), pay_to=Account.create().address, v1_name=None
    )


@pytest.fixture
async def rig(
    settings, db, devchain: DevChain, agents_network: NetworkConfig
) -> AsyncIterator[Rig]:
    fast = settings.model_copy(update={"sweep_interval_s": 0.2})
    async for made in paid_rig(fast, db, devchain, agents_network):
        yield made


@pytest.fixture
async def x402_phone(rig: Rig, tmp_path) -> AsyncIterator[RunningPhone]:
    """A fake phone of the project that delivers paid anonymous messages."""
    project_id = await x402_project_id(rig.db, rig.server.app.state["settings"])
    paired = await devices.pair_device(rig.db, project_id, "x402 phone")
    phone = await start_phone(rig.server, paired.token, tmp_path / "x402-phone")
    try:
        yield phone
    finally:
        await phone.stop()


class _Recording:
    """An x402 client that keeps each payment it creates (to replay one)."""

    def __init__(self, client: Any, made: list[Any]) -> None:
        self.client, self.made = client, made

    async def create_payment_payload(self, required: Any) -> Any:
        payload = await self.client.create_payment_payload(required)
        self.made.append(payload)
        return payload


async def _count(rig: Rig, table: Any) -> int:
    async with rig.db.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


# ------------------------------------------------------------------------ MCP paid per call


async def test_x402_mcp_session_pays_send_sms_and_a_replayed_payment_is_refused(
    rig: Rig, x402_phone: RunningPhone, funded_payer: LocalAccount
) -> None:
    payer_before = await rig.balance(funded_payer.address)
    payloads: list[Any] = []
    async with mcp_session(rig.server) as session:
        offered = await session.call_tool("send_sms", {"to": TO, "message": "Paid over MCP"})
        assert offered.is_error
        required = PaymentRequired.model_validate(offered.structured_content)
        assert required.x402_version == 2 and required.accepts[0].amount == str(RATE)
        assert validate_discovery_extension(required.extensions["bazaar"]).valid

        paying = x402MCPSession(
            McpSessionForX402(session),
            _Recording(official_client(funded_payer, rig.network), payloads),  # type: ignore[arg-type]
        )
        paid = await paying.call_tool("send_sms", {"to": TO, "message": "Paid over MCP"})
        assert paid.payment_made and not paid.is_error, paid.content
        accepted = json.loads(paid.content[0].text)
        assert paid.payment_response is not None and paid.payment_response.success
        assert paid.payment_response.transaction == accepted["payment"]["transaction"]
        [message] = accepted["messages"]
        await eventually(lambda: any(s.to == TO for s in x402_phone.radio.sent), timeout_s=20)

        # The same payment for another message pays nothing.
        [payload] = payloads
        replayed = await session.call_tool(
            "send_sms",
            {"to": TO, "message": "Another message"},
            meta={"x402/payment": payload.model_dump(by_alias=True, exclude_none=True)},
        )
        followed = body_of(
            await session.call_tool("get_request", {"request_id": accepted["request_id"]})
        )

    assert replayed.is_error
    refusal = json.dumps(replayed.structured_content)
    assert "authorization_used" in refusal or "quote" in refusal
    assert [s.body for s in x402_phone.radio.sent] == ["Paid over MCP"]
    assert await rig.balance(funded_payer.address) == payer_before - RATE
    assert await _count(rig, Payment) == 1 and await _count(rig, Message) == 1
    assert followed["request_id"] == accepted["request_id"]
    assert followed["messages"][0]["id"] == message["id"]


async def test_a_retry_with_the_same_payment_identifier_gets_the_first_answer_and_pays_once(
    rig: Rig, x402_phone: RunningPhone, funded_payer: LocalAccount
) -> None:
    payer_before = await rig.balance(funded_payer.address)
    client = official_client(funded_payer, rig.network)
    async with mcp_session(rig.server) as session:
        offered = await session.call_tool("send_sms", {"to": TO, "message": "Once only"})
        required = PaymentRequired.model_validate(offered.structured_content)
        assert "payment-identifier" in required.extensions
        answers = []
        for _ in range(2):  # two authorizations (two nonces), one identifier
            payload = await client.create_payment_payload(required)
            payload.extensions = {
                "payment-identifier": {"info": {"required": False, "id": "pay_retry_0123456789"}}
            }
            answers.append(
                await session.call_tool(
                    "send_sms",
                    {"to": TO, "message": "Once only"},
                    meta={"x402/payment": payload.model_dump(by_alias=True, exclude_none=True)},
                )
            )
    first, second = (body_of(answer) for answer in answers)
    assert not answers[0].is_error and not answers[1].is_error, answers[1].content
    assert second["request_id"] == first["request_id"]
    assert second["payment"]["transaction"] == first["payment"]["transaction"]
    assert await rig.balance(funded_payer.address) == payer_before - RATE
    assert await _count(rig, Payment) == 1 and await _count(rig, Message) == 1


# ------------------------------------------------------------------ wallets read their replies


async def _siwx_header(
    rig: Rig, account: LocalAccount, challenge: dict[str, Any], **changes: Any
) -> str:
    info = {**challenge["info"], **changes}
    chain = challenge["supportedChains"][0]
    url = info["uri"]
    payload = await create_siwx_payload(
        {**info, "chainId": chain["chainId"], "type": chain["type"]}, account, url
    )
    return encode_siwx_header(payload)


async def test_a_wallet_reads_its_reply_with_sign_in_with_x_and_nothing_else(
    rig: Rig, x402_phone: RunningPhone, funded_payer: LocalAccount, devchain: DevChain
) -> None:
    async with x402HttpxClient(
        official_client(funded_payer, rig.network), base_url=rig.server.url, timeout=30
    ) as http:
        sent = await http.post("/v1/messages", json={"to": TO, "message": "Dinner at 8?"})
    assert sent.status_code == 202, sent.text
    [out] = sent.json()["messages"]
    await eventually(lambda: x402_phone.radio.sent, timeout_s=20)
    await x402_phone.radio.receive(TO, "Yes, see you then")
    await x402_phone.radio.receive("+14155550199", "unrelated")

    unsigned = await rig.http.get("/v1/wallet/messages")
    assert unsigned.status_code == 401 and unsigned.json()["error"] == "wallet_sign_in_required"
    challenge = unsigned.json()["sign_in"]

    async def read(header: str, path: str = "/v1/wallet/messages?direction=in") -> Any:
        return await rig.http.get(path, headers={"SIGN-IN-WITH-X": header})

    async def reply_arrived() -> Any:
        header = await _siwx_header(rig, funded_payer, challenge, nonce=_nonce())
        response = await read(header)
        assert response.status_code == 200, response.text
        return response.json()["data"]

    [reply] = await eventually(reply_arrived, timeout_s=20)
    assert reply["body"] == "Yes, see you then" and reply["in_reply_to"] == out["id"]
    assert reply["direction"] == "in"

    header = await _siwx_header(rig, funded_payer, challenge, nonce=_nonce())
    requests = await read(header, "/v1/wallet/requests")
    assert requests.status_code == 200
    assert [r["request_id"] for r in requests.json()["data"]] == [sent.json()["request_id"]]
    reused = await read(header)  # its nonce signed in once already
    assert reused.status_code == 401 and reused.json()["reason"] == "invalid_siwx_nonce"

    other = await devchain.new_payer()
    theirs = await read(await _siwx_header(rig, other, challenge, nonce=_nonce()))
    assert theirs.status_code == 200 and theirs.json()["data"] == []

    now = datetime.now(UTC)
    expired = await read(
        await _siwx_header(
            rig,
            funded_payer,
            challenge,
            nonce=_nonce(),
            issuedAt=_iso(now - timedelta(seconds=120)),
            expirationTime=_iso(now - timedelta(seconds=60)),
        )
    )
    assert expired.status_code == 401 and expired.json()["reason"] == "invalid_siwx_expired"

    elsewhere = challenge | {
        "info": {**challenge["info"], "domain": "evil.example", "uri": "https://evil.example/x"}
    }
    wrong_domain = await read(await _siwx_header(rig, funded_payer, elsewhere, nonce=_nonce()))
    assert wrong_domain.status_code == 401
    assert wrong_domain.json()["reason"] == "invalid_siwx_domain_mismatch"
    assert wrong_domain.json()["docs_url"].endswith("/docs/errors#siwx_invalid")

    # The same through MCP: list_messages with a wallet session.
    mcp_header = await _siwx_header(rig, funded_payer, challenge, nonce=_nonce())
    async with mcp_session(rig.server, {"SIGN-IN-WITH-X": mcp_header}) as session:
        listed = body_of(await session.call_tool("list_messages", {"direction": "in"}))
    assert [m["body"] for m in listed["data"]] == ["Yes, see you then"]


def _nonce() -> str:
    return Account.create().address[2:18]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------- discovery and quote identity


async def test_every_402_carries_a_valid_bazaar_entry_resource_and_reference_shape(
    rig: Rig,
) -> None:
    response = await rig.http.post("/v1/messages", json={"to_number": TO, "message": "hi"})
    assert response.status_code == 402
    offer = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    assert validate_discovery_extension(offer.extensions["bazaar"]).valid
    assert offer.extensions["bazaar"]["info"]["input"]["method"] == "POST"
    assert offer.resource.description and offer.resource.mime_type == "application/json"
    assert "sign-in-with-x" in offer.extensions and "payment-identifier" in offer.extensions
    body = response.json()
    assert validate_discovery_extension(body["extensions"]["bazaar"]).valid
    assert body["resource"]["mimeType"] == "application/json" and body["resource"]["description"]
    assert body["context"] == {**body["quote"], "tool": "sms"}
    assert body["payment_request"] == {
        "chain_id": rig.network.chain_id,
        "network": rig.network.network,
        "token_address": rig.network.usdc_address,
        "amount": "0.035",
        "amount_atomic": RATE,
        "recipient": rig.network.pay_to,
    }
    assert body["docs_url"].endswith("/docs/errors#payment_required")

    tenant = await new_tenant(rig.db)
    short = await rig.http.post(
        "/v1/messages", json={"to": TO, "message": "hi"}, headers=tenant.headers
    )
    assert short.status_code == 402 and short.json()["error"] == "insufficient_credits"
    topup = decode_payment_required_header(short.headers["PAYMENT-REQUIRED"])
    assert validate_discovery_extension(topup.extensions["bazaar"]).valid


GSM = "Your table is ready"
UCS2 = "Votre table est prête 🍽"
LONG_GSM = "x" * 200  # two segments of one copy


def _check_identity(terms: dict[str, Any], segments: int, recipients: int) -> None:
    assert terms["segment_count"] == segments and terms["recipient_count"] == recipients
    assert terms["per_message_rate_atomic"] == RATE
    assert terms["messaging_fee_atomic"] == segments * recipients * RATE
    other = terms["recipient_fee_atomic"] + terms["request_fee_atomic"]
    assert terms["total_atomic"] == terms["messaging_fee_atomic"] + other
    for name in ("per_message_rate", "messaging_fee", "recipient_fee", "request_fee", "total"):
        assert float(terms[name]) * 1_000_000 == pytest.approx(terms[f"{name}_atomic"])


@pytest.mark.parametrize("count", [1, 3, 10])
@pytest.mark.parametrize(("text", "segments"), [(GSM, 1), (UCS2, 1), (LONG_GSM, 2)])
async def test_quote_identity_holds_on_every_surface(
    rig: Rig,
    x402_phone: RunningPhone,
    funded_payer: LocalAccount,
    count: int,
    text: str,
    segments: int,
) -> None:
    numbers = [f"+1415555{n:04d}" for n in range(count)]
    request = {"to": numbers, "message": text}
    quoted = (await rig.http.post("/v1/quotes", json=request)).json()
    _check_identity(quoted, segments, count)
    assert quoted["encoding"] == ("UCS-2" if text == UCS2 else "GSM-7")

    offer = await rig.http.post("/v1/messages", json=request)
    _check_identity(offer.json()["quote"], segments, count)
    _check_identity(offer.json()["context"], segments, count)

    async with x402HttpxClient(
        official_client(funded_payer, rig.network), base_url=rig.server.url, timeout=30
    ) as http:
        paid = await http.post("/v1/messages", json=request)
    assert paid.status_code == 202, paid.text
    _check_identity(paid.json(), segments, count)

    tenant = await new_tenant(rig.db)
    await credits.grant(rig.db, tenant.project_id, 10_000_000)
    with_credits = await rig.http.post("/v1/messages", json=request, headers=tenant.headers)
    assert with_credits.status_code == 202
    _check_identity(with_credits.json(), segments, count)

    async with mcp_session(rig.server) as session:
        over_mcp = body_of(await session.call_tool("quote_sms", request))
        unpaid = await session.call_tool("send_sms", request)
    _check_identity(over_mcp, segments, count)
    mcp_quote = PaymentRequired.model_validate(unpaid.structured_content).accepts[0].extra["quote"]
    _check_identity(mcp_quote, segments, count)


def _docs_recipes() -> dict[str, Any]:
    """The two verification recipes of docs/webhooks.md, run as a reader would paste them."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    recipes: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "docs/webhooks.md", "exec"), recipes)
    return recipes


async def test_a_paid_send_sms_with_a_callback_gets_its_events_signed_with_its_secret(
    rig: Rig, x402_phone: RunningPhone, funded_payer: LocalAccount
) -> None:
    recipes = _docs_recipes()
    async with running_receiver() as receiver, mcp_session(rig.server) as session:
        arguments = {"to": TO, "message": "Call me back", "callback_url": receiver.url}
        paying = x402MCPSession(
            McpSessionForX402(session),
            official_client(funded_payer, rig.network),  # type: ignore[arg-type]
        )
        paid = await paying.call_tool("send_sms", arguments)
        assert paid.payment_made and not paid.is_error, paid.content
        accepted = json.loads(paid.content[0].text)
        secret = accepted["callback_secret"]
        assert accepted["callback_url"] == receiver.url and secret.startswith("whsec_")

        def types() -> list[str]:
            return [one.json["type"] for one in receiver.received]

        await eventually(lambda: "message.sent" in types(), timeout_s=30)

    for one in receiver.received:
        headers = httpx.Headers(one.headers)
        assert recipes["verify"](one.body, headers, secret)
        assert recipes["verify_standard"](one.body, headers, secret) == one.json
        assert not recipes["verify"](one.body + b" ", headers, secret)
        assert recipes["verify_standard"](one.body, headers, "whsec_" + "A" * 44) is None
        assert one.json["data"]["request_id"] == accepted["request_id"]
    assert types()[:2] == ["message.queued", "message.sent"]


async def test_a_keyed_send_sms_with_a_callback_is_told_to_use_webhooks(rig: Rig) -> None:
    tenant = await new_tenant(rig.db)
    async with mcp_session(rig.server, tenant.headers) as session:
        refused = await session.call_tool(
            "send_sms", {"to": TO, "message": "hi", "callback_url": "http://127.0.0.1:9/x"}
        )
    assert refused.is_error
    assert "callback_url_not_supported" in json.dumps(refused.structured_content)
