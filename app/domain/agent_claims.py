"""Agent self-registration and its human claim, as rules: the verification code's alphabet,
how long a claim stays open, how many wrong codes lock it, which scopes a claim offers, and what
state a registration is in. Plain values only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# No 0/O, 1/I/L, 5/S, 2/Z or U/V pairs a person could misread from a screen or mistype.
CODE_ALPHABET = "ABCDEFGHJKMNPQRTWXY346789"
CODE_LENGTH = 8
CLAIM_TTL = timedelta(hours=72)
HOUR = timedelta(hours=1)
MAX_WRONG_CODES = 5
# An expired registration is kept this long (its agent sees `expired`), then purged.
EXPIRED_KEPT = timedelta(hours=24)
MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 1000
MAX_METADATA_BYTES = 4096

# What a claim grants: ticked by default, and what the human may add. Never keys.manage,
# devices.manage or admin: an agent does not manage its own project.
DEFAULT_SCOPES: tuple[str, ...] = ("messages.read", "numbers.read")
OPTIONAL_SCOPES: tuple[str, ...] = (
    "messages.send",
    "numbers.lock",
    "webhooks.manage",
    "credits.read",
)
GRANTABLE_SCOPES = frozenset(DEFAULT_SCOPES + OPTIONAL_SCOPES)

UNCLAIMED = "unclaimed"
CLAIMED = "claimed"
EXPIRED = "expired"


def normalize_code(typed: str) -> str:
    """A code as a person may type it (lower case, with spaces or dashes) in its stored form."""
    return "".join(ch for ch in typed.upper() if ch not in " -\t")


def is_code_shaped(code: str) -> bool:
    return len(code) == CODE_LENGTH and all(ch in CODE_ALPHABET for ch in code)


@dataclass(frozen=True)
class ClaimState:
    """Where a registration stands at a moment."""

    status: str
    locked: bool


def claim_state(
    expires_at: datetime, claimed_at: datetime | None, wrong_codes: int, now: datetime
) -> ClaimState:
    if claimed_at is not None:
        return ClaimState(CLAIMED, locked=False)
    if now >= expires_at:
        return ClaimState(EXPIRED, locked=False)
    return ClaimState(UNCLAIMED, locked=wrong_codes >= MAX_WRONG_CODES)


def granted_scopes(requested: list[str] | None) -> list[str]:
    """The scopes a claim gives, in canonical order: the defaults when None; ValueError naming
    any scope a claim cannot grant."""
    if requested is None:
        return list(DEFAULT_SCOPES)
    refused = sorted(set(requested) - GRANTABLE_SCOPES)
    if refused:
        raise ValueError(
            "a claim cannot grant "
            + ", ".join(refused)
            + "; grantable: "
            + ", ".join(DEFAULT_SCOPES + OPTIONAL_SCOPES)
        )
    order = DEFAULT_SCOPES + OPTIONAL_SCOPES
    return [scope for scope in order if scope in set(requested)]


def registrations_retry_after_s(
    registered: list[datetime], now: datetime, per_hour: int
) -> int | None:
    """Seconds until an address may register again, given when it registered lately; None
    when it may now (`per_hour` 0: no limit)."""
    if per_hour <= 0:
        return None
    recent = sorted(moment for moment in registered if moment > now - HOUR)
    if len(recent) < per_hour:
        return None
    frees_at = recent[len(recent) - per_hour] + HOUR
    return max(1, int((frees_at - now).total_seconds() + 0.999))
