"""Liveness and readiness probes."""

from __future__ import annotations

from litestar import get
from litestar.exceptions import ServiceUnavailableException

from app.api.openapi import error_responses
from app.db.engine import Database


@get(
    "/healthz",
    tags=["operations"],
    summary="The process is up",
    responses=error_responses(rate_limited=False, reads_database=False),
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    tags=["operations"],
    summary="The database answers",
    responses=error_responses(503, rate_limited=False),
)
async def readyz(db: Database) -> dict[str, str]:
    try:
        await db.ping()
    except Exception as exc:
        raise ServiceUnavailableException("the database is not reachable") from exc
    return {"status": "ready", "database": "sqlite" if db.is_sqlite else "postgresql"}
