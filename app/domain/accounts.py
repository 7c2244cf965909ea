"""Owner accounts: the password policy, the roles of an organization and what each may do with a
project, and when failed logins lock an account or an address out. Plain values only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache

ROLES: tuple[str, ...] = ("owner", "admin", "member")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
MAX_EMAIL_LENGTH = 254

# What a user token may do in a project of its organization. Members read; admins and owners
# also manage keys, phones, SIM locks, webhooks and agents (agents are keys: `keys.manage`).
# No role sends: an API key stays the credential for sending (and for `admin`).
_MEMBER_SCOPES = ("messages.read", "numbers.read", "credits.read")
_MANAGER_SCOPES = (
    *_MEMBER_SCOPES,
    "devices.manage",
    "numbers.lock",
    "webhooks.manage",
    "keys.manage",
)
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "owner": _MANAGER_SCOPES,
    "admin": _MANAGER_SCOPES,
    "member": _MEMBER_SCOPES,
}

# 10 failed logins per account or per client address within 15 minutes: locked until the
# oldest of them leaves the window.
LOGIN_FAILURE_LIMIT = 10
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)


def scopes_of_role(role: str) -> tuple[str, ...]:
    """The scopes a user of `role` holds in each project of the organization."""
    return ROLE_SCOPES.get(role, ())


def manages(role: str) -> bool:
    """Owners and admins create projects, claim agents and manage keys; members read."""
    return role in ("owner", "admin")


def normalize_email(email: str) -> str:
    """The form an address is stored and looked up in: trimmed, lower case."""
    return email.strip().lower()


def email_problem(email: str) -> str | None:
    """Why `email` cannot be an account's address, or None. Deliberately loose (one `@`, a dot in
    the domain, no spaces): the mailbox is the authority, not a pattern."""
    address = normalize_email(email)
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or domain.startswith(".") or domain.endswith("."):
        return "an email address looks like name@example.com"
    if len(address) > MAX_EMAIL_LENGTH or any(c.isspace() for c in address) or "\x00" in address:
        return "an email address looks like name@example.com"
    return None


@cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn's ranked list of the 30,000 most common passwords (from leaked password dumps).
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])


def password_problem(password: str, email: str = "", name: str = "") -> str | None:
    """Why `password` may not be used, or None: shorter than 10 characters, longer than 256, one
    of the 30,000 most common passwords (case-insensitive), or the account's own email or name."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"a password has at most {MAX_PASSWORD_LENGTH} characters"
    lowered = password.lower()
    if lowered in _common_passwords():
        return "this password is one of the most common ones; choose another"
    own = {normalize_email(email), normalize_email(email).partition("@")[0], name.strip().lower()}
    if lowered in own - {""}:
        return "a password must not be the account's email or name"
    return None


def lockout_retry_after_s(
    failures: Sequence[datetime],
    now: datetime,
    limit: int = LOGIN_FAILURE_LIMIT,
    window: timedelta = LOGIN_FAILURE_WINDOW,
) -> int | None:
    """Seconds until one more login may be tried, given the times of recent failures of one
    account or address; None when it may be tried now."""
    recent = sorted(moment for moment in failures if moment > now - window)
    if len(recent) < limit:
        return None
    # The attempt is allowed again once all but `limit - 1` of them are out of the window.
    frees_at = recent[len(recent) - limit] + window
    return max(1, int((frees_at - now).total_seconds() + 0.999))
