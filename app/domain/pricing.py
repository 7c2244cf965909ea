"""Prices and quotes in USDC atomic units (integers, 6 decimals); floats never touch money."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from app.domain.errors import InvalidInput
from app.domain.numbers import Destination
from app.domain.segments import SegmentPlan

USDC_DECIMALS = 6
ATOMIC_PER_USDC = 10**USDC_DECIMALS

DEFAULT_RATE_ATOMIC = 35_000  # 0.035 USDC per segment

_USDC_TEXT_RE = re.compile(r"(\d+)(?:\.(\d{1,6}))?", re.ASCII)


def _check_atomic(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int of USDC atomic units, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Per-segment rates: `country_rates_atomic` maps ISO regions ("US", "GB") to a rate that
    overrides `default_rate_atomic`. `fee_per_request_atomic` is charged once per call,
    `fee_per_message_atomic` once per recipient. All amounts are USDC atomic units."""

    default_rate_atomic: int = DEFAULT_RATE_ATOMIC
    country_rates_atomic: Mapping[str, int] = field(default_factory=dict)
    fee_per_request_atomic: int = 0
    fee_per_message_atomic: int = 0

    def __post_init__(self) -> None:
        _check_atomic("default_rate_atomic", self.default_rate_atomic)
        _check_atomic("fee_per_request_atomic", self.fee_per_request_atomic)
        _check_atomic("fee_per_message_atomic", self.fee_per_message_atomic)
        rates = {
            region.strip().upper(): _check_atomic(f"rate for {region!r}", rate)
            for region, rate in self.country_rates_atomic.items()
        }
        # A read-only copy: a table handed around cannot be changed behind a quote's back.
        object.__setattr__(self, "country_rates_atomic", MappingProxyType(rates))

    def rate_for(self, region: str) -> int:
        """Per-segment rate for destinations in `region` (ISO code, any case)."""
        return self.country_rates_atomic.get(region.upper(), self.default_rate_atomic)


@dataclass(frozen=True, slots=True)
class PricedRecipient:
    """One recipient's line: `price_atomic = segments * rate_atomic + fee_per_message_atomic`."""

    to: str
    country: str
    segments: int
    rate_atomic: int
    price_atomic: int


@dataclass(frozen=True, slots=True)
class Pricing:
    """What a body costs for a set of recipients: `total_atomic` is the sum of the lines' prices
    plus `fees_atomic`, the per-request fee."""

    encoding: str
    segment_count: int
    lines: tuple[PricedRecipient, ...]
    fees_atomic: int
    total_atomic: int


def price_message(
    plan: SegmentPlan, destinations: Sequence[Destination], table: PriceTable
) -> Pricing:
    """Price one body (already planned) sent to each of `destinations`.

    Raises `InvalidInput` when there is no destination.
    """
    if not destinations:
        raise InvalidInput("at least one recipient is required")
    segments = plan.segment_count
    fee_per_message = table.fee_per_message_atomic
    lines = []
    for destination in destinations:
        rate = table.rate_for(destination.region)
        lines.append(
            PricedRecipient(
                to=destination.e164,
                country=destination.region,
                segments=segments,
                rate_atomic=rate,
                price_atomic=segments * rate + fee_per_message,
            )
        )
    fees = table.fee_per_request_atomic
    total = sum(line.price_atomic for line in lines) + fees
    return Pricing(plan.encoding, segments, tuple(lines), fees, total)


def format_usdc(atomic: int) -> str:
    """USDC atomic units as a plain decimal string: 35000 → "0.035", 1_000_000 → "1"."""
    if not isinstance(atomic, int) or isinstance(atomic, bool):
        raise TypeError(f"atomic amount must be an int, not {type(atomic).__name__}")
    sign = "-" if atomic < 0 else ""
    whole, fraction = divmod(abs(atomic), ATOMIC_PER_USDC)
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:06d}".rstrip("0")


def parse_usdc(text: str) -> int:
    """A decimal USDC amount ("0.035", "1", "12.5") as atomic units.

    Raises `ValueError` for negatives, more than 6 decimals, exponents or anything else that is
    not a plain non-negative decimal.
    """
    if not isinstance(text, str):
        raise ValueError(f"USDC amount must be a decimal string, not {type(text).__name__}")
    match = _USDC_TEXT_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a non-negative USDC amount with at most {USDC_DECIMALS} decimals"
        )
    whole, fraction = match.group(1), match.group(2) or ""
    return int(whole) * ATOMIC_PER_USDC + int(fraction.ljust(USDC_DECIMALS, "0"))


def body_sha256(body: str) -> str:
    """Hex SHA-256 of the UTF-8 body: what a quote remembers instead of the text."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Quote:
    """Exactly what was priced, to be paid and used once.

    `per_segment_rate_atomic` is the rate shared by every recipient, or the highest one when
    their countries are priced differently (the exact breakdown is in `lines`). `fees_atomic` is
    the per-request fee; `total_atomic` is the amount to pay. `asset`, `network` and `pay_to`
    are filled in when the quote is offered for on-chain payment.
    """

    quote_id: str
    body_sha256: str
    message_length: int
    recipients: tuple[str, ...]
    encoding: str
    segment_count: int
    per_segment_rate_atomic: int
    fees_atomic: int
    total_atomic: int
    lines: tuple[PricedRecipient, ...]
    created_at: datetime
    expires_at: datetime
    asset: str | None = None
    network: str | None = None
    pay_to: str | None = None

    @property
    def recipient_count(self) -> int:
        return len(self.recipients)

    def is_expired(self, now: datetime) -> bool:
        """True from `expires_at` on."""
        return now >= self.expires_at

    def covers(self, body: str, recipients: Sequence[str]) -> bool:
        """True when this quote priced exactly `body` for exactly `recipients` (E.164, in order)."""
        return body_sha256(body) == self.body_sha256 and tuple(recipients) == self.recipients


def build_quote(
    *,
    quote_id: str,
    body: str,
    plan: SegmentPlan,
    pricing: Pricing,
    now: datetime,
    ttl_s: int,
    asset: str | None = None,
    network: str | None = None,
    pay_to: str | None = None,
) -> Quote:
    """A `Quote` for `body` as planned and priced, valid from `now` for `ttl_s` seconds.

    The caller supplies the id and the clock; this function reads neither.
    """
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    if plan.characters != len(body):
        raise ValueError("plan does not belong to this body")
    rates = {line.rate_atomic for line in pricing.lines}
    return Quote(
        quote_id=quote_id,
        body_sha256=body_sha256(body),
        message_length=plan.characters,
        recipients=tuple(line.to for line in pricing.lines),
        encoding=plan.encoding,
        segment_count=plan.segment_count,
        per_segment_rate_atomic=max(rates),
        fees_atomic=pricing.fees_atomic,
        total_atomic=pricing.total_atomic,
        lines=pricing.lines,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
        asset=asset,
        network=network,
        pay_to=pay_to,
    )
