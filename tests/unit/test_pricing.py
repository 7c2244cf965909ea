"""Prices, USDC amounts and quotes, all in integer atomic units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import InvalidInput
from app.domain.numbers import Destination
from app.domain.pricing import (
    PricedRecipient,
    PriceTable,
    body_sha256,
    build_quote,
    format_usdc,
    parse_usdc,
    price_message,
)
from app.domain.segments import plan_segments

US = Destination("+14155552671", "US")
GB = Destination("+447400123456", "GB")
FR = Destination("+33612345678", "FR")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_default_rate_is_0_035_usdc_per_segment() -> None:
    table = PriceTable()
    assert table.rate_for("US") == 35_000
    assert format_usdc(table.rate_for("ZZ")) == "0.035"


def test_country_rates_override_the_default_in_any_case() -> None:
    table = PriceTable(country_rates_atomic={"gb": 50_000, "FR": 42_000})
    assert table.rate_for("GB") == 50_000
    assert table.rate_for("gb") == 50_000
    assert table.rate_for("FR") == 42_000
    assert table.rate_for("US") == 35_000


def test_price_table_is_read_only_and_copies_its_rates() -> None:
    rates = {"GB": 50_000}
    table = PriceTable(country_rates_atomic=rates)
    rates["GB"] = 1
    assert table.rate_for("GB") == 50_000
    with pytest.raises(TypeError):
        table.country_rates_atomic["GB"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default_rate_atomic": 0.035},
        {"default_rate_atomic": -1},
        {"fee_per_request_atomic": True},
        {"country_rates_atomic": {"GB": 1.5}},
        {"fee_per_message_atomic": -5},
    ],
)
def test_price_table_rejects_floats_and_negative_amounts(kwargs: dict[str, object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        PriceTable(**kwargs)  # type: ignore[arg-type]


def test_price_is_segments_times_rate_per_recipient_plus_fees() -> None:
    plan = plan_segments("a" * 161)  # two segments
    table = PriceTable(
        country_rates_atomic={"GB": 50_000},
        fee_per_request_atomic=10_000,
        fee_per_message_atomic=1_000,
    )
    pricing = price_message(plan, [US, GB, FR], table)
    assert pricing.segment_count == 2
    assert pricing.encoding == "GSM-7"
    assert pricing.lines == (
        PricedRecipient("+14155552671", "US", 2, 35_000, 71_000),
        PricedRecipient("+447400123456", "GB", 2, 50_000, 101_000),
        PricedRecipient("+33612345678", "FR", 2, 35_000, 71_000),
    )
    assert pricing.fees_atomic == 10_000
    assert pricing.total_atomic == 71_000 + 101_000 + 71_000 + 10_000
    assert format_usdc(pricing.total_atomic) == "0.253"


def test_single_segment_single_recipient_costs_the_rate() -> None:
    pricing = price_message(plan_segments("hello"), [US], PriceTable())
    assert pricing.total_atomic == 35_000


def test_pricing_needs_a_recipient() -> None:
    with pytest.raises(InvalidInput):
        price_message(plan_segments("hello"), [], PriceTable())


@pytest.mark.parametrize(
    ("atomic", "text"),
    [
        (0, "0"),
        (1, "0.000001"),
        (10, "0.00001"),
        (35_000, "0.035"),
        (500_000, "0.5"),
        (1_000_000, "1"),
        (1_000_001, "1.000001"),
        (12_345_678_900, "12345.6789"),
        (-35_000, "-0.035"),
    ],
)
def test_format_usdc(atomic: int, text: str) -> None:
    assert format_usdc(atomic) == text


def test_format_usdc_refuses_floats() -> None:
    with pytest.raises(TypeError):
        format_usdc(0.035)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "atomic"),
    [
        ("0", 0),
        ("0.035", 35_000),
        ("1", 1_000_000),
        ("1.5", 1_500_000),
        ("0.000001", 1),
        ("12345.678900", 12_345_678_900),
        (" 2.25 ", 2_250_000),
        ("007", 7_000_000),
    ],
)
def test_parse_usdc(text: str, atomic: int) -> None:
    assert parse_usdc(text) == atomic


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "-1",
        "-0.5",
        "+1",
        "0.0000001",
        "1.0000000",
        "1e3",
        "1,5",
        ".5",
        "1.",
        "abc",
        "NaN",
        "inf",
        "1 000",
        "\u0661",
    ],
)
def test_parse_usdc_rejects_anything_but_plain_decimals(text: str) -> None:
    with pytest.raises(ValueError):
        parse_usdc(text)


@given(st.integers(min_value=0, max_value=10**18))
def test_format_and_parse_round_trip(atomic: int) -> None:
    assert parse_usdc(format_usdc(atomic)) == atomic


def test_quote_records_what_was_priced() -> None:
    body = "Your code is 123456 €"
    plan = plan_segments(body)
    pricing = price_message(plan, [US, GB], PriceTable(fee_per_request_atomic=5_000))
    quote = build_quote(
        quote_id="quo_abc",
        body=body,
        plan=plan,
        pricing=pricing,
        now=NOW,
        ttl_s=300,
        asset="0xUSDC",
        network="eip155:8453",
        pay_to="0xPayTo",
    )
    assert quote.quote_id == "quo_abc"
    assert quote.body_sha256 == body_sha256(body)
    assert len(quote.body_sha256) == 64
    assert quote.message_length == len(body)
    assert quote.recipients == ("+14155552671", "+447400123456")
    assert quote.recipient_count == 2
    assert (quote.encoding, quote.segment_count) == ("GSM-7", 1)
    assert quote.per_segment_rate_atomic == 35_000
    assert quote.fees_atomic == 5_000
    assert quote.total_atomic == 75_000
    assert (quote.asset, quote.network, quote.pay_to) == ("0xUSDC", "eip155:8453", "0xPayTo")
    assert quote.created_at == NOW
    assert quote.expires_at == NOW + timedelta(seconds=300)
    assert quote.covers(body, ["+14155552671", "+447400123456"])
    assert not quote.covers(body + "!", ["+14155552671", "+447400123456"])
    assert not quote.covers(body, ["+14155552671"])


def test_quote_without_payment_details_and_mixed_rates() -> None:
    body = "hi"
    plan = plan_segments(body)
    table = PriceTable(country_rates_atomic={"GB": 50_000})
    quote = build_quote(
        quote_id="quo_x",
        body=body,
        plan=plan,
        pricing=price_message(plan, [US, GB], table),
        now=NOW,
        ttl_s=60,
    )
    assert (quote.asset, quote.network, quote.pay_to) == (None, None, None)
    assert quote.per_segment_rate_atomic == 50_000
    assert quote.total_atomic == 85_000


def test_quote_expires_at_its_ttl() -> None:
    plan = plan_segments("hi")
    quote = build_quote(
        quote_id="quo_x",
        body="hi",
        plan=plan,
        pricing=price_message(plan, [US], PriceTable()),
        now=NOW,
        ttl_s=60,
    )
    assert not quote.is_expired(NOW + timedelta(seconds=59))
    assert quote.is_expired(NOW + timedelta(seconds=60))


def test_quote_rejects_a_plan_of_another_body_and_a_non_positive_ttl() -> None:
    plan = plan_segments("hi")
    pricing = price_message(plan, [US], PriceTable())
    with pytest.raises(ValueError):
        build_quote(quote_id="q", body="hello", plan=plan, pricing=pricing, now=NOW, ttl_s=60)
    with pytest.raises(ValueError):
        build_quote(quote_id="q", body="hi", plan=plan, pricing=pricing, now=NOW, ttl_s=0)
