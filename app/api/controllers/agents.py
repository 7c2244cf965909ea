"""Agents that onboard themselves: register (no auth), read their own status with the inactive
key, the human's claim (read the claim with its link; claim it with a user token), and the
owners' routes over a project's agent keys (scope `keys.manage`: list, read, re-scope,
regenerate, revoke). The claim's flow and the dashboard page it leaves room for are described
in app/services/agent_onboarding.py."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import Provide

from app.api.agent_docs import public_base
from app.api.auth import presented_key, request_now, require_scope, require_user
from app.api.openapi import KEY_SECURITY, USER_SECURITY, body_schema, error_responses, typed_body
from app.api.ratelimit import bucket_of_address
from app.db.engine import Database
from app.domain import agent_claims as rules
from app.domain.errors import Unauthorized
from app.domain.webhook_urls import MAX_URL_LENGTH, URL_PATTERN
from app.services import agent_onboarding
from app.services.accounts import UserContext
from app.services.agent_onboarding import AgentKey
from app.services.ids import iso_utc
from app.services.projects import AuthContext
from app.settings import Settings

_NO_NUL = "^[^\u0000]*$"
AgentName = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=rules.MAX_NAME_LENGTH, pattern=r"^[^\u0000]*\S[^\u0000]*$"
    ),
]
_GRANTABLE = [*rules.DEFAULT_SCOPES, *rules.OPTIONAL_SCOPES]


class RegisterAgentIn(msgspec.Struct, forbid_unknown_fields=True):
    name: AgentName
    description: (
        Annotated[str, msgspec.Meta(max_length=rules.MAX_DESCRIPTION_LENGTH, pattern=_NO_NUL)]
        | None
    ) = None
    callback_url: Annotated[str, msgspec.Meta(max_length=MAX_URL_LENGTH)] | None = None
    """Where `agent.claimed` is POSTed once a human claims this agent, signed with
    `webhook_secret` (checked like a webhook URL: https and a public address)."""
    metadata: dict[str, Any] | None = None
    """Anything the agent wants its human to see (at most 4,096 bytes of JSON, else 422
    `metadata_too_large`)."""


class AgentRegisteredOut(msgspec.Struct, omit_defaults=True):
    """`api_key` is inactive until the claim; `claim_url` and `verification_code` go to the
    human, who has until `expires_at` (72 h). `api_key`, the code and `webhook_secret` (only
    with a `callback_url`) are shown this once."""

    agent_id: str
    api_key: str
    claim_url: str
    verification_code: str
    expires_at: str
    message: str
    webhook_secret: str | None = None


class AgentStatusOut(msgspec.Struct, omit_defaults=True):
    """`unclaimed` (with `claim_url` and `expires_at`), `claimed` (with `organization_id`,
    `project_id`, `claimed_at`) or `expired`."""

    status: str
    name: str
    claim_url: str | None = None
    expires_at: str | None = None
    organization_id: str | None = None
    project_id: str | None = None
    claimed_at: str | None = None


class ScopeOffer(msgspec.Struct):
    default: list[str]
    """Ticked unless the human unticks them."""
    optional: list[str]


class ClaimAgentOut(msgspec.Struct):
    """What the agent said about itself when it registered."""

    name: str
    description: str | None
    metadata: dict[str, Any] | None
    callback_url: str | None
    registered_at: str


class ClaimViewOut(msgspec.Struct):
    """A claim as its link shows it: `status` unclaimed, claimed or expired; `locked` after 5
    wrong codes; the scopes a claim may grant."""

    agent: ClaimAgentOut
    status: str
    locked: bool
    attempts_left: int
    expires_at: str
    scopes: ScopeOffer


class ClaimIn(msgspec.Struct, forbid_unknown_fields=True):
    verification_code: Annotated[str, msgspec.Meta(max_length=64)]
    project_id: Annotated[str, msgspec.Meta(max_length=40, pattern=_NO_NUL)]
    scopes: list[str] | None = None
    """Default: messages.read and numbers.read."""
    name: AgentName | None = None
    """The key's name in the project (default: the agent's own)."""


class AgentOut(msgspec.Struct):
    """A claimed agent and its key: `status` claimed or revoked."""

    id: str
    name: str
    description: str | None
    metadata: dict[str, Any] | None
    status: str
    project_id: str | None
    organization_id: str | None
    key_id: str | None
    display_prefix: str
    scopes: list[str]
    callback_url: str | None
    claimed_by: str | None
    claimed_at: str | None
    created_at: str


class RegeneratedAgentOut(AgentOut):
    api_key: str
    """The agent's new key, shown this once; the old one has stopped."""


class AgentList(msgspec.Struct):
    data: list[AgentOut]
    count: int


class RescopeIn(msgspec.Struct, forbid_unknown_fields=True):
    scopes: list[str]


_SCOPES = {
    "type": "array",
    "items": {"enum": _GRANTABLE},
    "description": "Scopes a claim may grant",
}
_CLAIM_BODY = typed_body(body_schema(ClaimIn, scopes={"anyOf": [_SCOPES, {"type": "null"}]}))
_RESCOPE_BODY = typed_body(body_schema(RescopeIn, scopes=_SCOPES))
_REGISTER_BODY = typed_body(
    body_schema(
        RegisterAgentIn,
        callback_url={
            "anyOf": [
                {
                    "type": "string",
                    "maxLength": MAX_URL_LENGTH,
                    "pattern": URL_PATTERN,
                    "description": "https and a public address (else 400 "
                    "`webhook_url_not_allowed`, saying why)",
                },
                {"type": "null"},
            ]
        },
    )
)


def agent_out(agent: AgentKey) -> AgentOut:
    return AgentOut(**agent_onboarding.agent_object(agent.registration, agent.key))


class AgentOnboardingController(Controller):
    path = "/v1/agents"
    tags = ["agents"]

    @post(
        "/register",
        summary="An agent registers itself: an inactive key, a claim link and a code for its human",
        operation_class=_REGISTER_BODY,
        responses=error_responses(400, 409, 413, 422),
    )
    async def register(
        self,
        request: Request[Any, Any, Any],
        db: Database,
        settings: Settings,
        data: RegisterAgentIn,
    ) -> AgentRegisteredOut:
        limits = request.app.state["rate_limits"]
        registered = await agent_onboarding.register_agent(
            db,
            settings,
            data.name,
            address=bucket_of_address(limits.addresses.of(request.scope)),
            public_base=public_base(settings, request=request),
            description=data.description,
            callback_url=data.callback_url,
            metadata=data.metadata,
            now=request_now(request),
        )
        row = registered.registration
        return AgentRegisteredOut(
            agent_id=row.id,
            api_key=registered.api_key,
            claim_url=row.claim_url,
            verification_code=registered.verification_code,
            expires_at=iso_utc(row.expires_at),
            message=(
                "Give your human the claim_url and the verification_code. Your api_key works "
                "once they claim you (GET /v1/agents/status tells you when); until then every "
                "other route answers 403 agent_unclaimed."
            ),
            webhook_secret=registered.webhook_secret,
        )

    @get(
        "/status",
        summary="The agent's own claim status, with its (possibly inactive) key",
        security=KEY_SECURITY[:2],
        responses=error_responses(401, 404),
    )
    async def status(self, request: Request[Any, Any, Any], db: Database) -> AgentStatusOut:
        raw = presented_key(request)
        if raw is None:
            raise Unauthorized("send the agent's key: 'Authorization: Bearer sw_live_…'")
        found = await agent_onboarding.status_of_key(db, raw, request_now(request))
        row = found.registration
        if found.status == rules.CLAIMED:
            return AgentStatusOut(
                status=found.status,
                name=row.name,
                organization_id=row.organization_id,
                project_id=row.project_id,
                claimed_at=iso_utc(row.claimed_at) if row.claimed_at else None,
            )
        if found.status == rules.UNCLAIMED:
            return AgentStatusOut(
                status=found.status,
                name=row.name,
                claim_url=row.claim_url,
                expires_at=iso_utc(row.expires_at),
            )
        return AgentStatusOut(
            status=found.status, name=row.name, expires_at=iso_utc(row.expires_at)
        )

    @get(
        "/claims/{claim_token:str}",
        summary="A claim as its link shows it: what the agent asked for, the scopes on offer",
        responses=error_responses(404),
    )
    async def read_claim(
        self, request: Request[Any, Any, Any], db: Database, claim_token: str
    ) -> ClaimViewOut:
        view = await agent_onboarding.claim_view(db, claim_token, request_now(request))
        row = view.registration
        return ClaimViewOut(
            agent=ClaimAgentOut(
                name=row.name,
                description=row.description,
                metadata=row.agent_metadata,
                callback_url=row.callback_url,
                registered_at=iso_utc(row.created_at),
            ),
            status=view.status,
            locked=view.locked,
            attempts_left=view.attempts_left,
            expires_at=iso_utc(row.expires_at),
            scopes=ScopeOffer(
                default=list(rules.DEFAULT_SCOPES), optional=list(rules.OPTIONAL_SCOPES)
            ),
        )

    @post(
        "/claims/{claim_token:str}",
        status_code=200,
        summary="Claim an agent into a project with the verification code and chosen scopes",
        dependencies={"user": Provide(require_user)},
        security=USER_SECURITY,
        operation_class=_CLAIM_BODY,
        responses=error_responses(400, 401, 403, 404, 409, 413, 422),
    )
    async def claim(
        self,
        request: Request[Any, Any, Any],
        db: Database,
        user: UserContext,
        claim_token: str,
        data: ClaimIn,
    ) -> AgentOut:
        claimed = await agent_onboarding.claim(
            db,
            user,
            claim_token,
            data.verification_code,
            data.project_id,
            data.scopes,
            request_now(request),
            name=data.name,
        )
        return agent_out(AgentKey(claimed.registration, claimed.key))


class AgentKeyController(Controller):
    """A project's claimed agents (owners and admins with a user token, or a key with
    `keys.manage`)."""

    path = "/v1/agents"
    tags = ["agents"]
    security = KEY_SECURITY
    dependencies = {"auth": Provide(require_scope("keys.manage"))}

    @get("/", summary="The agents claimed into this project", responses=error_responses(401, 403))
    async def list_agents(self, db: Database, auth: AuthContext) -> AgentList:
        found = await agent_onboarding.list_agents(db, auth.project_id)
        return AgentList(data=[agent_out(agent) for agent in found], count=len(found))

    @get(
        "/{agent_id:str}",
        summary="One agent of this project",
        responses=error_responses(401, 403, 404),
    )
    async def get_agent(self, db: Database, auth: AuthContext, agent_id: str) -> AgentOut:
        return agent_out(await agent_onboarding.get_agent(db, auth.project_id, agent_id))

    @patch(
        "/{agent_id:str}",
        summary="Replace the scopes of an agent's key",
        operation_class=_RESCOPE_BODY,
        responses=error_responses(400, 401, 403, 404, 409, 413),
    )
    async def rescope_agent(
        self, db: Database, auth: AuthContext, agent_id: str, data: RescopeIn
    ) -> AgentOut:
        return agent_out(
            await agent_onboarding.rescope_agent(db, auth.project_id, agent_id, data.scopes)
        )

    @post(
        "/{agent_id:str}/regenerate",
        status_code=201,
        summary="A new key for the agent; the old one stops at once",
        responses=error_responses(401, 403, 404, 409),
    )
    async def regenerate_agent(
        self, db: Database, auth: AuthContext, settings: Settings, agent_id: str
    ) -> RegeneratedAgentOut:
        done = await agent_onboarding.regenerate_agent_key(
            db, auth.project_id, agent_id, settings.key_mode
        )
        fields = agent_onboarding.agent_object(done.agent.registration, done.agent.key)
        return RegeneratedAgentOut(**fields, api_key=done.api_key)

    @delete(
        "/{agent_id:str}",
        status_code=200,
        summary="Revoke an agent's key at once",
        responses=error_responses(401, 403, 404),
    )
    async def revoke_agent(self, db: Database, auth: AuthContext, agent_id: str) -> AgentOut:
        return agent_out(await agent_onboarding.revoke_agent(db, auth.project_id, agent_id))
