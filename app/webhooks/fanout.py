"""Routes the event outbox to webhook endpoints: each event not yet routed gets one delivery per
endpoint that wants it, and is marked routed in the same transaction, so every event reaches
each of its endpoints exactly once however many instances route at the same time (on
PostgreSQL each takes its events with `FOR UPDATE SKIP LOCKED`)."""

from __future__ import annotations

import functools
from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Update, insert, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from app.db.engine import Database
from app.db.models import UNROUTED_EVENT, Event, Message, Webhook, WebhookDelivery
from app.services.ids import new_id, utcnow

BATCH = 500
PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"

# The events a paid request's callback endpoint is sent (DESIGN §9, issue 12 item 6): its
# messages' events, its completion, and replies to its messages.
CALLBACK_EVENT_PREFIX = "message."
REQUEST_COMPLETED = "request.completed"
MESSAGE_RECEIVED = "message.received"
WEBHOOK_TEST = "webhook.test"


async def route_events(db: Database, now: datetime | None = None, batch: int = BATCH) -> int:
    """Routes up to `batch` unrouted events, oldest first, in one transaction; how many."""
    when = now or utcnow()
    return await db.run(lambda conn: route_in(Session(bind=conn), db.is_sqlite, when, batch))


def route_in(session: Session, is_sqlite: bool, now: datetime, batch: int = BATCH) -> int:
    """`route_events` in the caller's (synchronous) transaction: the worker claims in the same
    one."""
    conn = session.connection()
    unrouted = conn.execute(_take_unrouted(batch, locking=not is_sqlite)).all()
    if not unrouted:
        return 0
    # All are marked routed by the statement that took them; only the events of projects
    # with an enabled endpoint are read whole (most projects subscribe nobody).
    projects = list({project_id for _, project_id in unrouted})
    wanting = set(conn.execute(_PROJECTS_WANTING, {"projects": projects}).scalars())
    wanted = [seq for seq, project_id in unrouted if project_id in wanting]
    if wanted:
        events = list(
            session.execute(
                select(Event).where(col(Event.seq).in_(wanted)).order_by(col(Event.seq))
            ).scalars()
        )
        rows = _deliveries_for(session, events, now)
        if rows:
            session.execute(insert(WebhookDelivery), rows)
    return len(unrouted)


# The statements of every round, built once: building them anew each round (and their cache
# keys) was most of a round's cost.
_EVENTS = Event.metadata.tables["events"]
_WEBHOOKS = Webhook.metadata.tables["webhooks"]
_PROJECTS_WANTING = (
    select(_WEBHOOKS.c.project_id)
    .where(
        _WEBHOOKS.c.project_id.in_(sa.bindparam("projects", expanding=True)),
        _WEBHOOKS.c.enabled == sa.true(),
    )
    .distinct()
)


@functools.cache
def _take_unrouted(batch: int, locking: bool) -> Update:
    """Marks the oldest `batch` events not yet routed as routed and returns them: (seq,
    project id), in one statement; with `locking` (PostgreSQL) each instance takes those no
    other one holds."""
    # The condition verbatim, so SQLite reads the partial index, not the whole table.
    oldest = select(_EVENTS.c.seq).where(sa.text(UNROUTED_EVENT))
    oldest = oldest.order_by(_EVENTS.c.seq).limit(batch)
    if locking:
        oldest = oldest.with_for_update(skip_locked=True)
    return (
        update(_EVENTS)
        .where(_EVENTS.c.seq.in_(oldest))
        .values(routed=True)
        .returning(_EVENTS.c.seq, _EVENTS.c.project_id)
    )


def new_delivery(project_id: str, webhook_id: str, event: Event, now: datetime) -> dict[str, Any]:
    """The row of a delivery of `event` to an endpoint, due at once."""
    return {
        "id": new_id("dlv"),
        "project_id": project_id,
        "webhook_id": webhook_id,
        "event_id": event.id,
        "event_type": event.type,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "leased_until": None,
        "created_at": now,
        "updated_at": now,
    }


def _deliveries_for(session: Session, events: list[Event], now: datetime) -> list[dict[str, Any]]:
    projects = {event.project_id for event in events}
    endpoints: dict[str, list[Webhook]] = defaultdict(list)
    for webhook in (
        session.execute(
            select(Webhook).where(
                col(Webhook.project_id).in_(projects),
                col(Webhook.enabled) == sa.true(),
                col(Webhook.request_id).is_(None),
            )
        )
    ).scalars():
        endpoints[webhook.project_id].append(webhook)

    request_of = {event.id: _request_of(event) for event in events}
    replied_to = {
        str(event.data["in_reply_to"])
        for event in events
        if event.type == MESSAGE_RECEIVED and isinstance(event.data.get("in_reply_to"), str)
    }
    if replied_to:
        found = session.execute(
            select(col(Message.id), col(Message.request_id)).where(
                col(Message.id).in_(replied_to), col(Message.request_id).is_not(None)
            )
        )
        requests_replied_to = {message_id: request_id for message_id, request_id in found}
        for event in events:
            replied = event.data.get("in_reply_to")
            if event.type == MESSAGE_RECEIVED and request_of[event.id] is None:
                request_of[event.id] = requests_replied_to.get(str(replied))
    request_ids = {request_id for request_id in request_of.values() if request_id}
    callbacks: dict[str, list[Webhook]] = defaultdict(list)
    if request_ids:
        for webhook in (
            session.execute(
                select(Webhook).where(
                    col(Webhook.request_id).in_(request_ids), col(Webhook.enabled) == sa.true()
                )
            )
        ).scalars():
            callbacks[str(webhook.request_id)].append(webhook)

    rows: list[dict[str, Any]] = []
    for event in events:
        if event.type == WEBHOOK_TEST:
            # A test goes to the one endpoint it tests (the route makes that delivery itself).
            targets = [w for w in endpoints[event.project_id] if w.id == event.data.get("id")]
        else:
            targets = [w for w in endpoints[event.project_id] if event.type in w.events]
            request_id = request_of[event.id]
            if request_id:
                targets += [
                    w
                    for w in callbacks[request_id]
                    if w.project_id == event.project_id and event.type in w.events
                ]
        rows.extend(new_delivery(event.project_id, w.id, event, now) for w in targets)
    return rows


def _request_of(event: Event) -> str | None:
    """The request whose callback endpoint wants `event`, as far as the event itself says."""
    if event.type.startswith(CALLBACK_EVENT_PREFIX) or event.type == REQUEST_COMPLETED:
        request_id = event.data.get("request_id")
        return request_id if isinstance(request_id, str) else None
    return None
