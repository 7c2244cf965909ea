"""What every 402 declares besides the price, in the x402 extensions' own shapes: the Bazaar
discovery entry (how to call the resource, what it answers), Sign-In-With-X (how the payer
reads its requests and replies later), and the payment identifier (idempotent paid retries)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from x402.extensions.bazaar import BAZAAR, OutputConfig, declare_discovery_extension
from x402.extensions.payment_identifier import (
    PAYMENT_IDENTIFIER,
    declare_payment_identifier_extension,
)
from x402.extensions.sign_in_with_x import SIGN_IN_WITH_X, build_siwx_schema

from app.payments.networks import NetworkConfig

SEND_DESCRIPTION = (
    "Send an SMS through Simwire's phones: pay the quoted USDC per call, then follow the "
    "request id; the paying wallet reads statuses and replies with Sign-In-With-X."
)
TOPUP_DESCRIPTION = "Top up a Simwire project's prepaid SMS credits with USDC."
MIME_TYPE = "application/json"
SIWX_STATEMENT = "Sign in to Simwire to read the requests and replies this wallet paid for."
SIWX_TTL_S = 300

_PHONE = {"type": "string", "minLength": 1, "maxLength": 64, "description": "E.164 number"}
SEND_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "to": {
            "anyOf": [_PHONE, {"type": "array", "items": _PHONE, "minItems": 1}],
            "description": "One recipient or a list (at most 10 per paid call)",
        },
        "to_number": {"anyOf": [_PHONE, {"type": "array", "items": _PHONE}]},
        "message": {"type": "string", "minLength": 1, "maxLength": 1600},
        "tag": {"type": "string", "maxLength": 200},
        "sim": {"type": "string"},
        "ttl_s": {"type": "integer", "minimum": 10, "maximum": 604800},
        "region": {"type": "string", "pattern": "^[A-Za-z]{2}$"},
    },
    "required": ["message"],
}
SEND_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"},
        "status": {"type": "string"},
        "segment_count": {"type": "integer"},
        "recipient_count": {"type": "integer"},
        "total": {"type": "string"},
        "messages": {"type": "array", "items": {"type": "object"}},
        "payment": {"type": "object"},
    },
    "required": ["request_id", "status", "messages"],
}
SEND_OUTPUT_EXAMPLE = {
    "request_id": "req_3f9a2c",
    "status": "processing",
    "segment_count": 1,
    "recipient_count": 1,
    "total": "0.035",
    "messages": [{"id": "msg_8d1e0b", "to": "+14155550100", "status": "queued"}],
    "payment": {"transaction": "0x…", "amount": "0.035"},
}
TOPUP_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"amount": {"type": "string", "description": "USDC, e.g. 5.00"}},
    "required": ["amount"],
}
TOPUP_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "project_id": {"type": "string"},
        "credited": {"type": "string"},
        "balance": {"type": "string"},
    },
    "required": ["project_id", "credited", "balance"],
}


def _bazaar(
    example: dict[str, Any],
    input_schema: dict[str, Any],
    output_example: dict[str, Any],
    output_schema: dict[str, Any],
) -> dict[str, Any]:
    declared = declare_discovery_extension(
        input=example,
        input_schema=input_schema,
        body_type="json",
        output=OutputConfig(example=output_example, schema=output_schema),
    )
    entry: dict[str, Any] = declared[BAZAAR.key]
    # The method the route key would give (the resource server extension fills it in when
    # the x402 middleware serves the route; we serve it ourselves).
    entry["info"]["input"]["method"] = "POST"
    return entry


def send_bazaar() -> dict[str, Any]:
    """The Bazaar entry of `POST /v1/messages`: a JSON body in, the 202 body out."""
    return _bazaar(
        {"to": "+14155550100", "message": "Your code is 481516"},
        SEND_INPUT_SCHEMA,
        SEND_OUTPUT_EXAMPLE,
        SEND_OUTPUT_SCHEMA,
    )


def topup_bazaar() -> dict[str, Any]:
    return _bazaar(
        {"amount": "5.00"},
        TOPUP_INPUT_SCHEMA,
        {"project_id": "prj_1", "credited": "5", "balance": "5"},
        TOPUP_OUTPUT_SCHEMA,
    )


def siwx_challenge(network: NetworkConfig, origin: str, path: str) -> dict[str, Any]:
    """A fresh Sign-In-With-X challenge (CAIP-122 / EIP-4361 fields) for `origin`: sign it
    with the paying wallet and send it as `SIGN-IN-WITH-X` to `/v1/wallet/...`."""
    now = datetime.now(UTC)
    uri = origin.rstrip("/") + path
    info = {
        "domain": urlparse(origin).netloc,
        "uri": uri,
        "version": "1",
        "nonce": secrets.token_hex(16),
        "issuedAt": _iso(now),
        "expirationTime": _iso(now + timedelta(seconds=SIWX_TTL_S)),
        "statement": SIWX_STATEMENT,
        "resources": [uri],
    }
    return {
        "info": info,
        "supportedChains": [{"chainId": network.network, "type": "eip191"}],
        "schema": build_siwx_schema(),
    }


def offer_extensions(
    network: NetworkConfig, resource_url: str, bazaar: dict[str, Any]
) -> dict[str, Any]:
    """The `extensions` of a 402 for `resource_url`."""
    parsed = urlparse(resource_url)
    origin = f"{parsed.scheme}://{parsed.netloc}"
    return {
        BAZAAR.key: bazaar,
        SIGN_IN_WITH_X: siwx_challenge(network, origin, "/v1/wallet/requests"),
        PAYMENT_IDENTIFIER: declare_payment_identifier_extension(),
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
