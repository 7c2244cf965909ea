"""Reading a posted form after its CSRF token checks out."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import FormMultiDict

from app.dashboard.security import CSRF_COOKIE, CSRF_FIELD, check_token
from app.dashboard.session import Viewer


async def signed_form(request: Request[Any, Any, Any], viewer: Viewer) -> FormMultiDict:
    """The form of a signed-in page; CsrfRefused unless it carries the session's token."""
    form = await request.form()
    check_token(_text(form.get(CSRF_FIELD)), viewer.csrf_token)
    return form


async def anonymous_form(request: Request[Any, Any, Any]) -> FormMultiDict:
    """The form of a signed-out page (sign in, register); CsrfRefused unless it sends back the
    value of its CSRF cookie."""
    form = await request.form()
    check_token(_text(form.get(CSRF_FIELD)), request.cookies.get(CSRF_COOKIE))
    return form


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def field(form: FormMultiDict, name: str, limit: int = 2000) -> str:
    """A text field, trimmed ('' when absent or not text), at most `limit` characters."""
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def ticked(form: FormMultiDict, name: str) -> list[str]:
    """Every value of a group of checkboxes."""
    return [value for value in form.getall(name, []) if isinstance(value, str)]
