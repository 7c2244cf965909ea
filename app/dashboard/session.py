"""Who is looking at a dashboard page: the user behind the session cookies, refreshed when the
access token has expired, and the project (of their organizations) the page is about.

The cookies hold the user's access and refresh tokens as `POST /v1/auth/token` gives them;
both are HttpOnly, SameSite=Lax, limited to /dashboard, and Secure when the request came over
https. A refresh token is good once, so two requests that find the same expired access token
(the live panels poll while a form is posted) must not both spend it: the first refresh of a
token is remembered for a minute and handed to the others."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from litestar import Request, Response
from litestar.datastructures import Cookie

from app.api.auth import request_now
from app.dashboard.security import CSRF_COOKIE, new_anonymous_token, session_csrf_token
from app.db.engine import Database
from app.domain import accounts as rules
from app.domain.errors import SimwireError, Unauthorized
from app.services import accounts
from app.services.accounts import TokenPair, UserContext, UserProfile, UserProject
from app.services.projects import AuthContext
from app.settings import Settings

ACCESS_COOKIE = "simwire_access"
REFRESH_COOKIE = "simwire_refresh"
COOKIE_PATH = "/dashboard"
NEW_TOKENS_STATE = "dashboard_new_tokens"
CLEAR_STATE = "dashboard_clear_session"
_REFRESH_REMEMBERED_S = 60.0


class SignInRequired(Unauthorized):
    code = "sign_in_required"

    def __init__(self) -> None:
        super().__init__("sign in to see this page")


@dataclass
class Viewer:
    """A signed-in user on a dashboard page, with their organizations and projects."""

    user: UserContext
    profile: UserProfile
    projects: list[UserProject]
    csrf_token: str
    project: UserProject | None = None
    auth: AuthContext | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def manages(self) -> bool:
        """Owners and admins of the current project's organization manage it; members read."""
        return self.project is not None and rules.manages(self.project.role)

    def require(self, scope: str) -> AuthContext:
        assert self.auth is not None
        self.auth.require(scope)
        return self.auth


class _Refreshes:
    """Refreshes by the refresh token spent, remembered briefly (see the module doc)."""

    def __init__(self) -> None:
        self._done: dict[str, tuple[float, TokenPair]] = {}
        self._lock = asyncio.Lock()

    async def refresh(
        self, db: Database, settings: Settings, refresh_token: str, now: datetime
    ) -> TokenPair:
        async with self._lock:
            moment = time.monotonic()
            self._done = {
                token: done
                for token, done in self._done.items()
                if moment - done[0] < _REFRESH_REMEMBERED_S
            }
            if refresh_token in self._done:
                return self._done[refresh_token][1]
            pair = await accounts.refresh(db, settings, refresh_token, now)
            self._done[refresh_token] = (moment, pair)
            return pair


_refreshes = _Refreshes()


def is_https(request: Request[Any, Any, Any]) -> bool:
    """The browser reached us over https: directly, through a trusted proxy that says so
    (`X-Forwarded-Proto`), or as the operator's https SIMWIRE_PUBLIC_URL declares."""
    if request.url.scheme == "https":
        return True
    settings: Settings = request.app.state["settings"]
    if (settings.public_url or "").startswith("https://"):
        return True
    client = request.scope.get("client")
    peer = client[0] if client else ""
    addresses = request.app.state["rate_limits"].addresses
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded == "https" and addresses.is_trusted(peer)


def session_cookies(
    request: Request[Any, Any, Any], pair: TokenPair, settings: Settings
) -> list[Cookie]:
    secure = is_https(request)
    return [
        Cookie(
            key=ACCESS_COOKIE,
            value=pair.access_token,
            path=COOKIE_PATH,
            httponly=True,
            samesite="lax",
            secure=secure,
            max_age=settings.refresh_token_ttl_s,
        ),
        Cookie(
            key=REFRESH_COOKIE,
            value=pair.refresh_token,
            path=COOKIE_PATH,
            httponly=True,
            samesite="lax",
            secure=secure,
            max_age=settings.refresh_token_ttl_s,
        ),
    ]


def cleared_cookies(request: Request[Any, Any, Any]) -> list[Cookie]:
    secure = is_https(request)
    return [
        Cookie(
            key=name,
            value="",
            path=COOKIE_PATH,
            httponly=True,
            samesite="lax",
            secure=secure,
            max_age=0,
        )
        for name in (ACCESS_COOKIE, REFRESH_COOKIE)
    ]


def anonymous_csrf(request: Request[Any, Any, Any]) -> str:
    """The double-submit token of a signed-out form: the cookie's, or a new one (which the
    response then sets)."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token:
        token = request.scope["state"].get(CSRF_COOKIE) or new_anonymous_token()
        request.scope["state"][CSRF_COOKIE] = token
    return token


def finish(request: Request[Any, Any, Any], response: Response[Any]) -> Response[Any]:
    """Sets the cookies a request decided on: new tokens after a refresh, a cleared session,
    a signed-out form's CSRF cookie."""
    state = request.scope["state"]
    settings: Settings = request.app.state["settings"]
    if state.get(CLEAR_STATE):
        response.cookies.extend(cleared_cookies(request))
    elif (pair := state.get(NEW_TOKENS_STATE)) is not None:
        response.cookies.extend(session_cookies(request, pair, settings))
    if (token := state.get(CSRF_COOKIE)) and not request.cookies.get(CSRF_COOKIE):
        response.cookies.append(
            Cookie(
                key=CSRF_COOKIE,
                value=token,
                path=COOKIE_PATH,
                httponly=True,
                samesite="lax",
                secure=is_https(request),
            )
        )
    return response


async def current_user(request: Request[Any, Any, Any]) -> tuple[UserContext, str]:
    """The signed-in user and their access token, refreshing an expired one (the new pair is
    set on the response); SignInRequired when there is no usable sign-in."""
    db: Database = request.app.state["db"]
    settings: Settings = request.app.state["settings"]
    now = request_now(request)
    state = request.scope["state"]
    pair: TokenPair | None = state.get(NEW_TOKENS_STATE)
    access = pair.access_token if pair else request.cookies.get(ACCESS_COOKIE)
    if access:
        try:
            return await accounts.authenticate_user(db, settings, access, now), access
        except accounts.InvalidToken:
            pass
        except SimwireError:
            raise SignInRequired() from None
    refresh_token = request.cookies.get(REFRESH_COOKIE)
    if not refresh_token or pair is not None:
        raise SignInRequired()
    try:
        pair = await _refreshes.refresh(db, settings, refresh_token, now)
        user = await accounts.authenticate_user(db, settings, pair.access_token, now)
    except SimwireError:
        state[CLEAR_STATE] = True
        raise SignInRequired() from None
    state[NEW_TOKENS_STATE] = pair
    return user, pair.access_token


async def viewer(request: Request[Any, Any, Any], project_id: str | None = None) -> Viewer:
    """The signed-in Viewer, on `project_id` when given (NotFound unless it is a project of
    one of the user's organizations, exactly as the API's Simwire-Project header)."""
    db: Database = request.app.state["db"]
    settings: Settings = request.app.state["settings"]
    user, token = await current_user(request)
    profile = await accounts.profile(db, user)
    projects = await accounts.list_user_projects(db, user)
    csrf = session_csrf_token(accounts.signing_key(settings), user.session_id)
    found = Viewer(user=user, profile=profile, projects=projects, csrf_token=csrf)
    if project_id is not None:
        found.auth = await accounts.project_access(
            db, settings, token, project_id, request_now(request)
        )
        found.project = next(p for p in projects if p.project.id == found.auth.project_id)
    return found
