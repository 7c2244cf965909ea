"""Destinations that cost the payer or the recipient more than an SMS should: premium-rate,
shared-cost and universal access numbers, as phonenumbers classifies them. A send to one is
refused unless the project's policy allows them."""

from __future__ import annotations

from phonenumbers import PhoneNumberType

from app.domain.numbers import Destination

HIGH_COST_TYPES = {
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.UAN: "uan",
}


def high_cost_kind(destination: Destination) -> str | None:
    """`premium_rate`, `shared_cost` or `uan` for such a destination, else None: by the type
    found while the number was checked (`normalize_destination`), with no parse of its own."""
    return HIGH_COST_TYPES.get(destination.number_type)
