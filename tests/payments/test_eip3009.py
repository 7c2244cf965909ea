"""Local verification of EIP-3009 authorizations: one accepted payment, and one refusal with
its own reason for each way a payment can be wrong."""

from __future__ import annotations

import base64
import json
import time

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from app.payments.eip3009 import CLOCK_SKEW_S, SETTLEMENT_MARGIN_S, verify_authorization
from app.payments.errors import PaymentInvalid
from app.payments.networks import NetworkConfig
from app.payments.requirements import PaymentRequirement
from app.payments.wire import decode_payment
from tests.support.devchain import sign_payment

pytest_plugins = ["tests.support.devchain"]

PRICE = 20_000


@pytest.fixture
def requirement(devchain_network: NetworkConfig) -> PaymentRequirement:
    return PaymentRequirement(devchain_network, amount_atomic=PRICE)


@pytest.fixture
def account() -> LocalAccount:
    return Account.create()


def _verify(header: str, requirement: PaymentRequirement) -> str:
    return verify_authorization(decode_payment(header), requirement, int(time.time()))


def _reason(header: str, requirement: PaymentRequirement) -> str:
    with pytest.raises(PaymentInvalid) as caught:
        _verify(header, requirement)
    return caught.value.reason


@pytest.mark.parametrize("version", [1, 2])
def test_valid_authorization_returns_the_payer(
    requirement: PaymentRequirement, account: LocalAccount, version: int
) -> None:
    assert _verify(sign_payment(account, requirement, x402_version=version), requirement) == (
        account.address
    )


def test_wrong_scheme_is_refused(requirement: PaymentRequirement, account: LocalAccount) -> None:
    assert _reason(sign_payment(account, requirement, scheme="upto"), requirement) == (
        "invalid_scheme"
    )


@pytest.mark.parametrize(("version", "network"), [(2, "eip155:8453"), (1, "base")])
def test_wrong_network_is_refused(
    requirement: PaymentRequirement, account: LocalAccount, version: int, network: str
) -> None:
    header = sign_payment(account, requirement, x402_version=version, network=network)
    assert _reason(header, requirement) == "invalid_network"


def test_authorization_for_another_token_is_refused(
    requirement: PaymentRequirement, account: LocalAccount
) -> None:
    other_token = Account.create().address
    header = sign_payment(account, requirement, asset=other_token)
    assert _reason(header, requirement) == "invalid_asset"


def test_v1_authorization_for_another_token_fails_its_signature(
    requirement: PaymentRequirement, account: LocalAccount
) -> None:
    # v1 payloads do not name the asset: the token is bound by the EIP-712 domain only.
    header = sign_payment(account, requirement, x402_version=1, asset=Account.create().address)
    assert _reason(header, requirement) == "invalid_signature"


def test_payment_to_someone_else_is_refused(
    requirement: PaymentRequirement, account: LocalAccount
) -> None:
    header = sign_payment(account, requirement, to=Account.create().address)
    assert _reason(header, requirement) == "invalid_pay_to"


@pytest.mark.parametrize("value", [PRICE - 1, PRICE + 1])
def test_amount_must_match_the_price_exactly(
    requirement: PaymentRequirement, account: LocalAccount, value: int
) -> None:
    assert _reason(sign_payment(account, requirement, value=value), requirement) == (
        "invalid_amount"
    )


def test_expired_authorization_is_refused(
    requirement: PaymentRequirement, account: LocalAccount
) -> None:
    now = int(time.time())
    assert _reason(sign_payment(account, requirement, valid_before=now - 1), requirement) == (
        "authorization_expired"
    )


def test_authorization_expiring_within_the_settlement_margin_is_refused(
    requirement: PaymentRequirement, account: LocalAccount
) -> None:
    soon = int(time.time()) + SETTLEMENT_MARGIN_S - 1
    assert _reason(sign_payment(account, requirement, valid_before=soon), requirement) == (
        "authorization_expired"
    )


def test_authorization_longer_than_max_timeout_is_refused(
    requirement: PaymentRequirement, account: LocalAccount
) -> None:
    now = int(time.time())
    year_2286 = 9_999_999_999
    too_long = now + requirement.max_timeout_s + CLOCK_SKEW_S + 5
    for valid_before in (year_2286, too_long):
        header = sign_payment(account, requirement, valid_before=valid_before)
        assert _reason(header, requirement) == "authorization_too_long"


def test_authorization_at_max_timeout_with_a_fast_client_clock_is_accepted(
    requirement: PaymentRequirement, account: LocalAccount
) -> None:
    within = int(time.time()) + requirement.max_timeout_s + CLOCK_SKEW_S - 5
    payment = decode_payment(sign_payment(account, requirement, valid_before=within))
    assert verify_authorization(payment, requirement, int(time.time())) == account.address


def test_authorization_not_yet_valid_is_refused(
    requirement: PaymentRequirement, account: LocalAccount
) -> None:
    later = int(time.time()) + 60
    assert _reason(sign_payment(account, requirement, valid_after=later), requirement) == (
        "authorization_not_yet_valid"
    )


def test_signature_by_another_key_is_refused(
    requirement: PaymentRequirement, account: LocalAccount
) -> None:
    forged = json.loads(base64.b64decode(sign_payment(Account.create(), requirement)))
    forged["payload"]["authorization"]["from"] = account.address
    header = base64.b64encode(json.dumps(forged).encode()).decode()
    assert _reason(header, requirement) == "invalid_signature"


def test_signature_for_another_chain_is_refused(
    requirement: PaymentRequirement, account: LocalAccount
) -> None:
    header = sign_payment(account, requirement, chain_id=requirement.network.chain_id + 1)
    assert _reason(header, requirement) == "invalid_signature"


def test_truncated_and_high_s_signatures_are_refused(
    requirement: PaymentRequirement, account: LocalAccount
) -> None:
    payload = json.loads(base64.b64decode(sign_payment(account, requirement)))
    signature = bytes.fromhex(payload["payload"]["signature"][2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(signature[32:64], "big")
    # The same point with the other s: valid for ecrecover, refused by the token (EIP-2).
    malleable = signature[:32] + (n - s).to_bytes(32, "big") + bytes([55 - signature[64]])
    for bad in (signature[:64], malleable):
        payload["payload"]["signature"] = "0x" + bad.hex()
        header = base64.b64encode(json.dumps(payload).encode()).decode()
        assert _reason(header, requirement) == "invalid_signature"


def test_malformed_header_is_refused(requirement: PaymentRequirement) -> None:
    assert _reason("bm90IGEgcGF5bWVudA==", requirement) == "malformed_payment"
