"""Keeping untrusted JSON off the C stack: a nesting bound checked before any decoder runs,
and a recursion limit the interpreter's stack can actually honour.

Recursive decoders (msgspec, the stdlib's C scanner) recurse once per `[` or `{` and stop only at
`sys.getrecursionlimit()`. py_ecc (imported by eth-account, so by every server process) raises
that limit to 100,000 at import, far past what the C stack holds: ~30,000 nested brackets then
crash the process with SIGSEGV instead of raising. Both guards are needed: the limit keeps a
missed path an exception, the bound answers every request and frame with a clear 400.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from functools import lru_cache

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted from callers and phones."""

# CPython's default; what its C stack is sized for.
SAFE_RECURSION_LIMIT = 1000

_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_AS_PARENTHESES = bytes.maketrans(b"[]{}", b"()()")


@lru_cache(maxsize=8)
def _nesting_at_most(depth: int) -> re.Pattern[bytes]:
    """Balanced parentheses nested at most `depth` deep. Bounded nesting is a regular
    language; possessive repeats keep the match linear (no backtracking)."""
    pattern = b""
    for _ in range(depth):
        pattern = rb"(?:\(" + pattern + rb"\))*+"
    return re.compile(pattern)


def json_too_deep(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text `raw` nests arrays and objects more than `max_depth` deep,
    counting only brackets outside strings (unclosed ones too); a recursive decoder must not
    see it. Shallow malformed input (`[1}`) is left to the decoder to report.

    Linear, in C-speed steps, because it runs on every request body and phone frame (measured:
    0.3 µs for a typical send body, ~0.3 ms for 1,000 recipients, at most ~20 ms for a 1 MB body
    built to be slow): count the openers, and only when there are more than `max_depth`, drop
    escapes and strings, keep the brackets and match them against a bounded-depth pattern.
    """
    if isinstance(raw, str):
        if raw.count("[") + raw.count("{") <= max_depth:
            return False
        raw = raw.encode("utf-8", "surrogatepass")
    elif raw.count(b"[") + raw.count(b"{") <= max_depth:
        return False
    if b"\\" in raw:
        # Escaped backslashes first (left to right, as a decoder pairs them), then escaped
        # quotes: what remains of `"` then opens or closes a string.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(raw.split(b'"')[::2])
    brackets = outside_strings.translate(_AS_PARENTHESES, _NOT_A_BRACKET)
    if brackets.count(b"(") <= max_depth:
        return False
    return _nesting_at_most(max_depth).fullmatch(brackets) is None


def restore_recursion_limit() -> None:
    """Import py_ecc now (its import raises the limit) and put the limit back to CPython's
    default; nothing Simwire calls needs more (py_ecc recurses deeply only in pairings). Call
    once a process has imported its libraries: at app creation and when the phone client
    starts."""
    if importlib.util.find_spec("py_ecc") is not None:
        import py_ecc  # noqa: F401  (imported for its side effect, which is then undone)
    if sys.getrecursionlimit() > SAFE_RECURSION_LIMIT:
        sys.setrecursionlimit(SAFE_RECURSION_LIMIT)


_nesting_at_most(MAX_JSON_DEPTH)  # compiled at import, not in the first request that needs it
