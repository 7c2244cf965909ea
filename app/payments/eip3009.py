"""Local checks of an EIP-3009 `TransferWithAuthorization` against what we asked for.

Nothing here touches the chain: whether the nonce is unused and the payer can pay is asked of
the token by `chain.ChainClient`.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address

from app.payments.errors import PaymentInvalid
from app.payments.networks import NetworkConfig
from app.payments.requirements import PaymentRequirement
from app.payments.wire import SCHEME_EXACT, DecodedPayment

# Time an authorization must still be valid for after we accept it, so that the settlement
# transaction lands while the token still honours it.
SETTLEMENT_MARGIN_S = 6
# How far a client's clock may run ahead of ours when it sets `validBefore` to now plus the
# `maxTimeoutSeconds` we advertised.
CLOCK_SKEW_S = 30

_SECP256K1_HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0

_TRANSFER_WITH_AUTHORIZATION_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ],
}


def verify_authorization(
    payment: DecodedPayment,
    requirement: PaymentRequirement,
    now_s: int,
    *,
    margin_s: int = SETTLEMENT_MARGIN_S,
) -> str:
    """Check a decoded payment against `requirement`; return the payer's checksummed address.

    The amount must be exactly `requirement.amount_atomic`: the `exact` scheme moves what was
    signed, so more would overcharge and less would underpay. The window must hold now and
    for `margin_s` more seconds: `validAfter < now_s` (strict, as the token checks it) and
    `now_s + margin_s < validBefore`, and no longer than advertised: `validBefore - now_s`
    at most `requirement.max_timeout_s` plus `CLOCK_SKEW_S`. The EIP-712 signature is
    recovered with eth-account over the token's domain (name, version, chain id, address) and
    must be `from`.

    Raises `PaymentInvalid` with reason `invalid_scheme`, `invalid_network`, `invalid_asset`,
    `invalid_pay_to`, `invalid_amount`, `authorization_not_yet_valid`,
    `authorization_expired`, `authorization_too_long` or `invalid_signature`, checked in that
    order.
    """
    network = requirement.network
    if payment.scheme != SCHEME_EXACT:
        raise PaymentInvalid("invalid_scheme", f"scheme {payment.scheme!r} is not 'exact'")
    expected_network = network.network if payment.x402_version >= 2 else network.v1_name
    if payment.network != expected_network:
        raise PaymentInvalid(
            "invalid_network", f"network {payment.network!r} is not {expected_network!r}"
        )
    if payment.accepted is not None:
        # v2 echoes the offer it fulfils; v1 does not, there the signature domain binds the
        # asset (a v1 authorization for another token fails as invalid_signature).
        _check_accepted(payment, requirement)
    if payment.to != network.pay_to:
        raise PaymentInvalid("invalid_pay_to", f"authorization pays {payment.to}, not us")
    if payment.value != requirement.amount_atomic:
        raise PaymentInvalid(
            "invalid_amount",
            f"authorization is for {payment.value}, the price is exactly "
            f"{requirement.amount_atomic} (USDC atomic units)",
        )
    if payment.valid_after >= now_s:
        raise PaymentInvalid(
            "authorization_not_yet_valid", f"authorization is valid after {payment.valid_after}"
        )
    if payment.valid_before <= now_s + margin_s:
        raise PaymentInvalid(
            "authorization_expired", f"authorization expired or expires at {payment.valid_before}"
        )
    if payment.valid_before - now_s > requirement.max_timeout_s + CLOCK_SKEW_S:
        raise PaymentInvalid(
            "authorization_too_long",
            f"authorization is valid for {payment.valid_before - now_s} s; at most "
            f"{requirement.max_timeout_s} s (maxTimeoutSeconds) is accepted",
        )
    signer = recover_authorization_signer(payment, network)
    if signer != payment.from_address:
        raise PaymentInvalid("invalid_signature", "signature is not by the authorization's payer")
    return payment.from_address


def recover_authorization_signer(payment: DecodedPayment, network: NetworkConfig) -> str:
    """The address that signed `payment`'s `TransferWithAuthorization` on `network`'s USDC.

    Raises `PaymentInvalid("invalid_signature")` for anything but a canonical 65-byte EOA
    signature (low `s`, `v` of 27/28 or 0/1), which is what the token accepts.
    """
    signature = payment.signature
    if len(signature) != 65:
        raise PaymentInvalid("invalid_signature", "signature is not 65 bytes")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v < 27:
        v += 27
    if v not in (27, 28) or s > _SECP256K1_HALF_ORDER or s == 0:
        raise PaymentInvalid("invalid_signature", "signature is not canonical")
    signable = encode_typed_data(full_message=_typed_data(payment, network))
    try:
        recovered = Account.recover_message(signable, signature=signature[:64] + bytes([v]))
    except Exception as exc:  # eth-keys raises several types for unrecoverable points
        raise PaymentInvalid("invalid_signature", "signature cannot be recovered") from exc
    return to_checksum_address(recovered)


def _check_accepted(payment: DecodedPayment, requirement: PaymentRequirement) -> None:
    accepted = payment.accepted
    assert accepted is not None
    network = requirement.network
    if not _same_address(accepted.asset, network.usdc_address):
        raise PaymentInvalid("invalid_asset", f"asset {accepted.asset} is not our USDC")
    if not _same_address(accepted.pay_to, network.pay_to):
        raise PaymentInvalid("invalid_pay_to", f"payTo {accepted.pay_to} is not us")


def _same_address(a: str, b: str) -> bool:
    return isinstance(a, str) and a.lower() == b.lower()


def _typed_data(payment: DecodedPayment, network: NetworkConfig) -> dict[str, Any]:
    return {
        "types": _TRANSFER_WITH_AUTHORIZATION_TYPES,
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": network.usdc_name,
            "version": network.usdc_version,
            "chainId": network.chain_id,
            "verifyingContract": network.usdc_address,
        },
        "message": {
            "from": payment.from_address,
            "to": payment.to,
            "value": payment.value,
            "validAfter": payment.valid_after,
            "validBefore": payment.valid_before,
            "nonce": payment.nonce_bytes,
        },
    }
