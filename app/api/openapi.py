"""What the OpenAPI document says beyond the handlers' signatures: the one error body, the error
responses of each route, the key and device-token security schemes, and the exact request bodies
of the routes that parse their own JSON (so bad input keeps our own error codes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    Operation,
    RequestBody,
    SecurityRequirement,
    SecurityScheme,
)

from app.domain.credentials import SCOPES
from app.domain.segments import MAX_CHARACTERS


class ErrorBody(msgspec.Struct):
    """Every error. `error` is a stable snake_case code, `message` is for humans; some codes
    add details (`param`, `categories`, `blocked_number`, `required_scope`, `retry_after_s`,
    `balance_atomic`, an x402 `accepts` list, …), so other properties may follow."""

    error: str
    message: str


_ERROR_DESCRIPTIONS = {
    400: "Invalid input (`invalid_body`, `invalid_input`, `invalid_request`, `malformed_json`, "
    "`invalid_number`, `message_too_long`, `too_many_recipients`, …)",
    401: "No API key, or a malformed, unknown or revoked one (`unauthorized`); for a user's "
    "routes, no valid access token (`user_token_required`, `invalid_token`), wrong sign-in "
    "details (`invalid_credentials`) or refresh token (`invalid_refresh_token`)",
    402: "Payment required: an x402 offer (`PAYMENT-REQUIRED` header and the v1 body) or "
    "`insufficient_credits` with a top-up offer",
    403: "The key lacks the scope this route needs (`forbidden`, with `required_scope`), or is "
    "a self-registered agent's key not claimed yet (`agent_unclaimed`, with `claim_url`)",
    404: "No such object in this project (`not_found`)",
    409: "Conflict with the current state (a used quote or authorization, a reused "
    "idempotency key with another body, a message that left the queue, a revoked key, an "
    "email already registered, an agent already registered, claimed or past its claim)",
    413: "The request body is larger than this server accepts (`body_too_large`)",
    422: "Refused: blocked destination or content (`emergency_number_blocked`, "
    "`destination_not_allowed`, `recipient_opted_out`, `content_blocked`, …), an unverifiable "
    "payment, or account and claim input refused for what "
    "it says (`invite_required`, `invalid_invite`, `weak_password`, "
    "`invalid_verification_code`, `name_taken`)",
    429: "Rate limited (`rate_limited`; on sends also `recipient_rate_limited`, "
    "`payer_rate_limited`); `Retry-After` says when to try again",
    503: "A dependency (database or chain) is unavailable (`unavailable`)",
}


def error_responses(
    *statuses: int, rate_limited: bool = True, reads_database: bool = True
) -> dict[int, ResponseSpec]:
    """The `responses=` of a route: `ErrorBody` under each status it can answer with, plus 429
    on every rate-limited route and 503 on every route that reads the database."""
    wanted = sorted(
        {*statuses, *([429] if rate_limited else []), *([503] if reads_database else [])}
    )
    return {
        status: ResponseSpec(
            data_container=ErrorBody,
            description=_ERROR_DESCRIPTIONS[status],
            generate_examples=False,
        )
        for status in wanted
    }


# Routes that take a project API key (`Bearer sw_live_…` or `X-Api-Key`), or a user's access
# token with `Simwire-Project`.
KEY_SECURITY: list[SecurityRequirement] = [
    {"bearerKey": []},
    {"apiKeyHeader": []},
    {"userToken": []},
]
# Routes for a signed-in user: `Authorization: Bearer <access token>` (a JWT from
# POST /v1/auth/token).
USER_SECURITY: list[SecurityRequirement] = [{"userToken": []}]
# Routes where the key is optional: anonymous callers quote, pay per call and read paid requests.
OPTIONAL_KEY_SECURITY: list[SecurityRequirement] = [*KEY_SECURITY, {}]
DEVICE_SECURITY: list[SecurityRequirement] = [{"deviceToken": []}]
# Wallet routes: a Sign-In-With-X proof from the wallet that paid (no key, no account).
WALLET_SECURITY: list[SecurityRequirement] = [{"signInWithX": []}]

COMPONENTS = Components(
    security_schemes={
        "bearerKey": SecurityScheme(
            type="http",
            scheme="bearer",
            description="A project API key: `Authorization: Bearer sw_live_…` (32 hex)",
        ),
        "apiKeyHeader": SecurityScheme(
            type="apiKey",
            name="X-Api-Key",
            security_scheme_in="header",
            description="The same API key in `X-Api-Key`",
        ),
        "signInWithX": SecurityScheme(
            type="apiKey",
            name="SIGN-IN-WITH-X",
            security_scheme_in="header",
            description=(
                "Base64 JSON of a Sign-In-With-X payload (x402 `sign-in-with-x` extension, "
                "EIP-4361) signed by the wallet that paid; without it the 401 carries a "
                "challenge to sign"
            ),
        ),
        "userToken": SecurityScheme(
            type="http",
            scheme="bearer",
            bearer_format="JWT",
            description=(
                "A user's access token from `POST /v1/auth/token`: `Authorization: Bearer "
                "<access_token>`. On project routes it acts on the project named by the "
                "`Simwire-Project: prj_…` header, with the rights of the user's role there"
            ),
        ),
        "deviceToken": SecurityScheme(
            type="http",
            scheme="bearer",
            description="A paired phone's token: `Authorization: Bearer sw_dev_…`",
        ),
    }
)


# Request bodies. The handlers parse these themselves (our error codes for bad input); these
# Structs only say, exactly, what those parsers accept.

_NO_NUL = r"^[^\u0000]*$"
Phone = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=_NO_NUL,
        description="E.164 (`+14155550100`) or national with `region`",
    ),
]
Recipients = (
    Phone
    | Annotated[
        list[Phone],
        msgspec.Meta(min_length=1, max_length=1000, description="Up to 1000 recipients"),
    ]
)
Body = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_CHARACTERS,
        # At least one visible character, and no NUL.
        pattern=r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
        description="1–1600 characters (Unicode code points), not only whitespace",
    ),
]
Tag = Annotated[str, msgspec.Meta(max_length=200, pattern=_NO_NUL)]
Region = Annotated[
    str,
    msgspec.Meta(pattern=r"^[A-Za-z]{2}$", description="ISO 3166 country for national numbers"),
]
SimChoice = (
    Annotated[
        str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_NUL, description="SIM number")
    ]
    # gt=-1, not ge=0: Litestar drops a bound of 0 from the document.
    | Annotated[int, msgspec.Meta(gt=-1, le=255, description="SIM slot")]
)
TtlSeconds = Annotated[int, msgspec.Meta(ge=10, le=604_800)]
CallbackUrl = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=2048,
        description=(
            "Pay-per-call (x402) sends only: this request's message events and replies are "
            "POSTed here, signed with the `callback_secret` of the 202 (docs/webhooks.md)"
        ),
    ),
]


class MessageDraftIn(msgspec.Struct, forbid_unknown_fields=True):
    to: Recipients
    message: Body
    tag: Tag | None = None


class SendOneIn(MessageDraftIn, forbid_unknown_fields=True):
    """One body to one or more recipients."""

    sim: SimChoice | None = None
    """Pin a SIM by number or slot."""
    ttl_s: TtlSeconds | None = None
    """Expire unsent after this many seconds."""
    region: Region | None = None
    quote_id: str | None = None
    """The quote a plain-transfer payment pays (else the `X-Quote-Id` header)."""
    callback_url: CallbackUrl | None = None


class SendBatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """Several bodies in one request (at most 1000 recipients in all)."""

    messages: Annotated[list[MessageDraftIn], msgspec.Meta(min_length=1, max_length=1000)]
    sim: SimChoice | None = None
    ttl_s: TtlSeconds | None = None
    region: Region | None = None
    quote_id: str | None = None
    callback_url: CallbackUrl | None = None


class QuoteIn(MessageDraftIn, forbid_unknown_fields=True):
    """What `POST /v1/messages` would take for one body, priced (`sim` and `ttl_s` are
    accepted so the same body can be quoted, and change nothing of the price)."""

    sim: SimChoice | None = None
    ttl_s: TtlSeconds | None = None
    region: Region | None = None


Usdc = Annotated[
    str,
    msgspec.Meta(
        # Above 0 and at most 10000 USDC, with at most 6 decimals.
        pattern=(
            r"^(?:[1-9][0-9]{0,3}(?:\.[0-9]{1,6})?|10000(?:\.0{1,6})?"
            r"|0\.(?:[1-9][0-9]{0,5}|0[1-9][0-9]{0,4}|00[1-9][0-9]{0,3}|000[1-9][0-9]{0,2}"
            r"|0000[1-9][0-9]?|00000[1-9]))$"
        ),
        description="USDC as a decimal string, above 0 and at most 10000, e.g. `5.00`",
        examples=["5.00"],
    ),
]


class TopupIn(msgspec.Struct, forbid_unknown_fields=True):
    amount: Usdc
    quote_id: str | None = None
    """The top-up quote a payment pays (else the `X-Quote-Id` header)."""


def _inline(*types: Any) -> dict[str, Any]:
    """The JSON Schema of one of `types`, with msgspec's `$defs` inlined (an operation's body
    schema cannot hold its own `$defs` and point into them)."""
    refs, components = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(components[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved = [resolve(ref) for ref in refs]
    return resolved[0] if len(resolved) == 1 else {"oneOf": resolved}


def body_schema(struct: type[msgspec.Struct], **properties: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a body Struct as msgspec decodes it (`forbid_unknown_fields` becomes
    `additionalProperties: false`), with some `properties` stated more exactly than the Struct
    types them (when the service, not the decoder, checks them)."""
    schema = _inline(struct)
    schema["properties"].update(properties)
    return schema


def _with_to_number(schema: dict[str, Any]) -> dict[str, Any]:
    """A one-body form that also takes `to_number` (the pay-per-call reference API's name for
    `to`): exactly one of the two."""
    schema["properties"]["to_number"] = {
        **schema["properties"]["to"],
        "description": "The same as `to`, under the name the pay-per-call reference API uses",
    }
    schema["required"] = [name for name in schema["required"] if name != "to"]
    schema["oneOf"] = [
        {"required": ["to"], "not": {"required": ["to_number"]}},
        {"required": ["to_number"], "not": {"required": ["to"]}},
    ]
    return schema


def _send_schema() -> dict[str, Any]:
    schema = _inline(SendOneIn, SendBatchIn)
    # `messages` decides which form it is; the one-body form never carries it.
    schema["oneOf"][0] = _with_to_number(schema["oneOf"][0])
    schema["oneOf"][0]["not"] = {"required": ["messages"]}
    return schema


def typed_body(schema: dict[str, Any]) -> type[Operation]:
    """An `operation_class` whose request body is `schema` (JSON), for a handler that takes
    `data: Any` and parses it itself."""

    @dataclass
    class TypedBodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                required=True,
                content={"application/json": OpenAPIMediaType(schema=schema)},  # type: ignore[arg-type]
            )

    return TypedBodyOperation


SEND_BODY = typed_body(_send_schema())
QUOTE_BODY = typed_body(_with_to_number(_inline(QuoteIn)))
TOPUP_BODY = typed_body(_inline(TopupIn))
SCOPE_LIST = {
    "anyOf": [
        {"type": "array", "items": {"enum": list(SCOPES)}},
        {"type": "null"},
    ],
    "description": "Scopes to grant; null (or absent) grants every scope",
}
