"""What every dashboard response carries against the browser's usual attacks: a strict
Content-Security-Policy (scripts and styles only from this server, no inline code), and the
CSRF token each POST form must send back.

A signed-in form's token is an HMAC of the sign-in's session id (stable across refreshes,
different for every sign-in), keyed with the server's token-signing key; before sign-in (the
sign-in and register forms) it is the random value of a `simwire_csrf` cookie, sent back in the
form (double submit). Either way a page of another site cannot know it."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from app.domain.errors import Forbidden

CSRF_FIELD = "csrf_token"
CSRF_COOKIE = "simwire_csrf"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # The QR codes are PNG data URLs.
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # A claim page's URL is its capability: never hand it to another site as a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class CsrfRefused(Forbidden):
    code = "csrf_refused"

    def __init__(self) -> None:
        super().__init__(
            "this form's security token is missing or stale; reload the page and try again"
        )


def session_csrf_token(signing_key: str, session_id: str) -> str:
    return hmac.new(signing_key.encode(), f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()


def new_anonymous_token() -> str:
    return secrets.token_urlsafe(24)


def check_token(sent: str | None, expected: str | None) -> None:
    """CsrfRefused unless `sent` equals the non-empty `expected` (compared in constant time)."""
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused()
