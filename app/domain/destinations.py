"""Destinations that cost the payer or the recipient more than an SMS should: premium-rate,
shared-cost and universal access numbers, as phonenumbers classifies them. A send to one is
refused unless the project's policy allows them."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

HIGH_COST_TYPES = {
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.UAN: "uan",
}


@lru_cache(maxsize=4096)
def high_cost_kind(e164: str) -> str | None:
    """`premium_rate`, `shared_cost` or `uan` for such a number (E.164), else None."""
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return None
    return high_cost_kind_of_type(phonenumbers.number_type(number))


def high_cost_kind_of_type(number_type: int) -> str | None:
    """The kind `high_cost_kind` names, from phonenumbers' `PhoneNumberType` of a number."""
    return HIGH_COST_TYPES.get(number_type)
