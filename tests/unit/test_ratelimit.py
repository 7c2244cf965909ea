"""Token bucket arithmetic: bursts, refill, debts, and a bounded number of buckets."""

from __future__ import annotations

import pytest

from app.domain.ratelimit import Buckets, Rate


def test_a_burst_then_the_steady_rate():
    buckets = Buckets(Rate(per_s=2.0, burst=3))
    assert [buckets.take("k", 0.0).allowed for _ in range(4)] == [True, True, True, False]
    refused = buckets.take("k", 0.0)
    assert refused.retry_after_s == pytest.approx(0.5) and refused.remaining == 0
    assert refused.limit == 3 and refused.reset_s == pytest.approx(1.5)
    assert buckets.take("k", 0.5).allowed and not buckets.take("k", 0.5).allowed
    assert buckets.take("other", 0.5).allowed


def test_waiting_the_advertised_time_is_always_enough():
    buckets = Buckets(Rate(per_s=10.0, burst=1))
    now = 1000.0
    for _ in range(1000):
        decision = buckets.take("k", now)
        if not decision.allowed:
            now += decision.retry_after_s
            assert buckets.take("k", now).allowed


def test_charged_failures_go_into_debt_and_peek_takes_nothing():
    buckets = Buckets(Rate.per_minute(3))
    for _ in range(5):
        buckets.charge("addr", 0.0)
    assert not buckets.peek("addr", 0.0).allowed
    # Two failures over the budget: 3 × 20 s until one more is allowed.
    assert not buckets.peek("addr", 59.0).allowed
    assert buckets.peek("addr", 60.0).allowed
    assert buckets.peek("addr", 60.0).allowed  # peeking never spends


def test_the_number_of_buckets_stays_bounded():
    buckets = Buckets(Rate(per_s=1.0, burst=5), max_keys=100)
    for i in range(10_000):
        buckets.take(f"client-{i}", float(i) / 1000)
    assert len(buckets) <= 100
    # A full bucket forgotten behaves like a new one.
    assert buckets.take("client-0", 100.0).remaining == 4
