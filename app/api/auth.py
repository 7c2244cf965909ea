"""Key authentication as Litestar dependencies: `Bearer <key>` or `X-Api-Key: <key>`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request

from app.api.ratelimit import AUTHENTICATED_FLAG
from app.db.engine import Database
from app.domain.errors import Unauthorized
from app.services.projects import AuthContext, authenticate


def presented_key(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = request.headers.get("x-api-key")
    return api_key.strip() if api_key else None


async def optional_auth(request: Request[Any, Any, Any], db: Database) -> AuthContext | None:
    """The caller if a key was presented (a bad key is still 401), else None (anonymous)."""
    raw = presented_key(request)
    if raw is None:
        return None
    auth = await authenticate(db, raw)
    # The rate limiter stops holding this key back for failed guesses from its address.
    request.scope["state"][AUTHENTICATED_FLAG] = True
    return auth


def require_scope(scope: str | None) -> Callable[..., Awaitable[AuthContext]]:
    """A dependency that yields the caller's AuthContext holding `scope` (None: any valid key),
    or raises 401/403."""

    async def _dependency(request: Request[Any, Any, Any], db: Database) -> AuthContext:
        auth = await optional_auth(request, db)
        if auth is None:
            raise Unauthorized(
                "an API key is required: send 'Authorization: Bearer sw_live_…' or 'X-Api-Key'"
            )
        if scope is not None:
            auth.require(scope)
        return auth

    return _dependency
