"""Organizations, projects and their API keys."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import ApiKey, Organization, Project


class ProjectRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find_organization(self, id_or_name: str) -> Organization | None:
        result = await self.session.execute(
            select(Organization)
            .where(or_(col(Organization.id) == id_or_name, col(Organization.name) == id_or_name))
            .order_by(col(Organization.seq))
            .limit(1)
        )
        return result.scalar_one_or_none()

    async def get_project(self, project_id: str) -> Project | None:
        result = await self.session.execute(select(Project).where(col(Project.id) == project_id))
        return result.scalar_one_or_none()

    async def list_projects(self) -> list[Project]:
        result = await self.session.execute(select(Project).order_by(col(Project.seq)))
        return list(result.scalars())

    def add(self, row: Organization | Project | ApiKey) -> None:
        self.session.add(row)


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, key: ApiKey) -> None:
        self.session.add(key)

    async def by_hash(self, key_hash: str) -> ApiKey | None:
        result = await self.session.execute(select(ApiKey).where(col(ApiKey.key_hash) == key_hash))
        return result.scalar_one_or_none()

    async def get(self, project_id: str, key_id: str) -> ApiKey | None:
        """A key of this project only: another project's key is simply not found."""
        result = await self.session.execute(
            select(ApiKey).where(col(ApiKey.id) == key_id, col(ApiKey.project_id) == project_id)
        )
        return result.scalar_one_or_none()

    async def list(self, project_id: str) -> list[ApiKey]:
        result = await self.session.execute(
            select(ApiKey).where(col(ApiKey.project_id) == project_id).order_by(col(ApiKey.seq))
        )
        return list(result.scalars())
