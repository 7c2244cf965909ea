"""Request and response shapes (msgspec) so the OpenAPI schema is exact."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

# A name as stored (200 characters at most, as the column holds; PostgreSQL refuses NUL).
Name = Annotated[
    str, msgspec.Meta(max_length=200, pattern="^[^\u0000]*$", description="Up to 200 characters")
]


class KeyOut(msgspec.Struct):
    id: str
    name: str
    display_prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    rotated_to: str | None
    active: bool


class IssuedKeyOut(KeyOut):
    key: str
    """The raw key. Shown this once; only its SHA-256 is stored."""


class KeyList(msgspec.Struct):
    data: list[KeyOut]
    count: int


class CreateKeyIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name = ""
    scopes: list[str] | None = None


class ProjectOut(msgspec.Struct):
    id: str
    name: str
    organization_id: str
    scopes: list[str]
    key_id: str
    created_at: datetime
