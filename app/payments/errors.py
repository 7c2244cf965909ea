"""Payment errors: each carries a snake_case `reason` detail next to its stable `code`."""

from __future__ import annotations

from typing import Any

from app.domain.errors import SimwireError, Unavailable


class PaymentInvalid(SimwireError):
    """A payment (header, authorization or transfer proof) that we refuse; nothing moved."""

    code = "payment_invalid"

    def __init__(self, reason: str, message: str | None = None, **details: Any) -> None:
        super().__init__(message or f"payment is invalid: {reason}", reason=reason, **details)
        self.reason = reason


class SettlementFailed(SimwireError):
    """The chain refused the settlement (a revert); the payer was not charged by this call."""

    code = "settlement_failed"

    def __init__(
        self,
        reason: str,
        message: str | None = None,
        tx_hash: str | None = None,
        **details: Any,
    ) -> None:
        if tx_hash is not None:
            details["tx_hash"] = tx_hash
        super().__init__(message or f"settlement failed: {reason}", reason=reason, **details)
        self.reason = reason
        self.tx_hash = tx_hash


class ChainUnavailable(Unavailable):
    """The node cannot be reached, or our relayer cannot send (out of gas); try again later.

    Raised before the authorization is used on chain, except `receipt_timeout`, where the
    transaction was sent (its hash is in `tx_hash`) and may still be mined.
    """

    code = "chain_unavailable"

    def __init__(
        self,
        reason: str = "rpc_unavailable",
        message: str | None = None,
        tx_hash: str | None = None,
        **details: Any,
    ) -> None:
        if tx_hash is not None:
            details["tx_hash"] = tx_hash
        super().__init__(message or f"chain unavailable: {reason}", reason=reason, **details)
        self.reason = reason
        self.tx_hash = tx_hash
