"""Paying per call with x402: the offer, collecting an authorization or a plain transfer,
settling it crash-safely, and reconciling what a crash left behind.

Modules, in the order a payment walks through them: `offers` (402), `quotes` (which quote a
payment pays), `gateway` (the use cases), `settlement` (reserve → settle → record, or
release), `orders` (what a settled payment buys), `reconcile` (the sweep).
"""

from app.services.x402.common import (
    PAYER_HEADER,
    PAYMENT_TX_HEADER,
    PAYMENT_TX_SIGNATURE_HEADER,
    QUOTE_ID_HEADER,
    PaidResult,
    PresentedPayment,
)
from app.services.x402.gateway import X402Gateway
from app.services.x402.reconcile import (
    reconcile_payments,
    reconciliation_running,
    run_reconciliation,
)
from app.services.x402.settlement import Settlements

__all__ = [
    "PAYER_HEADER",
    "PAYMENT_TX_HEADER",
    "PAYMENT_TX_SIGNATURE_HEADER",
    "QUOTE_ID_HEADER",
    "PaidResult",
    "PresentedPayment",
    "Settlements",
    "X402Gateway",
    "reconcile_payments",
    "reconciliation_running",
    "run_reconciliation",
]
