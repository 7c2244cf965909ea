"""SQLModel tables. Public ids are prefixed strings; `seq` is the integer order of every table."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db.types import UTCDateTime


def _ts(nullable: bool = False, index: bool = False) -> object:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index))


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    name: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Project(SQLModel, table=True):
    __tablename__ = "projects"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    organization_id: str = Field(max_length=40, foreign_key="organizations.id", index=True)
    name: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(max_length=40, foreign_key="projects.id", index=True)
    name: str = Field(default="", max_length=200)
    display_prefix: str = Field(max_length=24)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    scopes: list[str] = Field(sa_type=sa.JSON)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    rotated_to: str | None = Field(default=None, max_length=40)
    created_at: datetime = Field(sa_type=UTCDateTime)
