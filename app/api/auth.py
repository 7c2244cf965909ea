"""Authentication as Litestar dependencies: a project key (`Bearer <key>` or `X-Api-Key: <key>`),
or a user's access token (`Bearer <JWT>`) acting on the project named by `Simwire-Project`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from litestar import Request

from app.api.ratelimit import AUTHENTICATED_FLAG
from app.db.engine import Database
from app.domain.errors import Unauthorized
from app.services import accounts
from app.services.accounts import UserContext
from app.services.ids import utcnow
from app.services.projects import AuthContext, authenticate

# Tests put a movable clock here (`app.state[CLOCK_STATE] = lambda: moment`): token expiry,
# sign-in lockouts and agent claims are judged by it.
CLOCK_STATE = "wall_clock"


def request_now(request: Request[Any, Any, Any]) -> datetime:
    """Now, by the app's clock (the real one unless a test moved it)."""
    clock = request.app.state.get(CLOCK_STATE)
    return clock() if clock is not None else utcnow()


def presented_key(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = request.headers.get("x-api-key")
    return api_key.strip() if api_key else None


async def optional_auth(request: Request[Any, Any, Any], db: Database) -> AuthContext | None:
    """The caller if a key or user token was presented (a bad one is still 401), else None
    (anonymous)."""
    raw = presented_key(request)
    if raw is None:
        return None
    if accounts.looks_like_user_token(raw):
        auth = await accounts.project_access(
            db,
            request.app.state["settings"],
            raw,
            request.headers.get(accounts.PROJECT_HEADER),
            request_now(request),
        )
    else:
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


async def require_user(request: Request[Any, Any, Any], db: Database) -> UserContext:
    """A dependency: the signed-in user behind `Authorization: Bearer <access token>`."""
    raw = presented_key(request)
    if raw is None or not accounts.looks_like_user_token(raw):
        raise accounts.UserTokenRequired()
    user = await accounts.authenticate_user(
        db, request.app.state["settings"], raw, request_now(request)
    )
    request.scope["state"][AUTHENTICATED_FLAG] = True
    return user
