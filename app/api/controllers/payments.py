"""x402 over HTTP: the anonymous paid send of `POST /v1/messages` and `POST /v1/credits/topup`.

Parses payment headers into a `PresentedPayment`, calls `app.services.x402`, and writes its
offers (402 with `PAYMENT-REQUIRED` and the v1 body) and settlements (`PAYMENT-RESPONSE` /
`X-PAYMENT-RESPONSE`) back out.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from litestar import MediaType, Request, Response, post
from litestar.di import Provide

from app.api.auth import require_scope
from app.api.errors import status_for
from app.api.fields import check_fields, optional_string
from app.api.openapi import KEY_SECURITY, TOPUP_BODY, TopupIn, error_responses
from app.db.engine import Database
from app.domain import pricing
from app.domain.errors import InvalidBody, InvalidInput
from app.hub.hub import Hub
from app.payments import wire
from app.services import devices, quoting, sending, x402
from app.services.projects import AuthContext
from app.services.x402_errors import X402Failure, X402PaymentRequired
from app.services.x402_runtime import PaymentRuntime, x402_project_id
from app.settings import Settings

TOPUP_FIELDS = frozenset(TopupIn.__struct_fields__)


def presented_payment(request: Request[Any, Any, Any], data: Any) -> x402.PresentedPayment:
    """The x402 header (v2 wins over v1), or an `X-Payment-Tx` hash with its sender's
    `X-Payment-Tx-Signature`, and the quote it pays (`X-Quote-Id`, else `quote_id` in the
    body)."""
    headers = request.headers
    header, version = headers.get(wire.PAYMENT_SIGNATURE_HEADER), 2
    if not header:
        header, version = headers.get(wire.X_PAYMENT_HEADER), 1
    quote_id = headers.get(x402.QUOTE_ID_HEADER)
    if not quote_id and isinstance(data, dict):
        quote_id = optional_string(data, "quote_id")
    return x402.PresentedPayment(
        header=header or None,
        header_version=version if header else 0,
        tx_hash=headers.get(x402.PAYMENT_TX_HEADER) or None,
        tx_signature=headers.get(x402.PAYMENT_TX_SIGNATURE_HEADER) or None,
        quote_id=(quote_id or "").strip() or None,
        payer_hint=headers.get(x402.PAYER_HEADER),
    )


def offer_response(exc: X402PaymentRequired) -> Response[dict[str, Any]]:
    return Response(
        exc.offer.body_v1,
        status_code=402,
        media_type=MediaType.JSON,
        headers={wire.PAYMENT_REQUIRED_HEADER: exc.offer.header_v2},
    )


def failure_response(exc: X402Failure) -> Response[dict[str, Any]]:
    """The error body (`error` is the x402 `errorReason`) and, for an x402 caller, the failed
    settlement header its client reads."""
    headers = {}
    if exc.x402_version:
        headers[wire.payment_response_header_name(exc.x402_version)] = wire.payment_response_header(
            network=exc.network_name, success=False, error_reason=exc.reason
        )
    body = {"error": exc.code, "message": exc.message, **exc.details}
    if exc.x402_version:
        body["x402Version"] = exc.x402_version
    return Response(
        body, status_code=status_for(exc), media_type=MediaType.JSON, headers=headers or None
    )


def _paid_response(result: x402.PaidResult) -> Response[dict[str, Any]]:
    return Response(
        result.body,
        status_code=result.status_code,
        media_type=MediaType.JSON,
        headers={result.response_header_name: result.response_header},
    )


async def pay_per_call(
    request: Request[Any, Any, Any],
    db: Database,
    settings: Settings,
    hub: Hub,
    payments: PaymentRuntime,
    drafts: list[quoting.Draft],
    options: sending.SendOptions,
    data: Any,
) -> Response[dict[str, Any]]:
    """The anonymous branch of `POST /v1/messages`: 402 with an offer, or 202 once paid."""
    gateway = x402.X402Gateway(db, settings, payments, hub)
    try:
        result = await gateway.send(
            drafts, options, presented_payment(request, data), str(request.url)
        )
    except X402PaymentRequired as exc:
        return offer_response(exc)
    except X402Failure as exc:
        return failure_response(exc)
    if result.status_code == 202:
        project_id = await x402_project_id(db, settings)
        ttl_s = options.ttl_s or settings.message_ttl_s
        warnings = await devices.phone_warnings(db, hub, project_id, options.sim, ttl_s)
        result = replace(result, body={**result.body, "warnings": warnings})
    return _paid_response(result)


@post(
    "/v1/credits/topup",
    tags=["credits"],
    status_code=200,
    summary="Top up the project's credits with USDC (x402 or a plain transfer)",
    dependencies={"auth": Provide(require_scope(None))},
    operation_class=TOPUP_BODY,
    security=KEY_SECURITY,
    responses=error_responses(400, 401, 402, 409, 413, 422),
)
async def topup_credits(
    request: Request[Any, Any, Any],
    db: Database,
    settings: Settings,
    hub: Hub,
    payments: PaymentRuntime,
    auth: AuthContext,
    data: Any = None,
) -> Response[dict[str, Any]]:
    """`{amount: "5.00"}` (USDC). Without a payment: 402 for that amount. Paid with
    `PAYMENT-SIGNATURE` / `X-PAYMENT`, or `X-Payment-Tx` with the quote id: 200 with the new
    balance, after a `topup` ledger row carrying the transaction hash."""
    if not payments.enabled:
        raise InvalidInput("top-ups need x402, which is not enabled on this server")
    if not isinstance(data, dict):
        raise InvalidBody(
            'give `{"amount": "<USDC, e.g. 5.00>"}` as a decimal string', missing_fields=["amount"]
        )
    check_fields(data, TOPUP_FIELDS, ("amount",), "the request body")
    optional_string(data, "quote_id")
    if not isinstance(data.get("amount"), str):
        raise InvalidBody('give `{"amount": "<USDC, e.g. 5.00>"}` as a decimal string')
    try:
        amount_atomic = pricing.parse_usdc(data["amount"])
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    gateway = x402.X402Gateway(db, settings, payments, hub)
    try:
        result = await gateway.topup(
            auth.project_id, amount_atomic, presented_payment(request, data), str(request.url)
        )
    except X402PaymentRequired as exc:
        return offer_response(exc)
    except X402Failure as exc:
        return failure_response(exc)
    return _paid_response(result)
