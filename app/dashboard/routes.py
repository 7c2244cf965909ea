"""The dashboard's router: every page under /dashboard, its static files, and errors shown as
pages (a signed-out visitor is sent to sign in). None of it is in the OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, Router
from litestar.static_files import create_static_files_router

from app.api.errors import status_for
from app.dashboard import pages_account, pages_manage, pages_project
from app.dashboard.render import html, redirect
from app.dashboard.session import SignInRequired
from app.domain.errors import SimwireError

STATIC = Path(__file__).parent / "static"


def _error_page(request: Request[Any, Any, Any], exc: SimwireError) -> Response[Any]:
    if isinstance(exc, SignInRequired):
        if request.method == "GET" and not request.url.path.endswith("/live"):
            back = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
            return redirect(request, f"/dashboard/signin?next={back}")
        return redirect(request, "/dashboard/signin")
    return html(request, "error.html", status_code=status_for(exc), error=exc)


def dashboard_router() -> Router:
    return Router(
        path="/dashboard",
        include_in_schema=False,
        exception_handlers={SimwireError: _error_page},
        route_handlers=[
            pages_account.home,
            pages_account.signin_page,
            pages_account.signin,
            pages_account.register_page,
            pages_account.register,
            pages_account.signout,
            pages_account.switch_project,
            pages_account.projects_page,
            pages_account.create_project,
            pages_account.claim_page,
            pages_account.claim,
            pages_project.overview,
            pages_project.overview_live,
            pages_project.messages_page,
            pages_project.message_page,
            pages_project.message_live,
            pages_project.send_page,
            pages_project.send,
            pages_project.credits_page,
            pages_manage.phones_page,
            pages_manage.pair_phone,
            pages_manage.phone_live,
            pages_manage.revoke_phone,
            pages_manage.lock_sim,
            pages_manage.keys_page,
            pages_manage.create_key,
            pages_manage.revoke_key,
            pages_manage.rotate_key,
            pages_manage.agents_page,
            pages_manage.revoke_agent,
            pages_manage.rescope_agent,
            pages_manage.webhooks_page,
            pages_manage.create_webhook,
            pages_manage.webhook_page,
            pages_manage.test_webhook,
            create_static_files_router(
                path="/static",
                directories=[STATIC],
                include_in_schema=False,
            ),
        ],
    )
