"""Owner accounts: register, sign in (access and refresh tokens), refresh, sign out, the
signed-in user; and a user's projects (`GET/POST /v1/projects`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import Provide

from app.api.auth import request_now, require_user
from app.api.controllers.keys import issued_key_out
from app.api.openapi import USER_SECURITY, body_schema, error_responses, typed_body
from app.api.ratelimit import bucket_of_address
from app.api.schemas import IssuedKeyOut
from app.db.engine import Database
from app.domain import accounts as rules
from app.services import accounts
from app.services.accounts import TokenPair, UserContext
from app.settings import Settings

_NO_NUL = "^[^\u0000]*$"
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3, max_length=rules.MAX_EMAIL_LENGTH, pattern=_NO_NUL, description="An email"
    ),
]
Password = Annotated[
    str,
    msgspec.Meta(
        min_length=rules.MIN_PASSWORD_LENGTH,
        max_length=rules.MAX_PASSWORD_LENGTH,
        description=(
            f"{rules.MIN_PASSWORD_LENGTH} to {rules.MAX_PASSWORD_LENGTH} characters, not one "
            "of the 30,000 most common passwords (else 422 `weak_password`)"
        ),
    ),
]
Secret = Annotated[str, msgspec.Meta(max_length=1024)]
DisplayName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\u0000]*\S[^\u0000]*$")
]


class RegisterIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    name: DisplayName
    invite_code: Secret | None = None
    """From `simwire invite create`; needed unless the operator opened registration."""


class RegisteredOut(msgspec.Struct):
    success: bool
    message: str
    user_id: str


class TokenIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Annotated[str, msgspec.Meta(max_length=rules.MAX_EMAIL_LENGTH)]
    password: Secret


class RefreshIn(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Secret


class TokenOut(msgspec.Struct):
    """`access_token` goes in `Authorization: Bearer …` for `expires_in` seconds; then
    `refresh_token` (good once) gets the next pair from `POST /v1/auth/refresh`."""

    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str


class OrganizationOut(msgspec.Struct):
    id: str
    name: str
    role: str


class UserOut(msgspec.Struct):
    """`role`: the user's role in their first organization; `organizations`: every one, with
    the role there (`owner`, `admin` or `member`)."""

    id: str
    email: str
    name: str
    role: str
    organizations: list[OrganizationOut]
    created_at: datetime


class SuccessOut(msgspec.Struct):
    success: bool
    message: str


class UserProjectOut(msgspec.Struct):
    """A project of one of the user's organizations and the user's role there. Act on it with
    the access token and `Simwire-Project: <id>`."""

    id: str
    name: str
    organization_id: str
    role: str
    created_at: datetime


class UserProjectList(msgspec.Struct):
    data: list[UserProjectOut]
    count: int


class CreateProjectIn(msgspec.Struct, forbid_unknown_fields=True):
    name: DisplayName
    organization_id: Annotated[str, msgspec.Meta(max_length=40, pattern=_NO_NUL)] | None = None
    """Default: the first organization the user owns or administers."""


class CreatedProjectOut(msgspec.Struct):
    """The new project and its first key (every scope), whose secret is shown this once."""

    id: str
    name: str
    organization_id: str
    created_at: datetime
    key: IssuedKeyOut


def _client_address(request: Request[Any, Any, Any]) -> str:
    return bucket_of_address(request.app.state["rate_limits"].addresses.of(request.scope))


def _tokens(pair: TokenPair) -> TokenOut:
    return TokenOut(
        access_token=pair.access_token,
        token_type="Bearer",
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
    )


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["accounts"]

    @post(
        "/register",
        summary="Create an account (with an invite code unless registration is open)",
        operation_class=typed_body(body_schema(RegisterIn)),
        responses=error_responses(400, 409, 413, 422),
    )
    async def register(
        self, request: Request[Any, Any, Any], db: Database, settings: Settings, data: RegisterIn
    ) -> RegisteredOut:
        user = await accounts.register_user(
            db,
            settings,
            data.email,
            data.password,
            data.name,
            data.invite_code,
            request_now(request),
        )
        return RegisteredOut(
            success=True,
            message="account created; sign in with POST /v1/auth/token",
            user_id=user.id,
        )

    @post(
        "/token",
        status_code=200,
        summary="Sign in: an access token and a refresh token",
        operation_class=typed_body(body_schema(TokenIn)),
        responses=error_responses(400, 401, 413),
    )
    async def token(
        self, request: Request[Any, Any, Any], db: Database, settings: Settings, data: TokenIn
    ) -> TokenOut:
        pair = await accounts.sign_in(
            db,
            settings,
            data.email,
            data.password,
            _client_address(request),
            request_now(request),
        )
        return _tokens(pair)

    @post(
        "/refresh",
        status_code=200,
        summary="The next token pair; a refresh token works once (reuse ends the sign-in)",
        operation_class=typed_body(body_schema(RefreshIn)),
        responses=error_responses(400, 401, 413),
    )
    async def refresh(
        self, request: Request[Any, Any, Any], db: Database, settings: Settings, data: RefreshIn
    ) -> TokenOut:
        pair = await accounts.refresh(db, settings, data.refresh_token, request_now(request))
        return _tokens(pair)

    @get(
        "/user",
        summary="The signed-in user and their organizations",
        dependencies={"user": Provide(require_user)},
        security=USER_SECURITY,
        responses=error_responses(401),
    )
    async def current_user(self, db: Database, user: UserContext) -> UserOut:
        found = await accounts.profile(db, user)
        return UserOut(
            id=found.user.id,
            email=found.user.email,
            name=found.user.name,
            role=found.role,
            organizations=[OrganizationOut(o.id, o.name, o.role) for o in found.organizations],
            created_at=found.user.created_at,
        )

    @post(
        "/logout",
        status_code=200,
        summary="Sign out: this sign-in's access and refresh tokens stop at once",
        dependencies={"user": Provide(require_user)},
        security=USER_SECURITY,
        responses=error_responses(401),
    )
    async def logout(
        self, request: Request[Any, Any, Any], db: Database, user: UserContext
    ) -> SuccessOut:
        await accounts.sign_out(db, user, request_now(request))
        return SuccessOut(success=True, message="signed out")


class UserProjectController(Controller):
    path = "/v1/projects"
    tags = ["accounts"]
    security = USER_SECURITY
    dependencies = {"user": Provide(require_user)}

    @get(
        "/",
        summary="The projects of the user's organizations",
        responses=error_responses(401),
    )
    async def list_projects(self, db: Database, user: UserContext) -> UserProjectList:
        found = await accounts.list_user_projects(db, user)
        return UserProjectList(
            data=[
                UserProjectOut(
                    id=one.project.id,
                    name=one.project.name,
                    organization_id=one.project.organization_id,
                    role=one.role,
                    created_at=one.project.created_at,
                )
                for one in found
            ],
            count=len(found),
        )

    @post(
        "/",
        summary="Create a project (owners and admins) with its first key, shown once",
        operation_class=typed_body(body_schema(CreateProjectIn)),
        responses=error_responses(400, 401, 403, 404, 413),
    )
    async def create_project(
        self, db: Database, settings: Settings, user: UserContext, data: CreateProjectIn
    ) -> CreatedProjectOut:
        created = await accounts.create_user_project(
            db, user, data.name, data.organization_id, settings.key_mode
        )
        return CreatedProjectOut(
            id=created.project.id,
            name=created.project.name,
            organization_id=created.project.organization_id,
            created_at=created.project.created_at,
            key=issued_key_out(created.first_key),
        )
