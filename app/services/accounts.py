"""Owner accounts: invites, registration, sign-in with rotating refresh tokens, sign-out, the
signed-in user, and what a user token may do in a project of its organizations.

Passwords are hashed with Argon2id (argon2-cffi's RFC 9106 defaults), off the event loop. An
access token is an HS256 JWT (`sub` user, `sid` session, 15 minutes by default) signed with
SIMWIRE_JWT_SECRET or a key derived from SIMWIRE_SECRET_KEY; every request with one checks that
its session is still open, so signing out or a detected refresh-token reuse stops it at once.
A refresh token (`sw_rt_…`, stored hashed) is good once: using it gives the next one of its
session, and using one a second time revokes the whole session (its "family").

A failed sign-in is counted against the account and the client address in the database (every
instance sees the same count); 10 of either within 15 minutes lock further tries out until the
oldest leaves the window. An unknown email is answered exactly like a wrong password, after
verifying the password against a dummy hash so both take the same time."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import (
    Invite,
    LoginFailure,
    Membership,
    Organization,
    Project,
    RefreshToken,
    User,
    UserSession,
)
from app.db.repositories.projects import ProjectRepository
from app.domain import accounts as rules
from app.domain import credentials
from app.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    Unprocessable,
)
from app.services import projects
from app.services.ids import new_id, new_secret, utcnow
from app.services.projects import AuthContext, CreatedProject
from app.settings import Settings

INVITE_PREFIX = "sw_inv_"
REFRESH_PREFIX = "sw_rt_"
INVITE_TTL = timedelta(days=7)
PROJECT_HEADER = "Simwire-Project"
_ISSUER = "simwire"
_ALGORITHM = "HS256"
_KEY_DERIVATION = b"simwire access tokens v1"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("the email or password is wrong")


class InvalidRefreshToken(Unauthorized):
    code = "invalid_refresh_token"


class InvalidToken(Unauthorized):
    code = "invalid_token"


class UserTokenRequired(Unauthorized):
    code = "user_token_required"

    def __init__(self) -> None:
        super().__init__(
            "this route needs a user's access token (POST /v1/auth/token): "
            "'Authorization: Bearer <access_token>'; a project API key does not sign a user in"
        )


class LoginLocked(RateLimited):
    code = "login_locked"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "too many failed sign-ins for this account or address; try again later",
            retry_after_s=retry_after_s,
        )


class InviteRequired(Unprocessable):
    code = "invite_required"


class InvalidInvite(Unprocessable):
    code = "invalid_invite"


class WeakPassword(Unprocessable):
    code = "weak_password"


class EmailTaken(Conflict):
    code = "email_taken"


class ProjectRequired(InvalidInput):
    code = "project_required"


@dataclass(frozen=True)
class UserContext:
    """Who a valid access token belongs to, and the sign-in (session) it came from."""

    user_id: str
    session_id: str


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str = field(repr=False)


@dataclass(frozen=True)
class IssuedInvite:
    invite: Invite
    code: str = field(repr=False)
    organization: Organization | None


@dataclass(frozen=True)
class OrganizationRole:
    id: str
    name: str
    role: str


@dataclass(frozen=True)
class UserProfile:
    user: User
    organizations: list[OrganizationRole]

    @property
    def role(self) -> str:
        """The role in the user's first organization (where they registered)."""
        return self.organizations[0].role if self.organizations else ""


@dataclass(frozen=True)
class UserProject:
    project: Project
    role: str


# Passwords -------------------------------------------------------------------------------


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    return _hasher().hash("simwire: no account has this password")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher().hash, password)


async def _password_matches(stored_hash: str | None, password: str) -> bool:
    """Argon2id verification in a worker thread; an unknown account is checked against a dummy
    hash so it costs the same time as a known one."""

    def verify() -> bool:
        try:
            return _hasher().verify(stored_hash or _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return False

    matched = await asyncio.to_thread(verify)
    return matched and stored_hash is not None


# Tokens ----------------------------------------------------------------------------------


def _signing_key(settings: Settings) -> str:
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if settings.secret_key is not None:
        operator_key = settings.secret_key.get_secret_value().encode()
        return hmac.new(operator_key, _KEY_DERIVATION, hashlib.sha256).hexdigest()
    raise Unavailable(
        "user accounts need a key to sign access tokens: the operator sets SIMWIRE_SECRET_KEY "
        "(32 or more characters), or SIMWIRE_JWT_SECRET"
    )


def signing_key(settings: Settings) -> str:
    """The key access tokens are signed with (the dashboard keys its CSRF tokens with it too);
    Unavailable when the operator has set none."""
    return _signing_key(settings)


def looks_like_user_token(raw: str) -> bool:
    """A JWT (three base64url parts) rather than a `sw_…` key or token."""
    return raw.startswith("eyJ") and raw.count(".") == 2


def _access_token(settings: Settings, user_id: str, session_id: str, now: datetime) -> str:
    claims = {
        "iss": _ISSUER,
        "sub": user_id,
        "sid": session_id,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + settings.access_token_ttl_s,
    }
    return jwt.encode(claims, _signing_key(settings), algorithm=_ALGORITHM)


def _decode(settings: Settings, token: str, now: datetime) -> UserContext:
    key = _signing_key(settings)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[_ALGORITHM],
            issuer=_ISSUER,
            # Times are judged below by our clock, which tests move.
            options={
                "require": ["exp", "iat", "sub", "sid"],
                "verify_exp": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError:
        raise InvalidToken("the access token is not valid") from None
    # Expiry against our clock (the same one the rest of the request uses).
    if int(claims["exp"]) <= now.timestamp():
        raise InvalidToken("the access token has expired: get a new one with POST /v1/auth/refresh")
    return UserContext(user_id=str(claims["sub"]), session_id=str(claims["sid"]))


def _subject(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


# Invites and registration ----------------------------------------------------------------


async def create_invite(
    db: Database,
    organization: str | None = None,
    role: str | None = None,
    ttl: timedelta = INVITE_TTL,
    now: datetime | None = None,
) -> IssuedInvite:
    """A single-use invite code. With `organization` (an id, or a name: created if new) the
    user joins it with `role` (default member); without, they get a new organization of their
    own and own it (`role` must then be owner or absent)."""
    moment = now or utcnow()
    if role is not None and role not in rules.ROLES:
        raise InvalidInput(f"role must be one of {', '.join(rules.ROLES)}", param="role")
    if organization is None and role not in (None, "owner"):
        raise InvalidInput(
            "an invite without an organization makes a new one that the user owns; give "
            "--org to invite into an existing organization with another role",
            param="role",
        )
    code = new_secret(INVITE_PREFIX)
    async with db.transaction() as session:
        org = None
        if organization is not None:
            repo = ProjectRepository(session)
            org = await repo.find_organization(organization)
            if org is None:
                org = Organization(id=new_id("org"), name=organization, created_at=moment)
                repo.add(org)
        invite = Invite(
            id=new_id("inv"),
            code_hash=credentials.hash_secret(code),
            organization_id=org.id if org else None,
            role=role or ("member" if org else "owner"),
            created_at=moment,
            expires_at=moment + ttl,
        )
        session.add(invite)
    return IssuedInvite(invite=invite, code=code, organization=org)


async def register_user(
    db: Database,
    settings: Settings,
    email: str,
    password: str,
    name: str,
    invite_code: str | None,
    now: datetime | None = None,
) -> User:
    """A new account, in the invite's organization with its role, or (open registration, or an
    invite without one) owner of a new organization. InviteRequired / InvalidInvite (422) first
    (so nothing else is told to a caller without a good invite), then InvalidInput for the email
    or name, WeakPassword (422), EmailTaken (409)."""
    moment = now or utcnow()
    if not invite_code and not settings.open_registration:
        raise InviteRequired(
            "registering needs an invite code from the operator (`simwire invite create`)",
            param="invite_code",
        )
    if invite_code:
        await _check_invite(db, invite_code, moment)
    problem = rules.email_problem(email)
    if problem:
        raise InvalidInput(problem, param="email")
    address = rules.normalize_email(email)
    display_name = name.strip()
    if not display_name or len(display_name) > 200 or "\x00" in display_name:
        raise InvalidInput("`name` needs 1 to 200 characters", param="name")
    weak = rules.password_problem(password, address, display_name)
    if weak:
        raise WeakPassword(weak, param="password")
    password_hash = await hash_password(password)
    user = User(
        id=new_id("usr"),
        email=address,
        name=display_name,
        password_hash=password_hash,
        created_at=moment,
    )
    try:
        async with db.transaction() as session:
            taken = (
                await session.execute(select(col(User.id)).where(col(User.email) == address))
            ).first()
            if taken is not None:
                raise EmailTaken("an account with this email exists", param="email")
            organization_id, role = await _use_invite(session, invite_code, user.id, moment)
            session.add(user)
            if organization_id is None:
                org = Organization(
                    id=new_id("org"), name=f"{display_name}'s organization", created_at=moment
                )
                session.add(org)
                organization_id = org.id
            await session.flush()
            session.add(
                Membership(
                    user_id=user.id, organization_id=organization_id, role=role, created_at=moment
                )
            )
    except IntegrityError:
        # Two registrations of one email at once: the unique index decided.
        raise EmailTaken("an account with this email exists", param="email") from None
    return user


async def _check_invite(db: Database, invite_code: str, now: datetime) -> None:
    """InvalidInvite unless the code is an unused, unexpired invite (looked at first, so a
    registration without a good invite learns nothing else; it is used up later, once)."""
    async with db.reading() as session:
        usable = (
            await session.execute(
                select(col(Invite.id)).where(
                    col(Invite.code_hash) == credentials.hash_secret(invite_code.strip()),
                    col(Invite.used_at).is_(None),
                    col(Invite.expires_at) > now,
                )
            )
        ).first()
    if usable is None:
        raise InvalidInvite("the invite code is unknown, used or expired", param="invite_code")


async def _use_invite(
    session: AsyncSession, invite_code: str | None, user_id: str, now: datetime
) -> tuple[str | None, str]:
    """Marks the invite used (once, whoever races for it); its organization and role."""
    if not invite_code:
        return None, "owner"
    code_hash = credentials.hash_secret(invite_code.strip())
    used = await session.execute(
        update(Invite)
        .where(
            col(Invite.code_hash) == code_hash,
            col(Invite.used_at).is_(None),
            col(Invite.expires_at) > now,
        )
        .values(used_at=now, used_by=user_id)
    )
    if getattr(used, "rowcount", 0) != 1:
        raise InvalidInvite("the invite code is unknown, used or expired", param="invite_code")
    invite = (
        await session.execute(select(Invite).where(col(Invite.code_hash) == code_hash))
    ).scalar_one()
    return invite.organization_id, invite.role


# Sign-in, refresh, sign-out ---------------------------------------------------------------


async def sign_in(
    db: Database, settings: Settings, email: str, password: str, address: str, now: datetime
) -> TokenPair:
    """Tokens for a right email and password. LoginLocked (429) while the account or the
    address is locked out; otherwise InvalidCredentials for an unknown email and for a wrong
    password alike (same message, same work)."""
    _signing_key(settings)  # 503 before any password is looked at, if tokens cannot be made
    account = _subject("account", rules.normalize_email(email))
    client = _subject("address", address)
    async with db.reading() as session:
        failures = (
            await session.execute(
                select(col(LoginFailure.subject), col(LoginFailure.created_at)).where(
                    col(LoginFailure.subject).in_([account, client]),
                    col(LoginFailure.created_at) > now - rules.LOGIN_FAILURE_WINDOW,
                )
            )
        ).all()
        user = (
            await session.execute(
                select(User).where(col(User.email) == rules.normalize_email(email))
            )
        ).scalar_one_or_none()
    waits = [
        rules.lockout_retry_after_s([at for who, at in failures if who == subject], now)
        for subject in (account, client)
    ]
    locked = [wait for wait in waits if wait is not None]
    if locked:
        raise LoginLocked(max(locked))
    if not await _password_matches(user.password_hash if user else None, password[:1024]):
        async with db.transaction() as session:
            session.add_all(
                [
                    LoginFailure(subject=account, created_at=now),
                    LoginFailure(subject=client, created_at=now),
                ]
            )
        raise InvalidCredentials()
    assert user is not None
    async with db.transaction() as session:
        await session.execute(delete(LoginFailure).where(col(LoginFailure.subject) == account))
        if _hasher().check_needs_rehash(user.password_hash):
            rehashed = await hash_password(password)
            await session.execute(
                update(User).where(col(User.id) == user.id).values(password_hash=rehashed)
            )
        user_session = UserSession(
            id=new_id("ses"),
            user_id=user.id,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.refresh_token_ttl_s),
        )
        session.add(user_session)
        await session.flush()
        refresh_token = _new_refresh_token(session, user_session.id, now)
    return TokenPair(
        access_token=_access_token(settings, user.id, user_session.id, now),
        expires_in=settings.access_token_ttl_s,
        refresh_token=refresh_token,
    )


def _new_refresh_token(session: AsyncSession, session_id: str, now: datetime) -> str:
    raw = new_secret(REFRESH_PREFIX)
    session.add(
        RefreshToken(session_id=session_id, token_hash=credentials.hash_secret(raw), created_at=now)
    )
    return raw


async def refresh(db: Database, settings: Settings, refresh_token: str, now: datetime) -> TokenPair:
    """The next tokens of a session, for its latest refresh token (which is then used up). A
    refresh token used a second time revokes its session, so both the thief and the owner must
    sign in again. InvalidRefreshToken for an unknown, used, expired or revoked one."""
    _signing_key(settings)
    token_hash = credentials.hash_secret(refresh_token.strip())
    reused = False
    async with db.transaction() as session:
        found = (
            await session.execute(
                select(RefreshToken, UserSession)
                .join(UserSession, col(UserSession.id) == col(RefreshToken.session_id))
                .where(col(RefreshToken.token_hash) == token_hash)
            )
        ).one_or_none()
        if found is None:
            raise InvalidRefreshToken("the refresh token is not valid")
        token, user_session = found
        if user_session.revoked_at is not None or user_session.expires_at <= now:
            raise InvalidRefreshToken("this sign-in has ended; sign in again")
        taken = await session.execute(
            update(RefreshToken)
            .where(col(RefreshToken.seq) == token.seq, col(RefreshToken.used_at).is_(None))
            .values(used_at=now)
        )
        if getattr(taken, "rowcount", 0) != 1:
            reused = True
            await session.execute(
                update(UserSession)
                .where(col(UserSession.id) == user_session.id)
                .values(revoked_at=now)
            )
        else:
            next_token = _new_refresh_token(session, user_session.id, now)
    if reused:
        raise InvalidRefreshToken(
            "this refresh token was already used: its whole sign-in is revoked; sign in again"
        )
    return TokenPair(
        access_token=_access_token(settings, user_session.user_id, user_session.id, now),
        expires_in=settings.access_token_ttl_s,
        refresh_token=next_token,
    )


async def sign_out(db: Database, user: UserContext, now: datetime) -> None:
    """Ends the sign-in: its access tokens and refresh tokens stop at once."""
    async with db.transaction() as session:
        await session.execute(
            update(UserSession)
            .where(col(UserSession.id) == user.session_id, col(UserSession.revoked_at).is_(None))
            .values(revoked_at=now)
        )


async def authenticate_user(
    db: Database, settings: Settings, token: str, now: datetime
) -> UserContext:
    """The user behind an access token whose sign-in is still open; InvalidToken otherwise,
    UserTokenRequired for something that is no access token at all (a project key)."""
    if not looks_like_user_token(token):
        raise UserTokenRequired()
    user = _decode(settings, token, now)
    async with db.reading() as session:
        open_session = (
            await session.execute(
                select(col(UserSession.id)).where(
                    col(UserSession.id) == user.session_id,
                    col(UserSession.user_id) == user.user_id,
                    col(UserSession.revoked_at).is_(None),
                    col(UserSession.expires_at) > now,
                )
            )
        ).first()
    if open_session is None:
        raise InvalidToken("this sign-in has ended (signed out or revoked); sign in again")
    return user


# The user, their organizations and projects ----------------------------------------------


async def profile(db: Database, user: UserContext) -> UserProfile:
    async with db.reading() as session:
        row = (
            await session.execute(select(User).where(col(User.id) == user.user_id))
        ).scalar_one_or_none()
        if row is None:
            raise InvalidToken("this account no longer exists")
        organizations = [
            OrganizationRole(id=org_id, name=org_name, role=role)
            for org_id, org_name, role in (
                await session.execute(
                    select(col(Organization.id), col(Organization.name), col(Membership.role))
                    .join(Membership, col(Membership.organization_id) == col(Organization.id))
                    .where(col(Membership.user_id) == user.user_id)
                    .order_by(col(Membership.seq))
                )
            ).tuples()
        ]
    return UserProfile(user=row, organizations=organizations)


async def role_in_project(db: Database, user_id: str, project_id: str) -> tuple[Project, str]:
    """The project and the user's role in its organization; NotFound when it is not a project
    of one of the user's organizations (whether or not it exists elsewhere)."""
    async with db.reading() as session:
        found = (
            await session.execute(
                select(Project, col(Membership.role))
                .join(Membership, col(Membership.organization_id) == col(Project.organization_id))
                .where(col(Project.id) == project_id, col(Membership.user_id) == user_id)
            )
        ).one_or_none()
    if found is None:
        raise NotFound(f"project {project_id!r} not found", param=PROJECT_HEADER)
    return found[0], str(found[1])


async def project_access(
    db: Database, settings: Settings, token: str, project_id: str | None, now: datetime
) -> AuthContext:
    """A user token acting on the project its `Simwire-Project` header names, with the scopes
    of the user's role there (app/domain/accounts.ROLE_SCOPES)."""
    user = await authenticate_user(db, settings, token, now)
    if not project_id or not project_id.strip():
        raise ProjectRequired(
            f"a user token acts on one project: name it in the {PROJECT_HEADER} header "
            "(prj_…; GET /v1/projects lists yours)",
            param=PROJECT_HEADER,
        )
    project, role = await role_in_project(db, user.user_id, project_id.strip())
    return AuthContext(
        project_id=project.id,
        key_id="",
        scopes=rules.scopes_of_role(role),
        organization_id=project.organization_id,
        user_id=user.user_id,
        role=role,
    )


async def list_user_projects(db: Database, user: UserContext) -> list[UserProject]:
    async with db.reading() as session:
        rows = (
            await session.execute(
                select(Project, col(Membership.role))
                .join(Membership, col(Membership.organization_id) == col(Project.organization_id))
                .where(col(Membership.user_id) == user.user_id)
                .order_by(col(Project.seq))
            )
        ).all()
    return [UserProject(project=project, role=str(role)) for project, role in rows]


async def create_user_project(
    db: Database,
    user: UserContext,
    name: str,
    organization_id: str | None = None,
    mode: str = "live",
) -> CreatedProject:
    """A project (and its first key, every scope) in an organization the user owns or
    administers: `organization_id`, else the first such. Forbidden for a member; NotFound for
    an organization the user is not in."""
    managed = [org for org in (await profile(db, user)).organizations if rules.manages(org.role)]
    if organization_id is not None:
        mine = {org.id: org for org in (await profile(db, user)).organizations}
        if organization_id not in mine:
            raise NotFound(f"organization {organization_id!r} not found", param="organization_id")
        if not rules.manages(mine[organization_id].role):
            raise Forbidden("only an organization's owners and admins create its projects")
        target = organization_id
    elif managed:
        target = managed[0].id
    else:
        raise Forbidden("only an organization's owners and admins create its projects")
    return await projects.create_project(db, name, organization=target, mode=mode)


async def purge_login_failures(db: Database, now: datetime) -> int:
    """Forgets failed sign-ins older than the lockout window; how many."""
    async with db.transaction() as session:
        result = await session.execute(
            delete(LoginFailure).where(
                col(LoginFailure.created_at) <= now - rules.LOGIN_FAILURE_WINDOW
            )
        )
    return int(getattr(result, "rowcount", 0) or 0)
