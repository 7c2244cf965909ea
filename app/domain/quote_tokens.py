"""A priced quote as a signed, self-describing id: `quo_<claims>.<mac>`, where `claims` is the
base64url of a compact JSON array (what was priced, the total, the expiry) and `mac` an
HMAC-SHA256 of everything before the dot. Whoever holds the key can check a quote without
having stored it, so pricing a message writes nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

PREFIX = "quo_"
VERSION = 1
_MAC_BYTES = 16


@dataclass(frozen=True)
class QuoteClaims:
    project_id: str | None  # None: priced for anonymous callers (the operator's prices)
    content_sha256: str  # every destination with its body, in order (`quoting.content_sha256`)
    recipient_count: int
    total_segments: int  # of every copy
    total_atomic: int
    expires_at: int  # Unix seconds


def sign(claims: QuoteClaims, key: bytes) -> str:
    fields = [
        VERSION,
        claims.project_id,
        claims.content_sha256,
        claims.recipient_count,
        claims.total_segments,
        claims.total_atomic,
        claims.expires_at,
    ]
    payload = PREFIX + _b64(json.dumps(fields, separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(payload, key))}"


def read(token: str, key: bytes) -> QuoteClaims | None:
    """The claims of a quote id this key signed, else None (another key's, altered, or not a
    quote id at all). Expiry is the caller's to judge (`expires_at`)."""
    payload, dot, mac = token.partition(".")
    if not dot or not payload.startswith(PREFIX):
        return None
    try:
        given = _unb64(mac)
        if not hmac.compare_digest(given, _mac(payload, key)):
            return None
        fields = json.loads(_unb64(payload.removeprefix(PREFIX)))
    except ValueError:
        return None
    if not isinstance(fields, list) or len(fields) != 7 or fields[0] != VERSION:
        return None
    _, project_id, content, recipients, segments, total, expires = fields
    return QuoteClaims(project_id, content, recipients, segments, total, expires)


def _mac(payload: str, key: bytes) -> bytes:
    return hmac.new(key, payload.encode(), hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
