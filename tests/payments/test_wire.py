"""x402 wire format: our 402 offers parse with the x402 package, payment headers decode or
fail as `malformed_payment`, settlement headers round-trip."""

from __future__ import annotations

import base64
import json

import pytest
from x402.http import decode_payment_required_header, decode_payment_response_header
from x402.schemas import PaymentRequired
from x402.schemas.v1 import PaymentRequiredV1

from app.payments.errors import PaymentInvalid
from app.payments.networks import BASE_SEPOLIA, network_config
from app.payments.requirements import PaymentRequirement
from app.payments.wire import (
    decode_payment,
    payment_header_from,
    payment_required_body_v1,
    payment_required_header,
    payment_response_header,
    payment_response_header_name,
)
from tests.support.devchain import sign_payment

PAY_TO = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
QUOTE = {"quote": {"quote_id": "q_123", "segment_count": 2, "total": "0.020000"}}


@pytest.fixture
def requirement() -> PaymentRequirement:
    config = network_config(
        "eip155:84532", rpc_url="http://127.0.0.1:1", pay_to=PAY_TO, relayer_key="0x" + "11" * 32
    )
    return PaymentRequirement(config, amount_atomic=20_000, max_timeout_s=120)


def _b64(obj: object) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def test_v2_payment_required_header_parses_with_x402(requirement: PaymentRequirement) -> None:
    header = payment_required_header(
        [requirement],
        resource_url="https://sms.example/v1/messages",
        description="2 SMS",
        extra=QUOTE,
    )
    raw = json.loads(base64.b64decode(header))
    assert raw["x402Version"] == 2
    assert raw["resource"] == {
        "url": "https://sms.example/v1/messages",
        "description": "2 SMS",
        "mimeType": "application/json",
    }
    assert raw["accepts"] == [
        {
            "scheme": "exact",
            "network": "eip155:84532",
            "asset": BASE_SEPOLIA.usdc_address,
            "amount": "20000",
            "payTo": PAY_TO,
            "maxTimeoutSeconds": 120,
            "extra": {**QUOTE, "name": "USDC", "version": "2"},
        }
    ]
    parsed = decode_payment_required_header(header)
    assert isinstance(parsed, PaymentRequired)
    assert parsed.accepts[0].amount == "20000"


def test_v1_body_uses_legacy_names_and_parses_with_x402(requirement: PaymentRequirement) -> None:
    body = payment_required_body_v1(
        [requirement], resource_url="https://sms.example/v1/messages", extra=QUOTE
    )
    offer = body["accepts"][0]
    assert body["x402Version"] == 1
    assert offer["network"] == "base-sepolia"
    assert offer["maxAmountRequired"] == "20000"
    assert offer["resource"] == "https://sms.example/v1/messages"
    assert offer["payTo"] == PAY_TO and offer["asset"] == BASE_SEPOLIA.usdc_address
    assert offer["extra"]["name"] == "USDC" and offer["extra"]["quote"]["quote_id"] == "q_123"
    PaymentRequiredV1.model_validate(body)


def test_v1_body_leaves_out_networks_without_a_v1_name(requirement: PaymentRequirement) -> None:
    local = PaymentRequirement(requirement.network.with_(v1_name=None), 1)
    body = payment_required_body_v1([local], resource_url="https://sms.example/x")
    assert body["accepts"] == []


@pytest.mark.parametrize("version", [1, 2])
def test_signed_payment_decodes_to_one_normalized_shape(
    requirement: PaymentRequirement, version: int
) -> None:
    from eth_account import Account

    account = Account.create()
    nonce = bytes(range(32))
    header = sign_payment(account, requirement, x402_version=version, nonce=nonce)
    payment = decode_payment(header)
    assert payment.x402_version == version
    assert payment.scheme == "exact"
    assert payment.network == ("eip155:84532" if version == 2 else "base-sepolia")
    assert payment.payer == account.address
    assert payment.to == PAY_TO
    assert payment.value == 20_000
    assert payment.nonce == "0x" + nonce.hex()
    assert len(payment.signature) == 65
    assert (payment.accepted is not None) == (version == 2)


def test_payment_header_is_found_by_either_name_in_any_case() -> None:
    assert payment_header_from({"payment-signature": "v2"}) == "v2"
    assert payment_header_from({"X-Payment": "v1"}) == "v1"
    assert payment_header_from({"PAYMENT-SIGNATURE": "v2", "X-PAYMENT": "v1"}) == "v2"
    assert payment_header_from({"Authorization": "x"}) is None


GOOD_AUTH = {
    "from": "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "to": PAY_TO,
    "value": "1",
    "validAfter": "0",
    "validBefore": "9999999999",
    "nonce": "0x" + "ab" * 32,
}


def _v1(**auth_changes: object) -> str:
    auth = {**GOOD_AUTH, **auth_changes}
    return _b64(
        {
            "x402Version": 1,
            "scheme": "exact",
            "network": "base-sepolia",
            "payload": {"authorization": auth, "signature": "0x" + "00" * 65},
        }
    )


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "malformed_payment"),
        ("%%% not base64 %%%", "malformed_payment"),
        (base64.b64encode(b"not json").decode(), "malformed_payment"),
        (_b64([1, 2, 3]), "malformed_payment"),
        (_b64({"x402Version": 2, "payload": {}}), "malformed_payment"),
        (
            _b64({"x402Version": 1, "scheme": "exact", "network": "base", "payload": {}}),
            "malformed_payment",
        ),
        (_v1(**{"from": "0x1234"}), "malformed_payment"),
        (_v1(value="-5"), "malformed_payment"),
        (_v1(value="1.5"), "malformed_payment"),
        (_v1(value=str(2**256)), "malformed_payment"),
        (_v1(validBefore=None), "malformed_payment"),
        (_v1(nonce="0x1234"), "malformed_payment"),
        (_b64({"x402Version": 3, "payload": {}}), "unsupported_version"),
        (_b64({"payload": {}}), "unsupported_version"),
    ],
)
def test_malformed_payment_headers_are_refused_with_a_reason(header: str, reason: str) -> None:
    with pytest.raises(PaymentInvalid) as caught:
        decode_payment(header)
    assert caught.value.reason == reason
    assert caught.value.code == "payment_invalid"
    assert caught.value.details["reason"] == reason


def test_url_safe_unpadded_base64_is_accepted() -> None:
    header = _v1().replace("+", "-").replace("/", "_").rstrip("=")
    assert decode_payment(header).value == 1


def test_settlement_headers_round_trip_through_x402() -> None:
    assert payment_response_header_name(2) == "PAYMENT-RESPONSE"
    assert payment_response_header_name(1) == "X-PAYMENT-RESPONSE"
    ok = payment_response_header(
        network="eip155:84532", transaction="0x" + "cd" * 32, payer=GOOD_AUTH["from"]
    )
    assert json.loads(base64.b64decode(ok)) == {
        "success": True,
        "payer": GOOD_AUTH["from"],
        "transaction": "0x" + "cd" * 32,
        "network": "eip155:84532",
    }
    failed = decode_payment_response_header(
        payment_response_header(network="base", success=False, error_reason="authorization_used")
    )
    assert failed.success is False and failed.error_reason == "authorization_used"
