"""Helpers for tests of owner accounts: invites, registering and signing in over the API, and a
clock the app judges tokens, lockouts and claims by."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from litestar import Litestar

from app.api.auth import CLOCK_STATE
from app.db.engine import Database
from app.services.accounts import create_invite
from app.services.ids import utcnow

PASSWORD = "violet-harbour-42-lanterns"


class MovableClock:
    """Starts at the real now; the test moves it forward."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def install_clock(app: Litestar) -> MovableClock:
    clock = MovableClock()
    app.state[CLOCK_STATE] = clock
    return clock


@dataclass
class SignedIn:
    user_id: str
    email: str
    access_token: str
    refresh_token: str

    def headers(self, project_id: str | None = None) -> dict[str, str]:
        found = {"Authorization": f"Bearer {self.access_token}"}
        if project_id is not None:
            found["Simwire-Project"] = project_id
        return found


async def invite_code(
    db: Database, organization: str | None = None, role: str | None = None
) -> str:
    return (await create_invite(db, organization, role)).code


async def register(
    http: httpx.AsyncClient,
    email: str,
    invite: str | None,
    password: str = PASSWORD,
    name: str = "Ada Lovelace",
) -> httpx.Response:
    body = {"email": email, "password": password, "name": name}
    if invite is not None:
        body["invite_code"] = invite
    return await http.post("/v1/auth/register", json=body)


async def sign_in(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await http.post("/v1/auth/token", json={"email": email, "password": password})


async def new_user(
    http: httpx.AsyncClient,
    db: Database,
    email: str,
    organization: str | None = None,
    role: str | None = None,
) -> SignedIn:
    """An account registered with a fresh invite, signed in."""
    registered = await register(http, email, await invite_code(db, organization, role))
    assert registered.status_code == 201, registered.text
    tokens = await sign_in(http, email)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return SignedIn(
        registered.json()["user_id"], email, body["access_token"], body["refresh_token"]
    )
