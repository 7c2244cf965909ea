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
# Anything that looks like one of our secrets, wherever it appears in a string.
SECRET_PATTERN = re.compile(r"sw_(?:live|test|dev)_[0-9a-fA-F]{6,}")


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
    return SECRET_PATTERN.sub(lambda m: m.group(0)[:11] + "…", text)
