"""`GET /v1/events`: a project's event outbox, newest first, for a receiver catching up."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.di import Provide
from litestar.params import Parameter

from app.api.auth import require_scope
from app.api.controllers.reading import (
    Cursor,
    Limit,
    Since,
    _since,
    parse_limit,
)
from app.api.openapi import KEY_SECURITY, error_responses
from app.db.engine import Database
from app.db.models import Event
from app.domain import credentials
from app.domain.errors import Forbidden
from app.domain.events import EVENT_TYPES
from app.services import events
from app.services.projects import AuthContext

# Either scope reads events: a webhook receiver's key or a message reader's.
EVENT_READ_SCOPES = ("webhooks.manage", "messages.read")
_TYPE = "(?:" + "|".join(name.replace(".", "\\.") for name in EVENT_TYPES) + ")"


class EventOut(msgspec.Struct):
    """One event. `data` is the object it is about, as the API returns that object
    (`GET /v1/messages/{id}` shape for `message.*`)."""

    id: str
    type: str
    created_at: datetime
    project_id: str
    data: dict[str, Any]


class EventList(msgspec.Struct):
    data: list[EventOut]
    count: int
    next_cursor: str | None
    """Pass as `cursor` for the next (older) page; null on the last page."""


def event_out(event: Event) -> EventOut:
    return EventOut(
        id=event.id,
        type=event.type,
        created_at=event.created_at,
        project_id=event.project_id,
        data=event.data,
    )


async def _event_reader(request: Request[Any, Any, Any], db: Database) -> AuthContext:
    auth = await require_scope(None)(request, db)
    if not any(credentials.grants(list(auth.scopes), scope) for scope in EVENT_READ_SCOPES):
        raise Forbidden(
            "this key lacks a scope that reads events: 'webhooks.manage' or 'messages.read'",
            required_scope=EVENT_READ_SCOPES[0],
            accepted_scopes=list(EVENT_READ_SCOPES),
        )
    return auth


@get(
    "/v1/events",
    tags=["events"],
    summary="List this project's events, newest first",
    dependencies={"auth": Provide(_event_reader)},
    security=KEY_SECURITY,
    responses=error_responses(400, 401, 403),
)
async def list_events(
    db: Database,
    auth: AuthContext,
    type_: Annotated[
        str | None,
        Parameter(
            query="type",
            required=False,
            description="One event type or a comma-separated list",
            schema_extra={"pattern": f"^{_TYPE}(?:,{_TYPE})*$"},
        ),
    ] = None,
    since: Since = None,
    since_id: Annotated[
        str | None,
        Parameter(required=False, description="An event id of this project: only newer ones"),
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> EventList:
    """Scope `webhooks.manage` or `messages.read`. Filters: `type` (one or a comma list),
    `since` (ISO 8601, created at or after), `since_id` (only events newer than that one).
    Pages of `limit` (1–1000, default 50); pass `next_cursor` back as `cursor`."""
    filters = events.EventFilter(
        types=events.parse_event_types(type_) if type_ is not None else (),
        since=_since(since),
        since_id=since_id,
    )
    page = await events.list_events(db, auth.project_id, filters, parse_limit(limit), cursor)
    data = [event_out(event) for event in page.events]
    return EventList(data=data, count=len(data), next_cursor=page.next_cursor)
