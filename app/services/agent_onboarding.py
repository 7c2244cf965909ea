"""Agent self-registration and its human claim; then the owners' view of agent keys (list,
regenerate, re-scope, revoke) and the purge of registrations nobody claimed.

An agent registers with no account (`POST /v1/agents/register`) and gets an API key that is
inactive: it has no `api_keys` row, only its hash in the registration, so every route but
`GET /v1/agents/status` refuses it with 403 `agent_unclaimed` and the claim link. The agent
hands its human the link and an 8-character verification code; within 72 hours a signed-in
owner or admin enters the code, picks a project of their organization and the scopes to grant,
and the claim makes the key's row (same hash, exactly those scopes) in one transaction with the
`agent.claimed` event. Five wrong codes lock the claim for good.

The claim is an API, so any client of a signed-in user can drive it: the human's browser opens
`claim_url` = `{public base}/dashboard/claim/{claim_token}` (app/dashboard: the page shows
`claim_view` and its form calls `claim`, as `GET` and `POST /v1/agents/claims/{claim_token}`
`{verification_code, project_id, scopes, name?}` do for any HTTP client with a user token).

`callback_url`: checked like a webhook URL at registration; its signing secret (`whsec_…`,
shown once in the 201) is sealed under the id its endpoint will have. Endpoints belong to a
project, and an unclaimed agent has none, so the endpoint row is made at the claim, in the
claimed project, hidden from the project's webhook routes (`request_id` holds the registration
id, which the fan-out never routes to: app/webhooks/fanout.py sends endpoints with a
`request_id` only the events of that paid request). The claim itself makes the one delivery of
its `agent.claimed` event to that endpoint (as a webhook test does), and leaves the event to the
fan-out for the project's own endpoints that subscribe to `agent.claimed`. The delivery worker
sends it, signed like every delivery."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import (
    AgentClaimOpening,
    AgentRegistration,
    ApiKey,
    Webhook,
    WebhookDelivery,
)
from app.domain import accounts as account_rules
from app.domain import agent_claims as rules
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
from app.services import access_cache, accounts, pending_agents
from app.services.accounts import UserContext
from app.services.events import record_event
from app.services.ids import iso_utc, new_id, new_secret, utcnow
from app.settings import Settings
from app.webhooks.fanout import new_delivery
from app.webhooks.secrets import SecretBox, new_signing_secret
from app.webhooks.ssrf import check_webhook_url

AGENT_CLAIMED = "agent.claimed"
CLAIM_PATH = "/dashboard/claim/"


class AgentAlreadyRegistered(Conflict):
    code = "agent_already_registered"


class AgentRegistrationsLimited(RateLimited):
    def __init__(self, retry_after_s: int, per_hour: int) -> None:
        super().__init__(
            f"at most {per_hour} agent registrations per client address per hour",
            retry_after_s=retry_after_s,
        )
        self.details["limit"] = "agent_registrations"


class ClaimNotFound(NotFound):
    code = "claim_not_found"

    def __init__(self) -> None:
        super().__init__("no agent registration has this claim link")


class ClaimExpired(Conflict):
    code = "claim_expired"


class AlreadyClaimed(Conflict):
    code = "already_claimed"


class ClaimLocked(Forbidden):
    code = "claim_locked"

    def __init__(self) -> None:
        super().__init__(
            f"{rules.MAX_WRONG_CODES} wrong verification codes locked this claim; the agent "
            "registers again for a new link and code"
        )


class WrongVerificationCode(Unprocessable):
    code = "invalid_verification_code"


class MetadataRefused(Unprocessable):
    code = "metadata_too_large"


class NameTaken(Unprocessable):
    code = "name_taken"


@dataclass(frozen=True)
class Registered:
    """A new registration with what is shown once: the key, the code, the callback secret."""

    registration: AgentRegistration
    api_key: str = field(repr=False)
    verification_code: str = field(repr=False)
    webhook_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AgentStatus:
    status: str
    registration: AgentRegistration


@dataclass(frozen=True)
class ClaimView:
    """What the human sees before granting: the agent's own words and the scopes on offer."""

    registration: AgentRegistration
    status: str
    locked: bool
    attempts_left: int


@dataclass(frozen=True)
class ClaimedAgent:
    registration: AgentRegistration
    key: ApiKey
    event_id: str


@dataclass(frozen=True)
class AgentKey:
    """A claimed agent with its current key."""

    registration: AgentRegistration
    key: ApiKey


@dataclass(frozen=True)
class RegeneratedAgent:
    agent: AgentKey
    api_key: str = field(repr=False)


# Registration ----------------------------------------------------------------------------


def _clean_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > rules.MAX_NAME_LENGTH or "\x00" in cleaned:
        raise InvalidInput(
            f"`name` needs 1 to {rules.MAX_NAME_LENGTH} characters, without NUL", param="name"
        )
    return cleaned


def _clean_description(description: str | None) -> str | None:
    if description is None:
        return None
    if len(description) > rules.MAX_DESCRIPTION_LENGTH or "\x00" in description:
        raise InvalidInput(
            f"`description` has at most {rules.MAX_DESCRIPTION_LENGTH} characters, without NUL",
            param="description",
        )
    return description.strip() or None


def _clean_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    if metadata is None:
        return None
    encoded = json.dumps(metadata, separators=(",", ":"))
    if len(encoded.encode()) > rules.MAX_METADATA_BYTES or "\\u0000" in encoded:
        raise MetadataRefused(
            f"`metadata` is at most {rules.MAX_METADATA_BYTES} bytes of JSON, without NUL",
            param="metadata",
        )
    return metadata


def _new_code() -> str:
    return "".join(secrets.choice(rules.CODE_ALPHABET) for _ in range(rules.CODE_LENGTH))


def _box(settings: Settings) -> SecretBox:
    if settings.secret_key is None:
        raise Unavailable(
            "`callback_url` needs an operator secret key to sign callbacks: the server's "
            "operator sets SIMWIRE_SECRET_KEY (32 or more characters)"
        )
    return SecretBox(settings.secret_key.get_secret_value())


async def register_agent(
    db: Database,
    settings: Settings,
    name: str,
    address: str,
    public_base: str,
    description: str | None = None,
    callback_url: str | None = None,
    metadata: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Registered:
    """A registration awaiting its claim, from the client `address`. AgentAlreadyRegistered
    (409, with the existing `claim_url` and `expires_at`) for a name this address registered
    and nobody claimed yet; AgentRegistrationsLimited (429) past the hourly budget;
    InvalidWebhookUrl / WebhookUrlNotAllowed (400) for a `callback_url` Simwire must not call,
    Unavailable without an operator key to seal its secret."""
    moment = now or utcnow()
    agent_name = _clean_name(name)
    about = _clean_description(description)
    extra = _clean_metadata(metadata)
    sealed: str | None = None
    webhook_id: str | None = None
    webhook_secret: str | None = None
    if callback_url is not None:
        box = _box(settings)
        await check_webhook_url(callback_url, settings.webhook_allow_private)
        webhook_id = new_id("wh")
        webhook_secret = new_signing_secret()
        sealed = box.seal(webhook_secret, webhook_id)
    raw_key = new_secret(credentials.API_KEY_PREFIXES[settings.key_mode])
    code = _new_code()
    # The link is the capability: wholly random, like a key.
    claim_token = new_secret("clm_")
    registration = AgentRegistration(
        id=new_id("agt"),
        name=agent_name,
        description=about,
        agent_metadata=extra,
        callback_url=callback_url,
        callback_webhook_id=webhook_id,
        callback_secret_sealed=sealed,
        key_hash=credentials.hash_secret(raw_key),
        display_prefix=credentials.display_prefix(raw_key),
        claim_token=claim_token,
        claim_url=public_base.rstrip("/") + CLAIM_PATH + claim_token,
        code_hash=credentials.hash_secret(code),
        registered_from=address[:64],
        created_at=moment,
        expires_at=moment + rules.CLAIM_TTL,
    )
    per_hour = settings.agent_registrations_per_hour if settings.rate_limits else 0
    async with db.transaction() as session:
        if not db.is_sqlite:
            # One registration per address at a time, so the duplicate and budget checks hold
            # across instances (SQLite writers are serialized already).
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:who))"),
                {"who": "agent-registration:" + registration.registered_from},
            )
        existing = (
            await session.execute(
                select(AgentRegistration).where(
                    col(AgentRegistration.registered_from) == registration.registered_from,
                    col(AgentRegistration.name) == agent_name,
                    col(AgentRegistration.claimed_at).is_(None),
                    col(AgentRegistration.expires_at) > moment,
                )
            )
        ).scalar_one_or_none()
        if existing is not None:
            raise AgentAlreadyRegistered(
                f"an agent named {agent_name!r} from this address awaits its claim: give the "
                "human its claim_url (and the code you were given)",
                claim_url=existing.claim_url,
                expires_at=iso_utc(existing.expires_at),
            )
        recent = list(
            (
                await session.execute(
                    select(col(AgentRegistration.created_at)).where(
                        col(AgentRegistration.registered_from) == registration.registered_from,
                        col(AgentRegistration.created_at) > moment - rules.HOUR,
                    )
                )
            ).scalars()
        )
        wait = rules.registrations_retry_after_s(recent, moment, per_hour)
        if wait is not None:
            raise AgentRegistrationsLimited(wait, per_hour)
        session.add(registration)
    return Registered(registration, raw_key, code, webhook_secret)


async def _registration_of_key(db: Database, raw_key: str) -> AgentRegistration | None:
    async with db.reading() as session:
        return (
            await session.execute(
                select(AgentRegistration).where(
                    col(AgentRegistration.key_hash) == credentials.hash_secret(raw_key)
                )
            )
        ).scalar_one_or_none()


async def status_of_key(db: Database, raw_key: str, now: datetime) -> AgentStatus:
    """Where the registration behind an agent's key stands: unclaimed, claimed or expired.
    Unauthorized for a key that is neither an agent's nor any project's; NotFound for a project
    key that did not come from a registration."""
    if not credentials.is_api_key(raw_key):
        raise Unauthorized("the API key is malformed; keys look like sw_live_ + 32 hex")
    registration = await _registration_of_key(db, raw_key)
    if registration is None:
        from app.services.projects import authenticate

        await authenticate(db, raw_key)
        raise NotFound(
            "this key did not come from an agent registration (POST /v1/agents/register)"
        )
    state = rules.claim_state(
        registration.expires_at, registration.claimed_at, registration.wrong_codes, now
    )
    return AgentStatus(state.status, registration)


# Claim -----------------------------------------------------------------------------------


async def _by_claim_token(session: AsyncSession, claim_token: str, lock: bool) -> AgentRegistration:
    query = select(AgentRegistration).where(col(AgentRegistration.claim_token) == claim_token)
    if lock:
        query = query.with_for_update()
    found = (await session.execute(query)).scalar_one_or_none()
    if found is None:
        raise ClaimNotFound()
    return found


async def claim_view(db: Database, claim_token: str, now: datetime) -> ClaimView:
    """What a claim link shows. ClaimNotFound for a link no registration has."""
    async with db.reading() as session:
        registration = await _by_claim_token(session, claim_token, lock=False)
    state = rules.claim_state(
        registration.expires_at, registration.claimed_at, registration.wrong_codes, now
    )
    return ClaimView(
        registration=registration,
        status=state.status,
        locked=state.locked,
        attempts_left=max(0, rules.MAX_WRONG_CODES - registration.wrong_codes),
    )


def agent_object(registration: AgentRegistration, key: ApiKey | None = None) -> dict[str, Any]:
    """An agent as the API shows it (and as the `agent.claimed` event's `data`)."""
    return {
        "id": registration.id,
        "name": registration.name,
        "description": registration.description,
        "metadata": registration.agent_metadata,
        "status": (
            "revoked"
            if key is not None and key.revoked_at is not None
            else rules.CLAIMED
            if registration.claimed_at is not None
            else rules.UNCLAIMED
        ),
        "project_id": registration.project_id,
        "organization_id": registration.organization_id,
        "key_id": key.id if key else registration.key_id,
        "display_prefix": key.display_prefix if key else registration.display_prefix,
        "scopes": list(key.scopes) if key else [],
        "callback_url": registration.callback_url,
        "claimed_by": registration.claimed_by,
        "claimed_at": iso_utc(registration.claimed_at) if registration.claimed_at else None,
        "created_at": iso_utc(registration.created_at),
    }


async def claim(
    db: Database,
    user: UserContext,
    claim_token: str,
    verification_code: str,
    project_id: str,
    scopes: list[str] | None,
    now: datetime,
    name: str | None = None,
) -> ClaimedAgent:
    """The human's claim: the agent's key becomes active in `project_id` with exactly the
    granted `scopes` (default messages.read, numbers.read), and `agent.claimed` is recorded
    (and delivered to the agent's callback_url when it gave one).

    Refusals, in the order they are checked: InvalidInput (400) for scopes a claim cannot
    grant; NotFound for a project outside the user's organizations, Forbidden for a member
    (owners and admins claim); ClaimNotFound; AlreadyClaimed / ClaimExpired (409); ClaimLocked
    (403) after 5 wrong codes; WrongVerificationCode (422, with `attempts_left`; the fifth
    wrong code locks the claim); NameTaken (422 on `name`) when a key of the project has the
    name already."""
    try:
        granted = rules.granted_scopes(scopes)
    except ValueError as exc:
        raise InvalidInput(str(exc), param="scopes") from None
    key_name = _clean_name(name) if name is not None else None
    typed = rules.normalize_code(verification_code)
    project, role = await accounts.role_in_project(db, user.user_id, project_id)
    if not account_rules.manages(role):
        raise Forbidden("only the organization's owners and admins claim agents")
    refusal: Exception | None = None
    async with db.transaction() as session:
        registration = await _by_claim_token(session, claim_token, lock=not db.is_sqlite)
        state = rules.claim_state(
            registration.expires_at, registration.claimed_at, registration.wrong_codes, now
        )
        if state.status == rules.CLAIMED:
            raise AlreadyClaimed("this agent is claimed already")
        if state.status == rules.EXPIRED:
            raise ClaimExpired(
                "this claim expired (72 hours after the agent registered); the agent registers "
                "again for a new link and code"
            )
        if state.locked:
            raise ClaimLocked()
        if not rules.is_code_shaped(typed) or not credentials.secret_matches(
            typed, registration.code_hash
        ):
            registration.wrong_codes += 1
            left = rules.MAX_WRONG_CODES - registration.wrong_codes
            # A claim begun for this organization: its agents pages list the agent as pending.
            await pending_agents.note_opening(
                session, registration.id, [project.organization_id], user.user_id, now
            )
            refusal = (
                ClaimLocked()
                if left <= 0
                else WrongVerificationCode(
                    "the verification code is wrong", param="verification_code", attempts_left=left
                )
            )
        else:
            claimed_name = key_name or registration.name
            taken = (
                await session.execute(
                    select(func.count())
                    .select_from(ApiKey)
                    .where(
                        col(ApiKey.project_id) == project.id,
                        col(ApiKey.name) == claimed_name,
                        col(ApiKey.revoked_at).is_(None),
                    )
                )
            ).scalar_one()
            if taken:
                raise NameTaken(
                    f"a key of this project is named {claimed_name!r}; give the agent another name",
                    param="name",
                )
            key = ApiKey(
                id=new_id("key"),
                project_id=project.id,
                name=claimed_name,
                display_prefix=registration.display_prefix,
                key_hash=registration.key_hash,
                scopes=granted,
                created_at=now,
            )
            session.add(key)
            registration.name = claimed_name
            registration.claimed_at = now
            registration.claimed_by = user.user_id
            registration.organization_id = project.organization_id
            registration.project_id = project.id
            registration.key_id = key.id
            await pending_agents.forget_openings(session, registration.id)
            await session.flush()
            event = await record_event(
                session, project.id, AGENT_CLAIMED, agent_object(registration, key), now=now
            )
            if registration.callback_url and registration.callback_webhook_id:
                _add_callback(session, registration, project.id, now)
                await session.flush()
                session.add(
                    WebhookDelivery(
                        **new_delivery(project.id, registration.callback_webhook_id, event, now)
                    )
                )
    if refusal is not None:
        raise refusal
    return ClaimedAgent(registration=registration, key=key, event_id=event.id)


def _add_callback(
    session: AsyncSession, registration: AgentRegistration, project_id: str, now: datetime
) -> None:
    """The agent's hidden endpoint, in the project it is claimed into (see the module doc)."""
    assert registration.callback_webhook_id and registration.callback_secret_sealed
    session.add(
        Webhook(
            id=registration.callback_webhook_id,
            project_id=project_id,
            url=str(registration.callback_url),
            events=[AGENT_CLAIMED],
            description=f"callback_url of agent {registration.id}",
            enabled=True,
            secret_sealed=registration.callback_secret_sealed,
            request_id=registration.id,
            created_at=now,
            updated_at=now,
        )
    )


# Owners: the project's agents -------------------------------------------------------------


async def list_agents(db: Database, project_id: str) -> list[AgentKey]:
    """The agents claimed into the project with their current keys (revoked ones too)."""
    async with db.reading() as session:
        rows = (
            await session.execute(
                select(AgentRegistration, ApiKey)
                .join(ApiKey, col(ApiKey.id) == col(AgentRegistration.key_id))
                .where(col(AgentRegistration.project_id) == project_id)
                .order_by(col(AgentRegistration.claimed_at).desc(), col(AgentRegistration.seq))
            )
        ).all()
    return [AgentKey(registration, key) for registration, key in rows]


async def _owned(session: AsyncSession, project_id: str, agent_id: str) -> AgentKey:
    found = (
        await session.execute(
            select(AgentRegistration, ApiKey)
            .join(ApiKey, col(ApiKey.id) == col(AgentRegistration.key_id))
            .where(
                col(AgentRegistration.id) == agent_id,
                col(AgentRegistration.project_id) == project_id,
            )
        )
    ).one_or_none()
    if found is None:
        raise NotFound(f"agent {agent_id!r} not found")
    return AgentKey(found[0], found[1])


async def get_agent(db: Database, project_id: str, agent_id: str) -> AgentKey:
    async with db.reading() as session:
        return await _owned(session, project_id, agent_id)


async def rescope_agent(
    db: Database, project_id: str, agent_id: str, scopes: list[str]
) -> AgentKey:
    """Replaces the scopes of the agent's key (only those a claim can grant); the change holds
    at once in every process (app/services/access_cache.py)."""
    try:
        granted = rules.granted_scopes(scopes)
    except ValueError as exc:
        raise InvalidInput(str(exc), param="scopes") from None
    async with db.transaction() as session:
        agent = await _owned(session, project_id, agent_id)
        if agent.key.revoked_at is not None:
            raise Conflict(f"agent {agent_id!r} is revoked", param="agent_id")
        agent.key.scopes = granted
        change = {"key_hashes": [agent.key.key_hash]}
        await access_cache.announce(session, db, change)
    access_cache.forget(db, change)
    return agent


async def regenerate_agent_key(
    db: Database, project_id: str, agent_id: str, mode: str = "live"
) -> RegeneratedAgent:
    """A new key for the agent with the same scopes; the old one stops in the same
    transaction."""
    async with db.transaction() as session:
        agent = await _owned(session, project_id, agent_id)
        old = agent.key
        if old.revoked_at is not None:
            raise Conflict(f"agent {agent_id!r} is revoked", param="agent_id")
        now = utcnow()
        raw = new_secret(credentials.API_KEY_PREFIXES[mode])
        key = ApiKey(
            id=new_id("key"),
            project_id=project_id,
            name=old.name,
            display_prefix=credentials.display_prefix(raw),
            key_hash=credentials.hash_secret(raw),
            scopes=list(old.scopes),
            created_at=now,
        )
        session.add(key)
        old.revoked_at = now
        old.rotated_to = key.id
        agent.registration.key_id = key.id
        agent.registration.key_hash = key.key_hash
        agent.registration.display_prefix = key.display_prefix
        change = {"key_hashes": [old.key_hash]}
        await access_cache.announce(session, db, change)
    access_cache.forget(db, change)
    return RegeneratedAgent(AgentKey(agent.registration, key), raw)


async def revoke_agent(db: Database, project_id: str, agent_id: str) -> AgentKey:
    """Stops the agent's key at once (revoking twice is harmless)."""
    async with db.transaction() as session:
        agent = await _owned(session, project_id, agent_id)
        if agent.key.revoked_at is None:
            agent.key.revoked_at = utcnow()
        change = {"key_hashes": [agent.key.key_hash]}
        await access_cache.announce(session, db, change)
    access_cache.forget(db, change)
    return agent


async def purge_expired_registrations(db: Database, now: datetime) -> int:
    """Deletes registrations nobody claimed, a day after their claim expired (with the
    organizations' openings of them); how many."""
    purged = (
        col(AgentRegistration.claimed_at).is_(None),
        col(AgentRegistration.expires_at) <= now - rules.EXPIRED_KEPT,
    )
    async with db.transaction() as session:
        await session.execute(
            delete(AgentClaimOpening).where(
                col(AgentClaimOpening.registration_id).in_(
                    select(col(AgentRegistration.id)).where(*purged)
                )
            )
        )
        result = await session.execute(delete(AgentRegistration).where(*purged))
    return int(getattr(result, "rowcount", 0) or 0)
