"""`POST /v1/messages` and `POST /v1/quotes`: parse the body into drafts, call one service."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, Response, post

from app.api.auth import optional_auth
from app.api.controllers.payments import pay_per_call
from app.api.fields import check_fields, optional_string
from app.api.openapi import (
    OPTIONAL_KEY_SECURITY,
    QUOTE_BODY,
    SEND_BODY,
    MessageDraftIn,
    QuoteIn,
    SendBatchIn,
    SendOneIn,
    error_responses,
)
from app.db.engine import Database
from app.domain import pricing
from app.domain.errors import (
    InsufficientCredits,
    InvalidBody,
    InvalidIdempotencyKey,
    InvalidInput,
    Unauthorized,
    UnknownField,
)
from app.domain.segments import plan_segments
from app.domain.text import has_nul
from app.hub.hub import Hub
from app.payments.wire import PAYMENT_REQUIRED_HEADER
from app.services import devices, quoting, sending
from app.services.projects import AuthContext
from app.services.quote_terms import prepared_terms
from app.services.x402 import X402Gateway
from app.services.x402_runtime import PaymentRuntime, x402_project_id
from app.settings import Settings


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidBody(f"`{name}` must be a string")
    if has_nul(value):
        raise InvalidBody(f"`{name}` must not contain NUL (U+0000)")
    return value


def _optional_text(payload: dict[str, Any], name: str, limit: int = 200) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    text = _text(value, name).strip()
    if len(text) > limit:
        raise InvalidInput(f"`{name}` is longer than {limit} characters")
    return text or None


def _recipients(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidBody("`to` must be a phone number or a list of phone numbers")


SEND_FIELDS = frozenset(SendOneIn.__struct_fields__)
BATCH_FIELDS = frozenset(SendBatchIn.__struct_fields__)
DRAFT_FIELDS = frozenset(MessageDraftIn.__struct_fields__)
QUOTE_FIELDS = frozenset(QuoteIn.__struct_fields__)


def parse_drafts(
    payload: Any,
    single_fields: frozenset[str] = SEND_FIELDS,
    batch_fields: frozenset[str] | None = BATCH_FIELDS,
) -> list[quoting.Draft]:
    """`{to, message, tag?, …}` or (with `batch_fields`) `{messages: [{to, message, tag?}], …}`
    into drafts; a field outside the form's fields is `unknown_field`."""
    if not isinstance(payload, dict):
        raise InvalidBody(
            "the request body must be a JSON object with `to` and `message`, such as "
            '{"to": "+14155550100", "message": "Hello"}',
            missing_fields=["to", "message"],
        )
    payload = _to_alias(payload)
    if "messages" in payload and batch_fields is None:
        raise UnknownField(
            "this request takes one message, not `messages`",
            field="messages",
            unknown_fields=["messages"],
        )
    if "messages" in payload and batch_fields is not None:
        check_fields(payload, batch_fields, ("messages",), "the request body")
        entries = payload["messages"]
        if not isinstance(entries, list) or not entries:
            raise InvalidBody("`messages` must be a non-empty list of {to, message}")
        drafts = []
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise InvalidBody(f"`messages[{n}]` must be an object with `to` and `message`")
            check_fields(entry, DRAFT_FIELDS, ("to", "message"), f"`messages[{n}]`")
            tag = _optional_text(entry, "tag")
            drafts += [
                quoting.Draft(to, _text(entry["message"], "message"), tag)
                for to in _recipients(entry["to"])
            ]
        return drafts
    check_fields(payload, single_fields, ("to", "message"), "the request body")
    body = _text(payload["message"], "message")
    tag = _optional_text(payload, "tag")
    return [quoting.Draft(to, body, tag) for to in _recipients(payload["to"])]


def _to_alias(payload: dict[str, Any]) -> dict[str, Any]:
    """`to_number` (the pay-per-call reference API's name) is `to` under another name."""
    if "to_number" not in payload or "messages" in payload:
        return payload
    if "to" in payload:
        raise InvalidBody("give the recipients as `to` or as its alias `to_number`, not both")
    return {("to" if name == "to_number" else name): value for name, value in payload.items()}


def _whole_number(value: Any) -> int | None:
    """An integer as JSON means it: `10` or `10.0` (the same number), never `true`."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_options(payload: dict[str, Any], idempotency_key: str | None) -> sending.SendOptions:
    optional_string(payload, "quote_id")  # read by x402 payments; a wrong type is refused
    raw_ttl = payload.get("ttl_s")
    ttl = _whole_number(raw_ttl)
    if raw_ttl is not None and (ttl is None or not 10 <= ttl <= 604_800):
        raise InvalidInput("`ttl_s` must be an integer number of seconds from 10 to 604800")
    sim = payload.get("sim")
    if _whole_number(sim) is not None:
        sim = str(_whole_number(sim))
    return sending.SendOptions(
        region=_region(payload),
        sim=_optional_text({"sim": sim}, "sim", 64),
        ttl_s=ttl,
        idempotency_key=_idempotency_key(idempotency_key),
        callback_url=optional_string(payload, "callback_url"),
    )


class CallbackNeedsPayment(InvalidInput):
    code = "callback_url_not_supported"

    def __init__(self) -> None:
        super().__init__(
            "`callback_url` is for pay-per-call (x402) sends; a project with a key gets its "
            "events through its webhooks (POST /v1/webhooks)",
            param="callback_url",
        )


MAX_IDEMPOTENCY_KEY_CHARS = 255


def _idempotency_key(raw: str | None) -> str | None:
    """The `Idempotency-Key` header as given (blank means none). Never shortened: two keys
    that differ only past some length must not name the same request."""
    key = (raw or "").strip()
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidIdempotencyKey(
            f"`Idempotency-Key` is {len(key)} characters; at most "
            f"{MAX_IDEMPOTENCY_KEY_CHARS} are allowed"
        )
    if not key.isprintable():
        raise InvalidIdempotencyKey("`Idempotency-Key` must not contain control characters")
    return key or None


def _region(payload: dict[str, Any]) -> str | None:
    region = _optional_text(payload, "region", 3)
    if region is not None and not (region.isalpha() and len(region) == 2):
        raise InvalidInput("`region` must be a two-letter ISO country code such as US")
    return region.upper() if region else None


def _runtime(request: Request[Any, Any, Any]) -> tuple[Database, Settings, Hub, PaymentRuntime]:
    """The app's database, settings, hub and payments, for the hottest routes: read from the
    app's state rather than injected, since four injected dependencies cost every request a task
    group (Litestar resolves them concurrently)."""
    state = request.app.state
    return state.db, state.settings, state.hub, state.payments


@post(
    "/v1/messages",
    tags=["messages"],
    status_code=202,
    summary="Send SMS (credits or x402)",
    operation_class=SEND_BODY,
    security=OPTIONAL_KEY_SECURITY,
    responses=error_responses(400, 401, 402, 403, 409, 413, 422),
)
async def send_messages(
    request: Request[Any, Any, Any], data: Any = None
) -> Response[dict[str, Any]]:
    """With a key (scope `messages.send`): charged to the project's credits. Without a key:
    paid per call with x402 (402 with the payment request, then 202 once settled)."""
    db, settings, hub, payments = _runtime(request)
    auth = await optional_auth(request, db)
    drafts = parse_drafts(data)
    options = parse_options(data, request.headers.get("idempotency-key"))
    if auth is None:
        if not payments.enabled:
            raise Unauthorized(
                "an API key is required (Authorization: Bearer sw_live_…; an operator creates "
                "one with `simwire project create`); pay-per-call with x402 is not enabled on "
                "this server (its operator sets SIMWIRE_CHAIN_RPC_URL, SIMWIRE_CHAIN_ID, "
                "SIMWIRE_USDC_ADDRESS, SIMWIRE_PAY_TO and SIMWIRE_RELAYER_KEY to enable it)"
            )
        return await pay_per_call(request, db, settings, hub, payments, drafts, options, data)
    auth.require("messages.send")
    if options.callback_url is not None:
        raise CallbackNeedsPayment()
    try:
        body = await sending.send_with_credits(
            db, hub, settings, auth.project_id, drafts, options, sending.request_fingerprint(data)
        )
    except InsufficientCredits as exc:
        if not payments.enabled:
            raise
        return await topup_offer_response(request, db, settings, hub, payments, auth, exc)
    return Response(
        await with_warnings(body, db, settings, hub, auth.project_id, options), status_code=202
    )


async def with_warnings(
    body: dict[str, Any],
    db: Database,
    settings: Settings,
    hub: Hub,
    project_id: str,
    options: sending.SendOptions,
) -> dict[str, Any]:
    """The body with `warnings` (`no_phone_online` when no eligible SIM is online to take the
    messages now); an empty list when all is well."""
    ttl_s = options.ttl_s or settings.message_ttl_s
    warnings = await devices.phone_warnings(db, hub, project_id, options.sim, ttl_s)
    return {**body, "warnings": warnings}


async def topup_offer_response(
    request: Request[Any, Any, Any],
    db: Database,
    settings: Settings,
    hub: Hub,
    payments: PaymentRuntime,
    auth: AuthContext,
    exc: InsufficientCredits,
) -> Response[dict[str, Any]]:
    """402 `insufficient_credits` that also offers, in x402 terms, a top-up of the shortfall:
    pay it at `POST /v1/credits/topup` (the offer's resource) and send again."""
    shortfall = exc.details["required_atomic"] - exc.details["balance_atomic"]
    gateway = X402Gateway(db, settings, payments, hub)
    offer = (
        await gateway.topup_offer(
            auth.project_id, shortfall, str(request.base_url).rstrip("/") + "/v1/credits/topup"
        )
    ).offer
    body = {"error": exc.code, "message": exc.message, **exc.details, "topup": offer.quote}
    return Response(
        body,
        status_code=402,
        media_type=MediaType.JSON,
        headers={PAYMENT_REQUIRED_HEADER: offer.header_v2},
    )


@post(
    "/v1/quotes",
    tags=["messages"],
    status_code=200,
    summary="Price a message; no key needed",
    operation_class=QUOTE_BODY,
    security=OPTIONAL_KEY_SECURITY,
    responses=error_responses(400, 401, 413),
)
async def create_quote(
    request: Request[Any, Any, Any], data: Any = None, explain: bool = False
) -> dict[str, Any]:
    """Segments, encoding, per-recipient prices and what would be blocked, in a signed quote
    id (nothing is stored). With a key, the project's prices and policy apply."""
    db, settings, hub, payments = _runtime(request)
    auth = await optional_auth(request, db)
    drafts = parse_drafts(data, QUOTE_FIELDS, batch_fields=None)
    prepared, quote = await quoting.create_quote(
        db, settings, auth.project_id if auth else None, drafts, _region(data)
    )
    response = quote_response(prepared, quote, drafts[0].body, explain)
    # Whose phones would send it: the key's project, or (paid per call) the x402 project.
    project_id = auth.project_id if auth else None
    if project_id is None and payments.enabled:
        project_id = await x402_project_id(db, settings)
    if project_id is not None:
        response["warnings"] = await devices.phone_warnings(
            db, hub, project_id, None, settings.message_ttl_s
        )
    return response


def quote_response(
    prepared: quoting.PreparedSend, quote: Any, body: str, explain: bool
) -> dict[str, Any]:
    plan = prepared.items[0].plan if prepared.items else plan_segments(body)
    response: dict[str, Any] = {
        "quote_id": quote.id,
        "encoding": plan.encoding,
        "segment_count": plan.segment_count,
        "characters": plan.characters,
        "septets_or_units": plan.units,
        "ucs2_reasons": list(plan.ucs2_reasons),
        "recipients": [
            {
                "to": item.to,
                "country": item.region,
                "segments": item.plan.segment_count,
                "price": pricing.format_usdc(item.price_atomic),
                "price_atomic": item.price_atomic,
            }
            for item in prepared.items
        ],
        "per_segment_rate": pricing.format_usdc(quote.per_segment_rate_atomic),
        "fees": pricing.format_usdc(prepared.fees_atomic),
        **prepared_terms(prepared),
        "expires_at": quote.expires_at,
        "allowed": prepared.allowed,
        "blocked": [
            {
                **({"to": b.to} if b.to else {"content": True}),
                "error": b.error,
                "message": b.message,
                **({"categories": list(b.categories)} if b.categories else {}),
            }
            for b in prepared.blocked
        ],
    }
    # One copy's segments, also when every recipient is blocked (no line is priced).
    response["segment_count"] = plan.segment_count
    if explain:
        response["parts"] = [
            {"text": text, "units": units}
            for text, units in zip(plan.parts, plan.part_units, strict=True)
        ]
    return response
