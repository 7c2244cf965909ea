"""The x402 wire format: 402 offers out, payment headers in, settlement headers out.

Shapes follow the `x402` package (`PaymentRequired`, `PaymentPayload`, `SettleResponse` and
their v1 forms) and its base64 header codecs, so the official clients interoperate:

- v2 clients read `PAYMENT-REQUIRED` (base64 JSON) and answer with `PAYMENT-SIGNATURE`;
- v1 clients read the JSON body and answer with `X-PAYMENT` (base64 JSON);
- we answer a paid call with `PAYMENT-RESPONSE` (v2) or `X-PAYMENT-RESPONSE` (v1).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address
from pydantic import ValidationError
from x402.http import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    X_PAYMENT_HEADER,
    X_PAYMENT_RESPONSE_HEADER,
    encode_payment_required_header,
    encode_payment_response_header,
)
from x402.schemas import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
)
from x402.schemas.v1 import PaymentPayloadV1, PaymentRequiredV1, PaymentRequirementsV1

from app.payments.errors import PaymentInvalid
from app.payments.requirements import PaymentRequirement

__all__ = [
    "PAYMENT_REQUIRED_HEADER",
    "PAYMENT_RESPONSE_HEADER",
    "PAYMENT_SIGNATURE_HEADER",
    "X_PAYMENT_HEADER",
    "X_PAYMENT_RESPONSE_HEADER",
    "DecodedPayment",
    "payment_required_header",
    "payment_required_body_v1",
    "decode_payment",
    "payment_header_from",
    "payment_response_header",
    "payment_response_header_name",
]

SCHEME_EXACT = "exact"
MAX_UINT256 = 2**256 - 1
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BYTES32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_HEX = re.compile(r"^(0x)?[0-9a-fA-F]*$")
# Headers are small; anything far larger is not a payment and is not worth parsing.
MAX_HEADER_CHARS = 16_384


@dataclass(frozen=True)
class DecodedPayment:
    """A payment header, normalized across x402 v1 and v2.

    `network` is as the client sent it: CAIP-2 for v2, the legacy name for v1. `accepted` is
    the requirement a v2 client says it fulfils (None for v1). Addresses are checksummed,
    `nonce` is `0x` + 64 hex, `signature` the raw signature bytes (65 for an EOA).
    """

    x402_version: int
    scheme: str
    network: str
    from_address: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: str
    signature: bytes
    accepted: PaymentRequirements | None = None

    @property
    def payer(self) -> str:
        return self.from_address

    @property
    def nonce_bytes(self) -> bytes:
        return bytes.fromhex(self.nonce[2:])


# ---------------------------------------------------------------------------- 402 offers


def payment_required_header(
    requirements: Sequence[PaymentRequirement],
    *,
    resource_url: str,
    description: str = "",
    mime_type: str = "application/json",
    error: str = "payment required",
    extra: Mapping[str, Any] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> str:
    """The v2 `PAYMENT-REQUIRED` header value: base64 of the `PaymentRequired` JSON.

    `extra` (e.g. `{"quote": {...}}`) is merged into each offer's `extra` next to the token's
    EIP-712 `name` and `version`, which clients need to sign. `extensions` are the x402
    extensions the offer declares (bazaar, sign-in-with-x, payment-identifier).
    """
    return encode_payment_required_header(
        payment_required(
            requirements,
            resource_url=resource_url,
            description=description,
            mime_type=mime_type,
            error=error,
            extra=extra,
            extensions=extensions,
        )
    )


def payment_required(
    requirements: Sequence[PaymentRequirement],
    *,
    resource_url: str,
    description: str = "",
    mime_type: str = "application/json",
    error: str = "payment required",
    extra: Mapping[str, Any] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> PaymentRequired:
    """The v2 `PaymentRequired` (what the header carries, and an MCP tool result)."""
    return PaymentRequired(
        x402_version=2,
        error=error,
        resource=ResourceInfo(url=resource_url, description=description, mime_type=mime_type),
        accepts=[
            PaymentRequirements(
                scheme=SCHEME_EXACT,
                network=r.network.network,
                asset=r.network.usdc_address,
                amount=str(r.amount_atomic),
                pay_to=r.network.pay_to,
                max_timeout_seconds=r.max_timeout_s,
                extra=_offer_extra(r, extra),
            )
            for r in requirements
        ],
        extensions=dict(extensions) if extensions else None,
    )


def payment_required_body_v1(
    requirements: Sequence[PaymentRequirement],
    *,
    resource_url: str,
    description: str = "",
    mime_type: str = "application/json",
    error: str = "payment required",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The v1 402 JSON body. Networks without a `v1_name` are left out of `accepts`."""
    offer = PaymentRequiredV1(
        error=error,
        accepts=[
            PaymentRequirementsV1(
                scheme=SCHEME_EXACT,
                network=r.network.v1_name,
                max_amount_required=str(r.amount_atomic),
                resource=resource_url,
                description=description,
                mime_type=mime_type,
                pay_to=r.network.pay_to,
                max_timeout_seconds=r.max_timeout_s,
                asset=r.network.usdc_address,
                extra=_offer_extra(r, extra),
            )
            for r in requirements
            if r.network.v1_name
        ],
    )
    return offer.model_dump(mode="json", by_alias=True, exclude_none=True)


def _offer_extra(requirement: PaymentRequirement, extra: Mapping[str, Any] | None) -> dict:
    merged = dict(extra or {})
    merged["name"] = requirement.network.usdc_name
    merged["version"] = requirement.network.usdc_version
    return merged


# ---------------------------------------------------------------------- payment headers


def payment_header_from(headers: Mapping[str, str]) -> str | None:
    """The payment header value of a request: `PAYMENT-SIGNATURE`, else `X-PAYMENT`, else None.

    `headers` may be any mapping; names are matched case-insensitively.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in (PAYMENT_SIGNATURE_HEADER, X_PAYMENT_HEADER):
        value = lowered.get(name.lower())
        if value:
            return value
    return None


def decode_payment(header_value: str) -> DecodedPayment:
    """Decode a `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1) header value.

    The version comes from the payload's `x402Version`. Raises `PaymentInvalid` with reason
    `malformed_payment` (not base64 JSON, missing or ill-typed fields) or
    `unsupported_version`. Only shape is checked here; `eip3009.verify_authorization` decides
    whether the payment is acceptable.
    """
    data = _decode_base64_json(header_value)
    version = data.get("x402Version")
    try:
        if version == 2:
            v2 = PaymentPayload.model_validate(data)
            scheme, network, inner, accepted = (
                v2.accepted.scheme,
                v2.accepted.network,
                v2.payload,
                v2.accepted,
            )
        elif version == 1:
            v1 = PaymentPayloadV1.model_validate(data)
            scheme, network, inner, accepted = v1.scheme, v1.network, v1.payload, None
        else:
            raise PaymentInvalid(
                "unsupported_version", f"x402Version {version!r} is not supported (use 1 or 2)"
            )
    except ValidationError as exc:
        raise _malformed(f"payment payload does not match x402 v{version}: {_first(exc)}") from exc

    auth = inner.get("authorization")
    signature = inner.get("signature")
    if not isinstance(auth, dict) or not isinstance(signature, str):
        raise _malformed("payload needs `authorization` and `signature` (EIP-3009)")
    return DecodedPayment(
        x402_version=version,
        scheme=scheme,
        network=network,
        from_address=_address(auth.get("from"), "from"),
        to=_address(auth.get("to"), "to"),
        value=_uint(auth.get("value"), "value"),
        valid_after=_uint(auth.get("validAfter"), "validAfter"),
        valid_before=_uint(auth.get("validBefore"), "validBefore"),
        nonce=_bytes32(auth.get("nonce"), "nonce"),
        signature=_signature(signature),
        accepted=accepted,
    )


def _decode_base64_json(header_value: str) -> dict[str, Any]:
    if not isinstance(header_value, str) or not header_value.strip():
        raise _malformed("payment header is empty")
    if len(header_value) > MAX_HEADER_CHARS:
        raise _malformed("payment header is too large")
    text = header_value.strip()
    try:
        # Some clients send URL-safe base64 or drop the padding; accept both.
        raw = base64.b64decode(
            text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True
        )
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise _malformed("payment header is not base64-encoded JSON") from exc
    if not isinstance(data, dict):
        raise _malformed("payment header JSON is not an object")
    return data


def _address(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise _malformed(f"authorization.{field} is not an address")
    return to_checksum_address(value)


def _uint(value: Any, field: str) -> int:
    # x402 sends decimal strings; accept JSON integers too, never floats or negatives.
    if isinstance(value, bool):
        raise _malformed(f"authorization.{field} is not an unsigned integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise _malformed(f"authorization.{field} is not an unsigned integer")
    if not 0 <= number <= MAX_UINT256:
        raise _malformed(f"authorization.{field} is out of range")
    return number


def _bytes32(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _BYTES32.match(value):
        raise _malformed(f"authorization.{field} is not 32 bytes of hex")
    return "0x" + value[2:].lower()


def _signature(value: str) -> bytes:
    if not _HEX.match(value) or len(value.removeprefix("0x")) % 2:
        raise _malformed("signature is not hex")
    return bytes.fromhex(value.removeprefix("0x"))


def _malformed(message: str) -> PaymentInvalid:
    return PaymentInvalid("malformed_payment", message)


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


# -------------------------------------------------------------------- settlement headers


def payment_response_header_name(x402_version: int) -> str:
    """`PAYMENT-RESPONSE` for v2, `X-PAYMENT-RESPONSE` for v1."""
    return PAYMENT_RESPONSE_HEADER if x402_version >= 2 else X_PAYMENT_RESPONSE_HEADER


def payment_response_header(
    *,
    network: str,
    transaction: str = "",
    payer: str | None = None,
    success: bool = True,
    error_reason: str | None = None,
    amount_atomic: int | None = None,
) -> str:
    """The `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE` value: base64 of `SettleResponse` JSON.

    Success: `{success: true, transaction, network, payer[, amount]}`. Failure:
    `{success: false, errorReason, transaction: "", network[, payer]}`; x402 clients require
    `transaction` and `network` even then. Pass the network as the client named it (the v1
    name for v1 clients).
    """
    if not success and not error_reason:
        raise ValueError("a failed settlement needs an error_reason")
    response = SettleResponse(
        success=success,
        error_reason=None if success else error_reason,
        payer=payer,
        transaction=transaction if success else "",
        network=network,
        amount=str(amount_atomic) if amount_atomic is not None else None,
    )
    return encode_payment_response_header(response)
