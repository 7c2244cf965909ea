"""How a paid call is refused or answered with an offer: the x402 error types (each an HTTP
status by its base class) and the 402 offer (v2 header, v1 body, quote)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.domain.errors import Conflict, InvalidInput, PaymentRequired, SimwireError, Unavailable
from app.payments.errors import ChainUnavailable, PaymentInvalid, SettlementFailed

_MALFORMED = {"malformed_payment", "unsupported_version", "quote_required"}
_CONFLICT = {
    "authorization_used",
    "authorization_released",
    "payment_identifier_reused",
    "quote_used",
    "settlement_in_progress",
    "tx_already_used",
}


class X402Failure(SimwireError):
    """A paid call we refuse: nothing was queued or credited and no money moved (except
    `receipt_timeout`, whose transaction may still be mined: its hash is in the details).

    `code` is the x402 `errorReason`; `x402_version` and `network_name` say how to write the
    failed `PAYMENT-RESPONSE` header (0: the caller sent no x402 header).
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        x402_version: int = 0,
        network_name: str = "",
        **details: Any,
    ) -> None:
        super().__init__(message, errorReason=reason, **details)
        self.code = reason
        self.reason = reason
        self.x402_version = x402_version
        self.network_name = network_name


class PaymentMalformed(X402Failure, InvalidInput):
    """400: the payment header or proof cannot be read."""


class PaymentRefused(X402Failure, PaymentRequired):
    """402: the payment does not pay this quote."""


class PaymentConflict(X402Failure, Conflict):
    """409: the authorization, quote or transaction already paid for something."""


class ChainDown(X402Failure, Unavailable):
    """503: the chain or our relayer cannot settle now; the authorization stays usable."""


def failure_from(
    exc: PaymentInvalid | SettlementFailed | ChainUnavailable, version: int, network_name: str
) -> X402Failure:
    details = {k: v for k, v in exc.details.items() if k != "reason"}
    kind: type[X402Failure]
    if isinstance(exc, ChainUnavailable):
        kind = ChainDown
    elif exc.reason in _MALFORMED:
        kind = PaymentMalformed
    elif exc.reason in _CONFLICT:
        kind = PaymentConflict
    else:
        kind = PaymentRefused
    return kind(exc.reason, exc.message, x402_version=version, network_name=network_name, **details)


@dataclass(frozen=True)
class PaymentOffer:
    """What a 402 carries: the v2 `PAYMENT-REQUIRED` header and the v1 JSON body (which also
    holds the `quote` object)."""

    header_v2: str
    body_v1: dict[str, Any]
    quote: dict[str, Any]
    payment_required: dict[str, Any] | None = None
    """The v2 `PaymentRequired` as JSON (what the header encodes; an MCP tool's 402 result)."""


class X402PaymentRequired(PaymentRequired):
    """402 with an x402 offer for a stored quote: pay it and call again."""

    code = "payment_required"

    def __init__(self, offer: PaymentOffer, message: str) -> None:
        super().__init__(message, quote=offer.quote)
        self.offer = offer
