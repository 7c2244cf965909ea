"""Projects and API keys: create, authenticate, list, revoke, rotate."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlmodel import col

from app.db.engine import Database
from app.db.models import AgentRegistration, ApiKey, Organization, Project, ProjectPolicy
from app.db.repositories.projects import ApiKeyRepository, ProjectRepository
from app.domain import credentials
from app.domain.errors import AgentUnclaimed, Forbidden, InvalidInput, NotFound, Unauthorized
from app.domain.safety import ALWAYS_BLOCKED
from app.services import access_cache
from app.services.ids import iso_utc, new_id, new_secret, utcnow


@dataclass(frozen=True)
class AuthContext:
    """Who is calling: one key of one project, with its scopes; or a user's access token
    acting on one project of their organization (`user_id` and `role` set, `key_id` empty),
    with the scopes of that role."""

    project_id: str
    key_id: str
    scopes: tuple[str, ...]
    organization_id: str = ""
    user_id: str = ""
    role: str = ""

    def require(self, scope: str) -> None:
        if not credentials.grants(list(self.scopes), scope):
            if self.user_id:
                raise Forbidden(
                    f"a user with role {self.role!r} lacks the {scope!r} scope here",
                    required_scope=scope,
                )
            raise Forbidden(f"this key lacks the {scope!r} scope", required_scope=scope)


@dataclass(frozen=True)
class IssuedKey:
    """A key as just created: `raw` is shown once and then only its hash exists."""

    key: ApiKey
    raw: str = field(repr=False)


@dataclass(frozen=True)
class CreatedProject:
    organization: Organization
    project: Project
    first_key: IssuedKey


def _new_key_row(
    project_id: str, name: str, scopes: list[str], mode: str, now: datetime
) -> IssuedKey:
    raw = new_secret(credentials.API_KEY_PREFIXES[mode])
    row = ApiKey(
        id=new_id("key"),
        project_id=project_id,
        name=name,
        display_prefix=credentials.display_prefix(raw),
        key_hash=credentials.hash_secret(raw),
        scopes=scopes,
        created_at=now,
    )
    return IssuedKey(key=row, raw=raw)


async def create_project(
    db: Database, name: str, organization: str | None = None, mode: str = "live"
) -> CreatedProject:
    """A project (in an existing organization, found by id or name, or a new one) and its
    first key, holding every scope."""
    name = name.strip()
    if not name:
        raise InvalidInput("a project needs a name")
    now = utcnow()
    async with db.transaction() as session:
        repo = ProjectRepository(session)
        org = await repo.find_organization(organization) if organization else None
        if org is None:
            org = Organization(id=new_id("org"), name=organization or name, created_at=now)
            repo.add(org)
        project = Project(id=new_id("prj"), organization_id=org.id, name=name, created_at=now)
        repo.add(project)
        await session.flush()
        issued = _new_key_row(project.id, "default", list(credentials.SCOPES), mode, now)
        repo.add(issued.key)
    return CreatedProject(organization=org, project=project, first_key=issued)


async def authenticate(db: Database, raw_key: str) -> AuthContext:
    """The caller behind a presented key, or Unauthorized (unknown, malformed or revoked).
    A valid key is remembered for at most the access cache's TTL (app/services/access_cache.py);
    revoking or rotating it drops that at once."""
    if not credentials.is_api_key(raw_key):
        raise Unauthorized("the API key is malformed; keys look like sw_live_ + 32 hex")
    key_hash = credentials.hash_secret(raw_key)
    cache = access_cache.cache_for(db)
    cached = cache.keys.get(key_hash)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    generation = cache.generation
    found = await db.run(
        lambda conn: conn.execute(
            select(
                col(ApiKey.id),
                col(ApiKey.project_id),
                col(ApiKey.key_hash),
                col(ApiKey.scopes),
                col(ApiKey.revoked_at),
                col(Project.organization_id),
            )
            .join(Project, col(Project.id) == col(ApiKey.project_id))
            .where(col(ApiKey.key_hash) == key_hash)
        ).one_or_none(),
        read_only=True,
    )
    if found is None:
        await _refuse_unclaimed_agent(db, key_hash)
        raise Unauthorized("the API key is not valid")
    if not credentials.secret_matches(raw_key, found.key_hash):
        raise Unauthorized("the API key is not valid")
    if found.revoked_at is not None:
        raise Unauthorized("the API key was revoked")
    auth = AuthContext(
        project_id=found.project_id,
        key_id=found.id,
        scopes=tuple(found.scopes),
        organization_id=found.organization_id or "",
    )
    if cache.generation == generation:  # no change landed while we read
        cache.keys.put(key_hash, auth)
    return auth


async def _refuse_unclaimed_agent(db: Database, key_hash: str) -> None:
    """AgentUnclaimed for the key of a self-registered agent that no human has claimed yet
    (app/services/agent_onboarding.py); its key has no `api_keys` row until then."""
    async with db.reading() as session:
        pending = (
            await session.execute(
                select(col(AgentRegistration.claim_url), col(AgentRegistration.expires_at)).where(
                    col(AgentRegistration.key_hash) == key_hash,
                    col(AgentRegistration.claimed_at).is_(None),
                )
            )
        ).one_or_none()
    if pending is not None:
        raise AgentUnclaimed(pending.claim_url, iso_utc(pending.expires_at))


async def get_project(db: Database, project_id: str) -> Project:
    async with db.sessions() as session:
        project = await ProjectRepository(session).get_project(project_id)
    if project is None:
        raise NotFound(f"project {project_id!r} not found")
    return project


async def list_projects(db: Database) -> list[Project]:
    async with db.sessions() as session:
        return await ProjectRepository(session).list_projects()


async def create_key(
    db: Database,
    project_id: str,
    name: str = "",
    scopes: list[str] | None = None,
    mode: str = "live",
) -> IssuedKey:
    try:
        granted = credentials.normalize_scopes(scopes)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    async with db.transaction() as session:
        if await ProjectRepository(session).get_project(project_id) is None:
            raise NotFound(f"project {project_id!r} not found")
        issued = _new_key_row(project_id, name, granted, mode, utcnow())
        ApiKeyRepository(session).add(issued.key)
    return issued


async def list_keys(db: Database, project_id: str) -> list[ApiKey]:
    async with db.sessions() as session:
        return await ApiKeyRepository(session).list(project_id)


async def revoke_key(db: Database, project_id: str, key_id: str) -> ApiKey:
    """Stops the key at once, in every process (app/services/access_cache.py). Revoking twice
    is harmless."""
    async with db.transaction() as session:
        key = await ApiKeyRepository(session).get(project_id, key_id)
        if key is None:
            raise NotFound(f"key {key_id!r} not found")
        change = {"key_hashes": [key.key_hash]}
        if key.revoked_at is None:
            key.revoked_at = utcnow()
        await access_cache.announce(session, db, change)
    access_cache.forget(db, change)
    return key


async def rotate_key(db: Database, project_id: str, key_id: str, mode: str = "live") -> IssuedKey:
    """A new key with the same name and scopes; the old one stops in the same transaction."""
    async with db.transaction() as session:
        repo = ApiKeyRepository(session)
        old = await repo.get(project_id, key_id)
        if old is None:
            raise NotFound(f"key {key_id!r} not found")
        if old.revoked_at is not None:
            raise InvalidInput(f"key {key_id!r} is revoked and cannot be rotated")
        now = utcnow()
        issued = _new_key_row(project_id, old.name, list(old.scopes), mode, now)
        repo.add(issued.key)
        old.revoked_at = now
        old.rotated_to = issued.key.id
        change = {"key_hashes": [old.key_hash]}
        await access_cache.announce(session, db, change)
    access_cache.forget(db, change)
    return issued


class Keep(enum.Enum):
    """For a policy part where None is a value of its own: leave the part as it is."""

    KEEP = "keep"


class InvalidPolicy(InvalidInput):
    """A policy value that cannot be: `param` names the field."""

    code = "invalid_policy"


# A project's per-recipient limits stay in this range (None: no limit).
MAX_RECIPIENT_LIMIT = 100_000


async def set_policy(
    db: Database,
    project_id: str,
    default_region: str | None = None,
    allowed_categories: list[str] | None = None,
    blocked_terms: list[str] | None = None,
    allowed_domains: list[str] | None = None,
    credits_low_threshold_atomic: int | None | Keep = Keep.KEEP,
    recipient_per_hour: int | None | Keep = Keep.KEEP,
    recipient_per_day: int | None | Keep = Keep.KEEP,
    allow_high_cost_destinations: bool | None = None,
) -> ProjectPolicy:
    """Replaces the given parts of a project's sending policy (None leaves a part as it is).
    `default_region` is a two-letter region ("" clears it). `credits_low_threshold_atomic`
    (USDC atomic units, >= 0) is the balance below which a charge records `credits.low`;
    `recipient_per_hour` / `recipient_per_day` (1 to 100,000) cap the project's messages to one
    number; for these three None turns the part off and `Keep.KEEP` leaves it.
    `allow_high_cost_destinations` lets premium-rate, shared-cost and UAN numbers through.
    InvalidPolicy (400, with `param`) for a value out of range or a category that can never be
    allowed."""
    forbidden = sorted(set(allowed_categories or ()) & set(ALWAYS_BLOCKED))
    if forbidden:
        raise InvalidPolicy(
            f"these categories can never be allowed: {', '.join(forbidden)}",
            param="allowed_categories",
        )
    if default_region and not (
        len(default_region) == 2 and default_region.isascii() and default_region.isalpha()
    ):
        raise InvalidPolicy(
            "`default_region` must be a two-letter ISO region such as US", param="default_region"
        )
    if isinstance(credits_low_threshold_atomic, int) and (
        isinstance(credits_low_threshold_atomic, bool) or credits_low_threshold_atomic < 0
    ):
        raise InvalidPolicy(
            "`credits_low_threshold_atomic` must be an integer of at least 0, or null",
            param="credits_low_threshold_atomic",
        )
    for name, limit in (
        ("recipient_per_hour", recipient_per_hour),
        ("recipient_per_day", recipient_per_day),
    ):
        if isinstance(limit, int) and (
            isinstance(limit, bool) or not 1 <= limit <= MAX_RECIPIENT_LIMIT
        ):
            raise InvalidPolicy(
                f"`{name}` must be an integer from 1 to {MAX_RECIPIENT_LIMIT}, or null",
                param=name,
            )
    async with db.transaction() as session:
        if await ProjectRepository(session).get_project(project_id) is None:
            raise NotFound(f"project {project_id!r} not found")
        policy = (
            await session.execute(
                select(ProjectPolicy).where(col(ProjectPolicy.project_id) == project_id)
            )
        ).scalar_one_or_none()
        if policy is None:
            policy = ProjectPolicy(project_id=project_id, updated_at=utcnow())
            session.add(policy)
        if default_region is not None:
            policy.default_region = default_region.upper() or None
        if allowed_categories is not None:
            policy.allowed_categories = sorted(set(allowed_categories))
        if blocked_terms is not None:
            policy.blocked_terms = list(blocked_terms)
        if allowed_domains is not None:
            policy.allowed_domains = [d.lower() for d in allowed_domains]
        if credits_low_threshold_atomic is not Keep.KEEP:
            policy.credits_low_threshold_atomic = credits_low_threshold_atomic
        if recipient_per_hour is not Keep.KEEP:
            policy.recipient_per_hour = recipient_per_hour
        if recipient_per_day is not Keep.KEEP:
            policy.recipient_per_day = recipient_per_day
        if allow_high_cost_destinations is not None:
            policy.allow_high_cost_destinations = allow_high_cost_destinations
        policy.updated_at = utcnow()
        change = {"project_id": project_id}
        await access_cache.announce(session, db, change)
    access_cache.forget(db, change)
    return policy


async def get_policy(db: Database, project_id: str) -> ProjectPolicy:
    """The project's policy as stored, or the defaults when it never set one."""
    async with db.reading() as session:
        policy = (
            await session.execute(
                select(ProjectPolicy).where(col(ProjectPolicy.project_id) == project_id)
            )
        ).scalar_one_or_none()
    if policy is None:
        return ProjectPolicy(project_id=project_id, updated_at=utcnow())
    return policy
