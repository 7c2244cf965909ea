"""When a failed webhook delivery is tried again: exponential backoff over about two days with
full jitter, and how long an endpoint may fail every attempt before it is disabled."""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from datetime import timedelta

RETRY_DELAYS_S: tuple[int, ...] = (
    5,
    30,
    2 * 60,
    10 * 60,
    30 * 60,
    60 * 60,
    3 * 60 * 60,
    6 * 60 * 60,
    12 * 60 * 60,
    24 * 60 * 60,
)
"""The backoff ceiling before each retry: after the first attempt up to 5 s, … after the
tenth up to 24 h (about 47 h in all)."""
MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1
DISABLE_AFTER = timedelta(days=5)
"""An endpoint whose every attempt has failed for this long is disabled."""


def retry_delay_s(attempts_made: int, random: Callable[[], float] = _random.random) -> float | None:
    """Seconds until the next try of a delivery that has failed `attempts_made` times (1 or
    more), or None when the schedule is used up. Full jitter: uniformly between 0 and the
    schedule's ceiling for that retry, drawn from `random` (a float in [0, 1))."""
    if attempts_made < 1:
        raise ValueError("a retry follows at least one attempt")
    if attempts_made > len(RETRY_DELAYS_S):
        return None
    return RETRY_DELAYS_S[attempts_made - 1] * random()


def should_disable(failing_for: timedelta) -> bool:
    """Whether an endpoint that has failed every attempt for `failing_for` is disabled."""
    return failing_for >= DISABLE_AFTER
