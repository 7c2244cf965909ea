"""API keys and device tokens: formats, scopes and hashing. Raw secrets are never stored."""

from __future__ import annotations

import hashlib
import hmac
import re

SCOPES: tuple[str, ...] = (
    "messages.send",
    "messages.read",
    "devices.manage",
    "numbers.read",
    "numbers.lock",
    "webhooks.manage",
    "credits.read",
    "keys.manage",
    "admin",
)
ALL_SCOPES = frozenset(SCOPES)

API_KEY_PREFIXES = {"live": "sw_live_", "test": "sw_test_"}
DEVICE_TOKEN_PREFIX = "sw_dev_"
SECRET_HEX_LENGTH = 32
DISPLAY_HEX_LENGTH = 8

_API_KEY_RE = re.compile(r"^sw_(live|test)_[0-9a-f]{32}$")
_DEVICE_TOKEN_RE = re.compile(r"^sw_dev_[0-9a-f]{32}$")


def _literal_or_encoded(char: str) -> str:
    """`char` as written or percent-encoded (also encoded again: `%5F`, `%255F`)."""
    return f"(?:{re.escape(char)}|%(?:25)*{ord(char):02x})"


def _spelled(word: str) -> str:
    return "".join(_literal_or_encoded(c) for c in word)


_HEX_DIGIT = "(?:[0-9a-f]|%(?:25)*(?:3[0-9]|[46][1-6]))"
# Anything that looks like one of our secrets, wherever it appears in a string: as written
# (`sw_dev_3f…`) or percent-encoded as it arrives in a query string (`sw%5Fdev%5F3f…`).
SECRET_PATTERN = re.compile(
    _spelled("sw_")
    + "(?:"
    + "|".join(_spelled(kind) for kind in ("live", "test", "dev"))
    + ")"
    + _spelled("_")
    + _HEX_DIGIT
    + "{6,}",
    re.IGNORECASE,
)


def hash_secret(raw: str) -> str:
    """SHA-256 hex of a secret; the only form in which keys and tokens are stored."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def secret_matches(raw: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(raw), stored_hash)


def display_prefix(raw: str) -> str:
    """What may be shown again later: the type prefix and the first 8 hex characters."""
    head, _, secret = raw.rpartition("_")
    return f"{head}_{secret[:DISPLAY_HEX_LENGTH]}"


def is_api_key(raw: str) -> bool:
    return bool(_API_KEY_RE.match(raw))


def is_device_token(raw: str) -> bool:
    return bool(_DEVICE_TOKEN_RE.match(raw))


def normalize_scopes(requested: list[str] | None) -> list[str]:
    """Validated, de-duplicated scopes in canonical order; None means every scope."""
    if requested is None:
        return list(SCOPES)
    unknown = sorted(set(requested) - ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(unknown)}")
    return [scope for scope in SCOPES if scope in set(requested)]


def grants(scopes: list[str], needed: str) -> bool:
    """`admin` implies every scope."""
    return needed in scopes or "admin" in scopes


def redact_secrets(text: str) -> str:
    """`text` with every key or token in it (plain or percent-encoded) cut to its first few
    characters, so a log line can say which one without giving it away."""
    if "%" not in text and "sw" not in text.lower():
        return text  # the common case, without running the pattern
    return SECRET_PATTERN.sub(lambda m: m.group(0)[:11] + "…", text)
