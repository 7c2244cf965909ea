"""Ledger rules: which kinds of entry exist and the sign each one carries."""

from __future__ import annotations

GRANT = "grant"
TOPUP = "topup"
CHARGE = "charge"
REFUND = "refund"

_SIGN = {GRANT: 1, TOPUP: 1, REFUND: 1, CHARGE: -1}
KINDS = tuple(_SIGN)


def signed_amount(kind: str, amount_atomic: int) -> int:
    """The balance change of an entry: positive for grant/topup/refund, negative for charge.
    `amount_atomic` is the magnitude in USDC atomic units and must be positive."""
    if kind not in _SIGN:
        raise ValueError(f"unknown ledger kind {kind!r}")
    if not isinstance(amount_atomic, int) or isinstance(amount_atomic, bool) or amount_atomic <= 0:
        raise ValueError("a ledger amount is a positive int of USDC atomic units")
    return _SIGN[kind] * amount_atomic
