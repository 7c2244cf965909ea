"""Liveness and readiness probes."""

from __future__ import annotations

from litestar import get
from litestar.exceptions import ServiceUnavailableException

from app.db.engine import Database


@get("/healthz", tags=["operations"], summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["operations"], summary="The database answers")
async def readyz(db: Database) -> dict[str, str]:
    try:
        await db.ping()
    except Exception as exc:
        raise ServiceUnavailableException("the database is not reachable") from exc
    return {"status": "ready", "database": "sqlite" if db.is_sqlite else "postgresql"}
