"""Project-scoped API key management (scope `keys.manage`) and `GET /v1/project`."""

from __future__ import annotations

from typing import Any

from litestar import Controller, delete, get, post
from litestar.di import Provide

from app.api.auth import require_scope
from app.api.openapi import KEY_SECURITY, SCOPE_LIST, body_schema, error_responses, typed_body
from app.api.schemas import CreateKeyIn, IssuedKeyOut, KeyList, KeyOut, ProjectOut
from app.db.engine import Database
from app.db.models import ApiKey
from app.services import projects
from app.services.projects import AuthContext, IssuedKey
from app.settings import Settings


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(**_key_fields(key))


def issued_key_out(issued: IssuedKey) -> IssuedKeyOut:
    return IssuedKeyOut(**_key_fields(issued.key), key=issued.raw)


def _key_fields(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "display_prefix": key.display_prefix,
        "scopes": list(key.scopes),
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
        "rotated_to": key.rotated_to,
        "active": key.revoked_at is None,
    }


class KeyController(Controller):
    path = "/v1/keys"
    tags = ["keys"]
    security = KEY_SECURITY
    dependencies = {"auth": Provide(require_scope("keys.manage"))}

    @get(
        "/",
        summary="List this project's keys (never their secrets)",
        responses=error_responses(401, 403),
    )
    async def list_keys(self, db: Database, auth: AuthContext) -> KeyList:
        keys = await projects.list_keys(db, auth.project_id)
        return KeyList(data=[key_out(k) for k in keys], count=len(keys))

    @post(
        "/",
        summary="Create a key; the raw key is in this response only",
        operation_class=typed_body(body_schema(CreateKeyIn, scopes=SCOPE_LIST)),
        responses=error_responses(400, 401, 403, 413),
    )
    async def create_key(
        self, db: Database, auth: AuthContext, settings: Settings, data: CreateKeyIn
    ) -> IssuedKeyOut:
        issued = await projects.create_key(
            db, auth.project_id, data.name, data.scopes, settings.key_mode
        )
        return issued_key_out(issued)

    @delete(
        "/{key_id:str}",
        status_code=200,
        summary="Revoke a key at once",
        responses=error_responses(400, 401, 403, 404),
    )
    async def revoke_key(self, db: Database, auth: AuthContext, key_id: str) -> KeyOut:
        return key_out(await projects.revoke_key(db, auth.project_id, key_id))

    @post(
        "/{key_id:str}/rotate",
        status_code=201,
        summary="Replace a key; the old one stops",
        responses=error_responses(400, 401, 403, 404, 409),
    )
    async def rotate_key(
        self, db: Database, auth: AuthContext, settings: Settings, key_id: str
    ) -> IssuedKeyOut:
        return issued_key_out(
            await projects.rotate_key(db, auth.project_id, key_id, settings.key_mode)
        )


@get(
    "/v1/project",
    tags=["keys"],
    summary="Which project this key belongs to and what it may do",
    dependencies={"auth": Provide(require_scope(None))},
    security=KEY_SECURITY,
    responses=error_responses(401),
)
async def current_project(db: Database, auth: AuthContext) -> ProjectOut:
    project = await projects.get_project(db, auth.project_id)
    return ProjectOut(
        id=project.id,
        name=project.name,
        organization_id=project.organization_id,
        scopes=list(auth.scopes),
        key_id=auth.key_id,
        created_at=project.created_at,
    )
