"""Driving the dashboard's forms over plain HTTP: the CSRF token a page carries, signing in
and registering through the pages."""

from __future__ import annotations

import re

import httpx

from tests.support.accounts import PASSWORD

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token of the first form on `page`."""
    found = _CSRF.search(page.text)
    assert found, f"no CSRF token on {page.url}"
    return found.group(1)


async def dashboard_register(
    http: httpx.AsyncClient, email: str, invite: str, password: str = PASSWORD
) -> httpx.Response:
    page = await http.get("/dashboard/register")
    return await http.post(
        "/dashboard/register",
        data={
            "csrf_token": csrf_of(page),
            "name": "Grace Hopper",
            "email": email,
            "password": password,
            "invite_code": invite,
        },
    )


async def dashboard_sign_in(
    http: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    page = await http.get("/dashboard/signin")
    return await http.post(
        "/dashboard/signin",
        data={"csrf_token": csrf_of(page), "email": email, "password": password},
    )
