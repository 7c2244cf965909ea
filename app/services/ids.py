"""Random public ids and secrets."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from app.domain.credentials import SECRET_HEX_LENGTH


def new_id(prefix: str) -> str:
    """`prefix_` + 128 random bits in hex: unguessable, so an id can serve as a capability."""
    return f"{prefix}_{secrets.token_hex(16)}"


def new_secret(prefix: str) -> str:
    """`prefix` (already ending in `_`) + 32 random hex characters."""
    return prefix + secrets.token_hex(SECRET_HEX_LENGTH // 2)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with `Z`, as every timestamp the API writes (msgspec writes aware UTC
    datetimes the same way)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
