"""Sliding-window send limits against SMS bombing and pumping: how many messages one
destination number, or one paying wallet, may get in an hour and in a day, and how long a
refused caller waits (until the oldest counted message leaves its window)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

HOUR_S = 3_600
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Window:
    """At most `limit` messages within `seconds`; `name` is how an error says it ("hour")."""

    limit: int
    seconds: int
    name: str


@dataclass(frozen=True, slots=True)
class Usage:
    """What one subject (a number, a wallet) already used in one window: the count, and the
    time of the oldest message counted (None when nothing is)."""

    count: int
    oldest: datetime | None


@dataclass(frozen=True, slots=True)
class Exceeded:
    window: Window
    retry_after_s: int


def windows(per_hour: int | None, per_day: int | None) -> tuple[Window, ...]:
    """The windows a limit pair sets; None (or a non-positive value: unlimited) sets none."""
    found = []
    if per_hour is not None and per_hour > 0:
        found.append(Window(per_hour, HOUR_S, "hour"))
    if per_day is not None and per_day > 0:
        found.append(Window(per_day, DAY_S, "day"))
    return tuple(found)


def exceeded(window: Window, usage: Usage, adding: int, now: datetime) -> Exceeded | None:
    """Whether `adding` more messages would pass `window`'s limit, and if so the whole seconds
    until its oldest counted message leaves it (at least 1). A request that alone asks for more
    than the limit waits a whole window."""
    if usage.count + adding <= window.limit:
        return None
    if usage.oldest is None or adding > window.limit:
        return Exceeded(window, window.seconds)
    left = window.seconds - (now - usage.oldest).total_seconds()
    return Exceeded(window, max(1, math.ceil(left)))


def first_exceeded(
    limits: tuple[Window, ...], usage: dict[int, Usage], adding: int, now: datetime
) -> Exceeded | None:
    """The first of `limits` that `adding` more messages would pass (`usage` by window
    length in seconds; a window with none recorded counts as unused)."""
    for window in limits:
        verdict = exceeded(window, usage.get(window.seconds, Usage(0, None)), adding, now)
        if verdict is not None:
            return verdict
    return None
