"""`send_sms` paid per call over MCP, as the `x402.mcp` module defines it (the payment required
in the tool result, the payment in `_meta["x402/payment"]`, the settlement in
`_meta["x402/payment-response"]`), run by `x402.mcp.server_async.create_payment_wrapper`.

The wrapper's resource server here is `PaidMcpSend`: its `verify_payment` hands the payment,
as the v2 header it would be over HTTP, to `X402Gateway.send` — the same screening, quote,
nonce reservation, crash-safe settlement, fulfilment and retry answers as
`POST /v1/messages` — and its `settle_payment` reports the settlement that path recorded.
Nothing is verified or settled anywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from x402.http import encode_payment_signature_header
from x402.mcp.server_async import PaymentWrapperConfig, create_payment_wrapper
from x402.mcp.types import MCPToolContext, MCPToolResult
from x402.schemas import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
    VerifyResponse,
)

from app.payments.errors import PaymentInvalid
from app.services import quoting, sending
from app.services.x402.common import PaidResult, PresentedPayment
from app.services.x402.gateway import X402Gateway
from app.services.x402_errors import X402Failure, X402PaymentRequired, failure_from

PAYMENT_META_KEY = "x402/payment"
TOOL_NAME = "send_sms"


class PaidMcpSend:
    """The x402 resource server of one paid `send_sms` call (see the module docstring)."""

    def __init__(
        self,
        gateway: X402Gateway,
        drafts: Sequence[quoting.Draft],
        options: sending.SendOptions,
        resource_url: str,
        offer: dict[str, Any] | None,
    ) -> None:
        self.gateway = gateway
        self.drafts = drafts
        self.options = options
        self.resource_url = resource_url
        self.offer = offer
        self.result: PaidResult | None = None

    async def create_payment_required_response(
        self,
        accepts: list[PaymentRequirements],
        resource_info: Any = None,
        error: str | None = None,
        extensions: dict[str, Any] | None = None,
        transport_context: Any = None,
        payment_payload: Any = None,
    ) -> PaymentRequired:
        if self.offer is not None:
            required = PaymentRequired.model_validate(self.offer)
            if error:
                required.error = error
            return required
        return PaymentRequired(
            x402_version=2,
            error=error,
            resource=ResourceInfo(url=self.resource_url, mime_type="application/json"),
            accepts=accepts,
            extensions=extensions,
        )

    def find_matching_requirements(
        self, accepts: list[PaymentRequirements], payload: PaymentPayload
    ) -> PaymentRequirements | None:
        """The offer the payment says it accepted, if it is on our network, asset and pay-to
        (the gateway then checks it against the stored quote)."""
        network = self.gateway.network
        accepted = payload.accepted
        if (
            accepted is None
            or accepted.network != network.network
            or accepted.asset.lower() != network.usdc_address.lower()
            or accepted.pay_to.lower() != network.pay_to.lower()
        ):
            return None
        return accepted

    async def verify_payment(
        self, payload: PaymentPayload, requirements: PaymentRequirements, **_: Any
    ) -> VerifyResponse:
        header = encode_payment_signature_header(payload)
        presented = PresentedPayment(header=header, header_version=2)
        try:
            self.result = await self.gateway.send(
                self.drafts, self.options, presented, self.resource_url
            )
        except X402Failure as exc:
            return VerifyResponse(
                is_valid=False, invalid_reason=exc.reason, invalid_message=exc.message
            )
        except PaymentInvalid as exc:
            failure = failure_from(exc, 2, self.gateway.network.network)
            return VerifyResponse(
                is_valid=False, invalid_reason=failure.reason, invalid_message=failure.message
            )
        payment = self.result.body.get("payment") or {}
        return VerifyResponse(is_valid=True, payer=payment.get("payer"))

    async def settle_payment(
        self, payload: PaymentPayload, requirements: PaymentRequirements, **_: Any
    ) -> SettleResponse:
        assert self.result is not None
        payment = self.result.body.get("payment") or {}
        return SettleResponse(
            success=True,
            transaction=payment.get("transaction") or "",
            network=self.gateway.network.network,
            payer=payment.get("payer"),
            amount=str(payment.get("amount_atomic", "")),
        )

    def create_payment_cancellation_dispatcher(self, *_: Any) -> None:
        # Money moves only inside `verify_payment` (the gateway's settle); after it the
        # handler just writes the stored outcome, so there is nothing to cancel.
        return None


async def paid_send(
    gateway: X402Gateway,
    drafts: Sequence[quoting.Draft],
    options: sending.SendOptions,
    arguments: dict[str, Any],
    meta: dict[str, Any],
    resource_url: str,
) -> MCPToolResult:
    """One anonymous `send_sms`: screening first (a blocked send raises, nothing offered);
    without `_meta["x402/payment"]` the result is the 402 `PaymentRequired`; with one, the
    202 body once settled, the settlement in `_meta["x402/payment-response"]`."""
    offer: dict[str, Any] | None = None
    payment = meta.get(PAYMENT_META_KEY)
    if payment is None:
        try:
            await gateway.send(drafts, options, PresentedPayment(), resource_url)
        except X402PaymentRequired as exc:
            offer = exc.offer.payment_required
        assert offer is not None, "an unpaid send always raises its offer"
        accepts = [PaymentRequirements.model_validate(a) for a in offer["accepts"]]
    else:
        accepted = _accepted_of(payment)
        if accepted is None:
            return _refusal("malformed_payment", '`_meta["x402/payment"]` is not a payment')
        accepts = [accepted]
    server = PaidMcpSend(gateway, drafts, options, resource_url, offer)
    wrapper = create_payment_wrapper(
        server,  # type: ignore[arg-type]
        PaymentWrapperConfig(accepts=accepts, extensions=(offer or {}).get("extensions")),
    )

    async def handler(args: dict[str, Any], context: MCPToolContext) -> MCPToolResult:
        assert server.result is not None
        body = server.result.body
        return MCPToolResult(
            content=[{"type": "text", "text": json.dumps(body)}],
            structured_content=body,
            is_error=server.result.status_code >= 400,
        )

    wrapped: Any = wrapper(handler)
    result: MCPToolResult = await wrapped(arguments, {"_meta": meta, "toolName": TOOL_NAME})
    return result


def _accepted_of(payment: Any) -> PaymentRequirements | None:
    try:
        payload = (
            payment
            if isinstance(payment, PaymentPayload)
            else PaymentPayload.model_validate(
                json.loads(payment) if isinstance(payment, str) else payment
            )
        )
    except (ValueError, TypeError):
        return None
    return payload.accepted


def _refusal(reason: str, message: str) -> MCPToolResult:
    body = {"error": reason, "message": message}
    return MCPToolResult(
        content=[{"type": "text", "text": json.dumps(body)}],
        structured_content=body,
        is_error=True,
    )
