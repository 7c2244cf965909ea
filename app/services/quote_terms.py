"""The price terms every surface states the same way (`/v1/quotes`, the 402 `quote`, the 202
body, MCP): what one copy costs per segment, how many copies, and the fees by their names.

For one body sent to recipients priced alike (every quote, every MCP send, every REST send with
one `message`), `messaging_fee = segment_count × recipient_count × per_message_rate` and
`total = messaging_fee + recipient_fee + request_fee`, in USDC decimals with `_atomic` twins.
A `messages` batch mixing bodies or countries is priced line by line: `messaging_fee` is then
the sum of its lines, `segment_count` and `per_message_rate` the largest ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from app.domain import pricing
from app.services import quoting


@dataclass(frozen=True)
class PricedLine:
    """One recipient's copy: its segments, the rate of one segment, and what it costs in all
    (`price_atomic = segments × rate_atomic + the per-recipient fee`)."""

    segments: int
    rate_atomic: int
    price_atomic: int


def lines_of(prepared: quoting.PreparedSend) -> list[PricedLine]:
    return [
        PricedLine(item.plan.segment_count, item.rate_atomic, item.price_atomic)
        for item in prepared.items
    ]


def quote_terms(lines: Sequence[PricedLine], request_fee_atomic: int) -> dict[str, Any]:
    """The terms of a request made of `lines` plus a once-per-request fee."""
    messaging = sum(line.segments * line.rate_atomic for line in lines)
    recipient_fee = sum(line.price_atomic - line.segments * line.rate_atomic for line in lines)
    total = messaging + recipient_fee + request_fee_atomic
    rate = max((line.rate_atomic for line in lines), default=0)
    return {
        "segment_count": max((line.segments for line in lines), default=0),
        "recipient_count": len(lines),
        **_money("per_message_rate", rate),
        **_money("messaging_fee", messaging),
        **_money("recipient_fee", recipient_fee),
        **_money("request_fee", request_fee_atomic),
        **_money("total", total),
        "currency": "USDC",
    }


def prepared_terms(prepared: quoting.PreparedSend) -> dict[str, Any]:
    return quote_terms(lines_of(prepared), prepared.fees_atomic)


def order_lines(items: Iterable[dict[str, Any]]) -> list[PricedLine]:
    """Lines from a stored x402 order's items (each with `segment_count`, `price_atomic` and,
    since the order records it, `rate_atomic`)."""
    lines = []
    for item in items:
        segments = int(item["segment_count"])
        price = int(item["price_atomic"])
        rate = int(item.get("rate_atomic", price // segments if segments else 0))
        lines.append(PricedLine(segments, rate, price))
    return lines


def _money(name: str, atomic: int) -> dict[str, Any]:
    return {name: pricing.format_usdc(atomic), f"{name}_atomic": atomic}
