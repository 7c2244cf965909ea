"""What every step of a paid call shares: header names, purposes, payment statuses, the
caller's presented payment and the answer written back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from app.db.models import Payment, StoredQuote
from app.domain import pricing
from app.payments import wire
from app.payments.networks import NetworkConfig

PAYMENT_TX_HEADER = "X-Payment-Tx"
PAYMENT_TX_SIGNATURE_HEADER = "X-Payment-Tx-Signature"
QUOTE_ID_HEADER = "X-Quote-Id"
PAYER_HEADER = "X-Payer"

SEND = "send"
TOPUP = "topup"

# A payment is `reserved` from the moment its authorization is ours until it is `settled`
# (money moved, order fulfilled) or released (the row is deleted: nothing moved).
# `receipt_timeout` and `settlement_unknown` are reservations whose settlement was sent but
# not seen to finish; the reconciliation sweep resolves all three from the chain.
RESERVED = "reserved"
RECEIPT_TIMEOUT = "receipt_timeout"
SETTLEMENT_UNKNOWN = "settlement_unknown"
SETTLED = "settled"
UNRESOLVED = (RESERVED, RECEIPT_TIMEOUT, SETTLEMENT_UNKNOWN)


@dataclass(frozen=True)
class PresentedPayment:
    """What the caller sent along: an x402 header (`PAYMENT-SIGNATURE` is v2, `X-PAYMENT` v1),
    or the hash of a plain USDC transfer with its sender's signature over the quote id, and
    the quote it pays."""

    header: str | None = None
    header_version: int = 0
    tx_hash: str | None = None
    tx_signature: str | None = None
    quote_id: str | None = None
    payer_hint: str | None = None

    @property
    def present(self) -> bool:
        return bool(self.header or self.tx_hash)


@dataclass(frozen=True)
class PaidResult:
    """The answer to a paid call: status, body and the settlement header to send with it."""

    status_code: int
    body: dict[str, Any]
    response_header_name: str
    response_header: str


@dataclass(frozen=True)
class Outcome:
    """What fulfilling a payment answered; stored on the payment so a retry of the same
    payment gets exactly this back."""

    status_code: int
    body: dict[str, Any]

    def stored(self) -> dict[str, Any]:
        return {"status_code": self.status_code, "body": self.body}

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> Outcome:
        return cls(int(stored["status_code"]), dict(stored["body"]))


def payment_out(payment: Payment, quote: StoredQuote, network: NetworkConfig) -> dict[str, Any]:
    """The `payment` object of a paid call's answer."""
    return {
        "id": payment.id,
        "quote_id": quote.id,
        "network": network.network,
        "payer": to_checksum_address(payment.payer),
        "transaction": payment.tx_hash,
        "amount": pricing.format_usdc(payment.amount_atomic),
        "amount_atomic": payment.amount_atomic,
        "credit_applied_atomic": quote.credit_atomic,
    }


def paid_result(payment: Payment, outcome: Outcome, network: NetworkConfig) -> PaidResult:
    """The outcome with the settlement header, in the x402 version the payment came in."""
    version = payment.header_version or 2
    network_name = network.v1_name if version == 1 and network.v1_name else network.network
    header = wire.payment_response_header(
        network=network_name,
        transaction=payment.tx_hash or "",
        payer=to_checksum_address(payment.payer),
        amount_atomic=payment.amount_atomic,
    )
    return PaidResult(
        outcome.status_code, outcome.body, wire.payment_response_header_name(version), header
    )
