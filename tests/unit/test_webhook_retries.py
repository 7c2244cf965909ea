"""The retry schedule of a webhook delivery: exponential ceilings over about two days, full
jitter drawn from an injectable source, nothing after the tenth retry; and the five days of
failures that disable an endpoint."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from app.domain.webhook_retries import (
    MAX_ATTEMPTS,
    RETRY_DELAYS_S,
    retry_delay_s,
    should_disable,
)


def test_the_ceilings_grow_from_5_s_to_a_day_and_span_about_two_days():
    assert RETRY_DELAYS_S == (5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200, 86400)
    assert list(RETRY_DELAYS_S) == sorted(RETRY_DELAYS_S)
    assert timedelta(hours=46) < timedelta(seconds=sum(RETRY_DELAYS_S)) < timedelta(hours=48)
    assert MAX_ATTEMPTS == 11


def test_full_jitter_is_anywhere_from_zero_to_the_ceiling():
    for attempts, ceiling in enumerate(RETRY_DELAYS_S, start=1):
        assert retry_delay_s(attempts, lambda: 0.0) == 0.0
        assert retry_delay_s(attempts, lambda: 0.5) == ceiling / 2
        assert retry_delay_s(attempts, lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)
    first, second = random.Random(7), random.Random(7)
    spread = [retry_delay_s(3, first.random) for _ in range(1000)]
    assert spread == [retry_delay_s(3, second.random) for _ in range(1000)]  # the source decides
    assert all(0 <= delay < 120 for delay in spread)
    assert min(spread) < 12 and max(spread) > 108  # spread across the whole range


def test_no_retry_follows_the_last_attempt():
    assert retry_delay_s(len(RETRY_DELAYS_S), lambda: 0.5) is not None
    assert retry_delay_s(len(RETRY_DELAYS_S) + 1, lambda: 0.5) is None
    assert retry_delay_s(50, lambda: 0.5) is None
    with pytest.raises(ValueError):
        retry_delay_s(0)


def test_an_endpoint_is_disabled_after_five_days_of_failures():
    assert not should_disable(timedelta(days=5) - timedelta(seconds=1))
    assert should_disable(timedelta(days=5))
    assert should_disable(timedelta(days=9))
