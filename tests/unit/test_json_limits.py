"""The JSON nesting bound: exact at the limit, blind to brackets inside strings, and fast."""

from __future__ import annotations

import json
import sys
import time

import pytest

from app.json_limits import (
    MAX_JSON_DEPTH,
    SAFE_RECURSION_LIMIT,
    json_too_deep,
    restore_recursion_limit,
)


def _nested(depth: int) -> list[str]:
    """Arrays, objects, and both alternating, each `depth` deep around a 1."""
    arrays = "[" * depth + "1" + "]" * depth
    objects = '{"a":' * depth + "1" + "}" * depth
    openers = ['{"k":' if i % 2 else "[" for i in range(depth)]
    closers = ["}" if i % 2 else "]" for i in reversed(range(depth))]
    return [arrays, objects, "".join(openers) + "1" + "".join(closers)]


@pytest.mark.parametrize("depth", [1, 2, 31, 32, 33, 34, 100, 100_000])
def test_arrays_and_objects_deeper_than_the_bound_are_too_deep(depth: int) -> None:
    for text in _nested(depth):
        if depth <= 100:
            json.loads(text)  # well-formed: only the depth decides
        assert json_too_deep(text) is (depth > MAX_JSON_DEPTH)
        assert json_too_deep(text.encode()) is (depth > MAX_JSON_DEPTH)


def test_depth_counts_the_deepest_branch_not_the_number_of_brackets() -> None:
    many_shallow = json.dumps({"messages": [{"to": "+1", "tags": [[1], [2]]}] * 5000})
    assert not json_too_deep(many_shallow)
    deep_branch = '{"a": [1, 2], "b": ' + "[" * 40 + "]" * 40 + "}"
    assert json_too_deep(deep_branch)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"message": "[" * 10_000}),
        json.dumps({"message": '\\"[{' * 1_000}),
        json.dumps({"message": '"' + "{" * 100, "to": "[" * 100}),
        json.dumps(["\\", "[" * 100, "\\\\", "{" * 100]),
    ],
)
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    assert not json_too_deep(text)


def test_an_escaped_backslash_before_a_quote_ends_the_string() -> None:
    # `"\\"` is a string holding one backslash: the brackets after it are structure.
    text = '["\\\\", ' + "[" * 40 + "]" * 40 + "]"
    json.loads(text)
    assert json_too_deep(text)


@pytest.mark.parametrize("text", ["[" * 100_000, "]" * 50 + "[" * 50, "{" * 40 + "1"])
def test_many_unclosed_brackets_are_refused(text: str) -> None:
    assert json_too_deep(text)


def test_shallow_malformed_input_is_left_to_the_decoder() -> None:
    assert not json_too_deep('{"a": [1}')
    assert not json_too_deep("not json at all")
    # A closer of the other kind still closes a level: the decoder fails at the first one.
    assert not json_too_deep("[}" * 50_000)


def test_the_scan_is_fast_on_bodies_built_to_be_slow() -> None:
    typical = json.dumps({"to": "+14155550100", "message": "Your code is 123456", "tag": "otp"})
    started = time.perf_counter()
    for _ in range(10_000):
        json_too_deep(typical)
    assert (time.perf_counter() - started) / 10_000 < 20e-6
    megabyte = [
        b"[]" * 500_000,
        (b"[" * 32 + b"]" * 32 + b",") * 15_000,
        b"[]" * 500_000 + b"[" * 33 + b"]" * 33,
        json.dumps({"message": '\\"[' * 300_000}).encode(),
        b"[" * 1_000_000,
    ]
    for body in megabyte:
        started = time.perf_counter()
        json_too_deep(body)
        # ~20 ms here on a busy 2-core machine; a per-byte Python loop takes ~10x that.
        assert time.perf_counter() - started < 0.25


def test_recursion_limit_is_back_to_the_default_after_py_ecc_is_imported() -> None:
    sys.setrecursionlimit(100_000)  # what importing py_ecc does
    try:
        restore_recursion_limit()
        assert sys.getrecursionlimit() == SAFE_RECURSION_LIMIT
    finally:
        sys.setrecursionlimit(SAFE_RECURSION_LIMIT)
