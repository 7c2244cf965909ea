"""Jinja2 templates (autoescaped) rendered into HTML responses with the dashboard's headers."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import MediaType, Request, Response

from app.dashboard.security import CSRF_FIELD, SECURITY_HEADERS
from app.dashboard.session import Viewer, anonymous_csrf, finish
from app.domain import pricing
from app.services.ids import utcnow

TEMPLATES = Path(__file__).parent / "templates"


def _usdc(amount_atomic: int | None) -> str:
    return pricing.format_usdc(int(amount_atomic or 0))


def _when(moment: datetime | None) -> str:
    """`2026-12-02 05:41:07 UTC (3 min ago)`; a dash for none."""
    if moment is None:
        return "—"
    seconds = int((utcnow() - moment).total_seconds())
    if seconds < 0:
        ago = "in the future"
    elif seconds < 60:
        ago = f"{seconds} s ago"
    elif seconds < 3600:
        ago = f"{seconds // 60} min ago"
    elif seconds < 86400:
        ago = f"{seconds // 3600} h ago"
    else:
        ago = f"{seconds // 86400} d ago"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({ago})"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["usdc"] = _usdc
    env.filters["when"] = _when
    env.globals["csrf_field"] = CSRF_FIELD
    return env


def html(
    request: Request[Any, Any, Any],
    template: str,
    status_code: int = 200,
    viewer: Viewer | None = None,
    **context: Any,
) -> Response[str]:
    """The template rendered for `viewer` (None: a signed-out page, whose forms carry the
    double-submit CSRF token)."""
    csrf = viewer.csrf_token if viewer is not None else anonymous_csrf(request)
    body = (
        environment()
        .get_template(template)
        .render(viewer=viewer, csrf_token=csrf, path=request.url.path, **context)
    )
    response = Response(
        body, status_code=status_code, media_type=MediaType.HTML, headers=SECURITY_HEADERS
    )
    return finish(request, response)


def redirect(request: Request[Any, Any, Any], location: str) -> Response[str]:
    """303 See Other (a form's POST becomes a GET of `location`)."""
    response = Response("", status_code=303, headers={**SECURITY_HEADERS, "Location": location})
    return finish(request, response)
