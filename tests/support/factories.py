"""Small builders for test data, going through the real services."""

from __future__ import annotations

from dataclasses import dataclass

from app.db.engine import Database
from app.services.projects import create_key, create_project


@dataclass
class TenantKeys:
    project_id: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def new_tenant(
    db: Database, name: str = "acme", scopes: list[str] | None = None
) -> TenantKeys:
    """A project with one key: every scope by default, or exactly `scopes`."""
    created = await create_project(db, name)
    if scopes is None:
        return TenantKeys(created.project.id, created.first_key.raw, created.first_key.key.id)
    issued = await create_key(db, created.project.id, "scoped", scopes)
    return TenantKeys(created.project.id, issued.raw, issued.key.id)
