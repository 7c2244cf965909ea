"""Sliding-window send limits: when a number or a wallet has had enough, and how long it waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.domain.send_limits import (
    DAY_S,
    HOUR_S,
    Usage,
    Window,
    exceeded,
    first_exceeded,
    windows,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
HOURLY = Window(5, HOUR_S, "hour")


def test_the_limit_itself_is_allowed_and_one_more_is_not():
    assert exceeded(HOURLY, Usage(4, NOW - timedelta(minutes=10)), 1, NOW) is None
    verdict = exceeded(HOURLY, Usage(5, NOW - timedelta(minutes=10)), 1, NOW)
    assert verdict is not None and verdict.window is HOURLY


def test_retry_after_is_when_the_oldest_counted_message_leaves_the_window():
    verdict = exceeded(HOURLY, Usage(5, NOW - timedelta(minutes=45)), 1, NOW)
    assert verdict is not None and verdict.retry_after_s == 15 * 60
    almost_out = exceeded(HOURLY, Usage(5, NOW - timedelta(seconds=3599.5)), 1, NOW)
    assert almost_out is not None and almost_out.retry_after_s == 1


def test_a_request_larger_than_the_limit_waits_a_whole_window():
    verdict = exceeded(HOURLY, Usage(0, None), 6, NOW)
    assert verdict is not None and verdict.retry_after_s == HOUR_S


def test_the_first_window_passed_is_named_and_unset_limits_are_no_limits():
    limits = windows(5, 20)
    assert [w.seconds for w in limits] == [HOUR_S, DAY_S]
    usage = {
        HOUR_S: Usage(2, NOW - timedelta(minutes=5)),
        DAY_S: Usage(20, NOW - timedelta(hours=23)),
    }
    verdict = first_exceeded(limits, usage, 1, NOW)
    assert verdict is not None and verdict.window.name == "day" and verdict.retry_after_s == 3600
    assert windows(None, None) == () and windows(0, None) == ()
    assert first_exceeded((), usage, 100, NOW) is None
