"""Signing in and out, registering with an invite, the user's projects, and an agent's claim
page (`claim_url`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post

from app.api.auth import request_now
from app.api.errors import status_for
from app.api.ratelimit import bucket_of_address
from app.dashboard.forms import anonymous_form, field, signed_form, ticked
from app.dashboard.render import html, redirect
from app.dashboard.session import CLEAR_STATE, NEW_TOKENS_STATE, SignInRequired, viewer
from app.db.engine import Database
from app.domain import accounts as rules
from app.domain import agent_claims, credentials
from app.domain.errors import RateLimited, SimwireError
from app.services import accounts, agent_onboarding, pending_agents, projects
from app.settings import Settings

HOME = "/dashboard"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path of this server, never another site."""
    if (
        target
        and target.startswith("/dashboard")
        and not any(bad in target for bad in ("//", "\\", "\r", "\n"))
    ):
        return target
    return HOME


def _client_address(request: Request[Any, Any, Any]) -> str:
    return bucket_of_address(request.app.state["rate_limits"].addresses.of(request.scope))


def _refused(
    request: Request[Any, Any, Any], template: str, exc: SimwireError, **context: Any
) -> Response[str]:
    """A signed-out form shown again with why it was refused; a lockout also says when to try
    again, in the page and in `Retry-After`, as the API does."""
    message = exc.message
    retry_after_s = exc.details.get("retry_after_s") if isinstance(exc, RateLimited) else None
    if retry_after_s:
        message = f"{message} (in {max(1, (int(retry_after_s) + 59) // 60)} min)"
    response = html(request, template, status_code=status_for(exc), error=message, **context)
    if retry_after_s:
        response.headers["Retry-After"] = str(int(retry_after_s))
    return response


@get("/")
async def home(request: Request[Any, Any, Any]) -> Response[str]:
    """The first project's overview, or the projects page for a user with none yet."""
    found = await viewer(request)
    if found.projects:
        return redirect(request, f"/dashboard/p/{found.projects[0].project.id}")
    return redirect(request, "/dashboard/projects")


@get("/signin")
async def signin_page(request: Request[Any, Any, Any], next: str | None = None) -> Response[str]:
    return html(request, "signin.html", next=safe_next(next))


@post("/signin")
async def signin(
    request: Request[Any, Any, Any], db: Database, settings: Settings
) -> Response[str]:
    form = await anonymous_form(request)
    email, target = field(form, "email", 254), safe_next(field(form, "next"))
    try:
        pair = await accounts.sign_in(
            db,
            settings,
            email,
            field(form, "password", 1024),
            _client_address(request),
            request_now(request),
        )
    except SimwireError as exc:
        return _refused(request, "signin.html", exc, email=email, next=target)
    request.scope["state"][NEW_TOKENS_STATE] = pair
    return redirect(request, target)


@get("/register")
async def register_page(
    request: Request[Any, Any, Any], next: str | None = None, invite: str | None = None
) -> Response[str]:
    return html(request, "register.html", next=safe_next(next), invite=invite or "")


@post("/register")
async def register(
    request: Request[Any, Any, Any], db: Database, settings: Settings
) -> Response[str]:
    form = await anonymous_form(request)
    email, name = field(form, "email", 254), field(form, "name", 200)
    invite, target = field(form, "invite_code", 1024), safe_next(field(form, "next"))
    password = field(form, "password", rules.MAX_PASSWORD_LENGTH)
    try:
        await accounts.register_user(
            db, settings, email, password, name, invite or None, request_now(request)
        )
        pair = await accounts.sign_in(
            db, settings, email, password, _client_address(request), request_now(request)
        )
    except SimwireError as exc:
        return _refused(
            request, "register.html", exc, email=email, name=name, invite=invite, next=target
        )
    request.scope["state"][NEW_TOKENS_STATE] = pair
    return redirect(request, target)


@post("/signout")
async def signout(request: Request[Any, Any, Any], db: Database) -> Response[str]:
    found = await viewer(request)
    await signed_form(request, found)
    await accounts.sign_out(db, found.user, request_now(request))
    request.scope["state"][CLEAR_STATE] = True
    return redirect(request, "/dashboard/signin")


@get("/switch")
async def switch_project(request: Request[Any, Any, Any], project: str = "") -> Response[str]:
    """The project switcher's form: to that project's overview (if it is one of the user's)."""
    found = await viewer(request)
    if any(p.project.id == project for p in found.projects):
        return redirect(request, f"/dashboard/p/{project}")
    return redirect(request, HOME)


@get("/projects")
async def projects_page(request: Request[Any, Any, Any]) -> Response[str]:
    found = await viewer(request)
    return html(request, "projects.html", viewer=found)


@post("/projects")
async def create_project(
    request: Request[Any, Any, Any], db: Database, settings: Settings
) -> Response[str]:
    found = await viewer(request)
    form = await signed_form(request, found)
    try:
        created = await accounts.create_user_project(
            db,
            found.user,
            field(form, "name", 200),
            field(form, "organization_id", 40) or None,
            settings.key_mode,
        )
    except SimwireError as exc:
        return html(
            request, "projects.html", viewer=found, status_code=status_for(exc), error=exc.message
        )
    # The project's first key (every scope) is shown this once, on its keys page.
    fresh = await viewer(request, created.project.id)
    keys = await projects.list_keys(db, created.project.id)
    return html(
        request,
        "keys.html",
        viewer=fresh,
        status_code=201,
        keys=keys,
        scopes=credentials.SCOPES,
        issued=created.first_key,
        created_project=True,
    )


def _claim_context(view: agent_onboarding.ClaimView) -> dict[str, Any]:
    return {
        "claim": view,
        "agent": view.registration,
        "default_scopes": agent_claims.DEFAULT_SCOPES,
        "optional_scopes": agent_claims.OPTIONAL_SCOPES,
    }


@get("/claim/{claim_token:str}")
async def claim_page(
    request: Request[Any, Any, Any], db: Database, claim_token: str
) -> Response[str]:
    """What the agent asked for and the form that grants it; signed-out visitors are sent to
    sign in (or register) and come back here."""
    try:
        found = await viewer(request)
    except SignInRequired:
        back = quote(f"/dashboard/claim/{claim_token}", safe="/")
        return redirect(request, f"/dashboard/signin?next={back}")
    now = request_now(request)
    view = await agent_onboarding.claim_view(db, claim_token, now)
    # The agent is pending in every organization this owner or admin could claim it into.
    await pending_agents.note_opened(
        db,
        view.registration,
        [org.id for org in found.profile.organizations if rules.manages(org.role)],
        found.user.user_id,
        now,
    )
    return html(
        request,
        "claim.html",
        viewer=found,
        managed=[p for p in found.projects if rules.manages(p.role)],
        chosen=set(agent_claims.DEFAULT_SCOPES),
        **_claim_context(view),
    )


@post("/claim/{claim_token:str}")
async def claim(request: Request[Any, Any, Any], db: Database, claim_token: str) -> Response[str]:
    found = await viewer(request)
    form = await signed_form(request, found)
    project_id = field(form, "project_id", 40)
    scopes = ticked(form, "scopes")
    name = field(form, "name", agent_claims.MAX_NAME_LENGTH)
    now = request_now(request)
    try:
        claimed = await agent_onboarding.claim(
            db,
            found.user,
            claim_token,
            field(form, "verification_code", 64),
            project_id,
            scopes,
            now,
            name or None,
        )
    except SimwireError as exc:
        view = await agent_onboarding.claim_view(db, claim_token, now)
        return html(
            request,
            "claim.html",
            viewer=found,
            status_code=status_for(exc),
            error=exc.message,
            managed=[p for p in found.projects if rules.manages(p.role)],
            chosen=set(scopes),
            project_id=project_id,
            name=name,
            **_claim_context(view),
        )
    return redirect(
        request,
        f"/dashboard/p/{claimed.registration.project_id}/agents?claimed={claimed.registration.id}",
    )
