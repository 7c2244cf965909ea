"""A project's webhook endpoints: create (the signing secret shown once), list, read, change,
delete, rotate the secret (the old one signs alongside for a day), send a test event, list
the deliveries with their attempts and retry one. A paid request's `callback_url` is a hidden
endpoint of its own (`request_id` set, app/services/callbacks.py) that none of these list or
touch."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import Webhook, WebhookAttempt, WebhookDelivery
from app.domain.errors import InvalidInput, NotFound, Unavailable
from app.domain.events import EVENT_TYPES, unknown_event_types
from app.services.events import record_event
from app.services.ids import new_id, utcnow
from app.services.reading import MAX_PAGE, decode_cursor, encode_cursor
from app.settings import Settings
from app.webhooks.fanout import PENDING, WEBHOOK_TEST, new_delivery
from app.webhooks.secrets import SecretBox, new_signing_secret
from app.webhooks.ssrf import check_webhook_url

ROTATION_OVERLAP = timedelta(hours=24)
MAX_DESCRIPTION = 500


class UnknownEventType(InvalidInput):
    code = "unknown_event_type"

    def __init__(self, unknown: list[str]) -> None:
        super().__init__(
            f"unknown event type {', '.join(map(repr, unknown))}; known types: "
            + ", ".join(EVENT_TYPES),
            param="events",
            unknown=unknown,
        )


@dataclass(frozen=True)
class IssuedWebhook:
    """An endpoint with its signing secret in the clear: only right after creation or rotation."""

    webhook: Webhook
    secret: str = field(repr=False)


def _box(settings: Settings) -> SecretBox:
    if settings.secret_key is None:
        raise Unavailable(
            "webhooks need an operator secret key to encrypt their signing secrets: set "
            "SIMWIRE_SECRET_KEY (32 or more characters) on the server"
        )
    return _box_for(settings.secret_key.get_secret_value())


@lru_cache(maxsize=4)
def _box_for(operator_key: str) -> SecretBox:
    """One box per operator key: deriving its key costs more than sealing with it."""
    return SecretBox(operator_key)


def _event_filter(events: list[str] | None) -> list[str]:
    """`events` in the canonical order without repeats; None means every type."""
    if events is None:
        return list(EVENT_TYPES)
    unknown = unknown_event_types(events)
    if unknown:
        raise UnknownEventType(unknown)
    if not events:
        raise InvalidInput(
            "`events` must name at least one event type (leave it out for all)", param="events"
        )
    return [kind for kind in EVENT_TYPES if kind in set(events)]


def _description(text: str | None) -> str | None:
    if text is not None and len(text) > MAX_DESCRIPTION:
        raise InvalidInput(
            f"`description` is longer than {MAX_DESCRIPTION} characters", param="description"
        )
    if text is not None and "\x00" in text:
        raise InvalidInput("`description` must not contain NUL characters", param="description")
    return text or None


async def create_webhook(
    db: Database,
    settings: Settings,
    project_id: str,
    url: str,
    events: list[str] | None = None,
    description: str | None = None,
) -> IssuedWebhook:
    """A new enabled endpoint. InvalidWebhookUrl / WebhookUrlNotAllowed for its URL,
    UnknownEventType for its filter, Unavailable when the server has no secret key."""
    box = _box(settings)
    await check_webhook_url(url, settings.webhook_allow_private)
    kinds = _event_filter(events)
    now = utcnow()
    secret = new_signing_secret()
    webhook_id = new_id("wh")
    webhook = Webhook(
        id=webhook_id,
        project_id=project_id,
        url=url,
        events=kinds,
        description=_description(description),
        enabled=True,
        secret_sealed=box.seal(secret, webhook_id),
        created_at=now,
        updated_at=now,
    )
    async with db.transaction() as session:
        session.add(webhook)
    return IssuedWebhook(webhook, secret)


def webhook_object(webhook: Webhook) -> dict[str, Any]:
    """The endpoint as the API returns it, JSON-ready: the `data` of its `webhook.*` events."""
    return msgspec.to_builtins(
        {
            "id": webhook.id,
            "url": webhook.url,
            "events": list(webhook.events),
            "enabled": webhook.enabled,
            "description": webhook.description,
            "disabled_reason": webhook.disabled_reason,
            "failing_since": webhook.failing_since,
            "created_at": webhook.created_at,
            "updated_at": webhook.updated_at,
        }
    )


async def list_webhooks(db: Database, project_id: str) -> list[Webhook]:
    """The project's endpoints, oldest first (callback endpoints of paid requests are not
    among them)."""
    async with db.reading() as session:
        query = (
            select(Webhook)
            .where(col(Webhook.project_id) == project_id, col(Webhook.request_id).is_(None))
            .order_by(col(Webhook.seq))
        )
        return list((await session.execute(query)).scalars().all())


async def get_webhook(db: Database, project_id: str, webhook_id: str) -> Webhook:
    """One endpoint of this project; another project's is NotFound like a missing one."""
    async with db.reading() as session:
        return await _owned(session, project_id, webhook_id)


async def _owned(session: AsyncSession, project_id: str, webhook_id: str) -> Webhook:
    webhook = (
        await session.execute(
            select(Webhook).where(
                col(Webhook.project_id) == project_id,
                col(Webhook.id) == webhook_id,
                col(Webhook.request_id).is_(None),
            )
        )
    ).scalar_one_or_none()
    if webhook is None:
        raise NotFound(f"webhook {webhook_id!r} not found")
    return webhook


async def update_webhook(
    db: Database,
    settings: Settings,
    project_id: str,
    webhook_id: str,
    *,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
    description: str | None = None,
) -> Webhook:
    """Changes what is given (None leaves a field as it is; an empty `description` clears
    it). A new URL passes the same checks as at creation."""
    if url is not None:
        await check_webhook_url(url, settings.webhook_allow_private)
    kinds = _event_filter(events) if events is not None else None
    async with db.transaction() as session:
        webhook = await _owned(session, project_id, webhook_id)
        if url is not None:
            webhook.url = url
        if kinds is not None:
            webhook.events = kinds
        if enabled is not None:
            webhook.enabled = enabled
            if enabled:
                webhook.disabled_reason = None
                webhook.failing_since = None
        if description is not None:
            webhook.description = _description(description)
        webhook.updated_at = utcnow()
    return webhook


async def delete_webhook(db: Database, project_id: str, webhook_id: str) -> None:
    """Removes the endpoint with its deliveries and their attempts."""
    async with db.transaction() as session:
        webhook = await _owned(session, project_id, webhook_id)
        await _delete_deliveries(session, [webhook.id])
        await session.delete(webhook)


async def delete_all_webhooks(db: Database, project_id: str) -> int:
    """Removes every endpoint of the project (not the callback endpoints of its paid
    requests) with their deliveries; how many endpoints there were."""
    async with db.transaction() as session:
        ids = list(
            (
                await session.execute(
                    select(col(Webhook.id)).where(
                        col(Webhook.project_id) == project_id, col(Webhook.request_id).is_(None)
                    )
                )
            ).scalars()
        )
        if ids:
            await _delete_deliveries(session, ids)
            await session.execute(delete(Webhook).where(col(Webhook.id).in_(ids)))
    return len(ids)


async def _delete_deliveries(session: AsyncSession, webhook_ids: list[str]) -> None:
    deliveries = select(col(WebhookDelivery.id)).where(
        col(WebhookDelivery.webhook_id).in_(webhook_ids)
    )
    await session.execute(
        delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(deliveries))
    )
    await session.execute(
        delete(WebhookDelivery).where(col(WebhookDelivery.webhook_id).in_(webhook_ids))
    )


async def rotate_secret(
    db: Database, settings: Settings, project_id: str, webhook_id: str
) -> IssuedWebhook:
    """A new signing secret, shown once; the one it replaces keeps signing alongside it for
    ROTATION_OVERLAP (a second rotation within that time ends the oldest at once)."""
    box = _box(settings)
    secret = new_signing_secret()
    now = utcnow()
    async with db.transaction() as session:
        webhook = await _owned(session, project_id, webhook_id)
        webhook.previous_secret_sealed = webhook.secret_sealed
        webhook.previous_expires_at = now + ROTATION_OVERLAP
        webhook.secret_sealed = box.seal(secret, webhook.id)
        webhook.updated_at = now
    return IssuedWebhook(webhook, secret)


def signing_secrets(settings: Settings, webhook: Webhook, now: datetime | None = None) -> list[str]:
    """The secrets a delivery to `webhook` is signed with: the current one, then the one it
    replaced while that is still within its overlap."""
    box = _box(settings)
    found = [box.open(webhook.secret_sealed, webhook.id)]
    expires = webhook.previous_expires_at
    if webhook.previous_secret_sealed and expires is not None and (now or utcnow()) < expires:
        found.append(box.open(webhook.previous_secret_sealed, webhook.id))
    return found


# Deliveries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRecord:
    """A delivery with its attempts, oldest attempt first."""

    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


@dataclass(frozen=True)
class DeliveryPage:
    deliveries: list[DeliveryRecord]
    next_cursor: str | None


# How long a test delivery waits for the background rounds: longer than the one send its caller
# makes at once (the webhook client's timeout is 10 s).
TEST_DELIVERY_HOLD_S = 30


async def create_test_delivery(
    db: Database, project_id: str, webhook_id: str, now: datetime | None = None
) -> str:
    """Records a `webhook.test` event (its `data` is the endpoint) for this endpoint alone
    and its delivery, in one transaction; the delivery's id. The caller sends it at once
    (`DeliveryWorker.deliver_now`); it is due for the background rounds only after
    `TEST_DELIVERY_HOLD_S`, in case that caller never did, so no round can take it first and
    leave the caller with nothing to send. NotFound for another project's endpoint or a
    missing one."""
    moment = now or utcnow()
    async with db.transaction() as session:
        webhook = await _owned(session, project_id, webhook_id)
        event = await record_event(
            session, project_id, WEBHOOK_TEST, webhook_object(webhook), now=moment
        )
        event.routed = True  # its one delivery is made here, not by the fan-out
        row = new_delivery(project_id, webhook.id, event, moment)
        row["next_attempt_at"] = moment + timedelta(seconds=TEST_DELIVERY_HOLD_S)
        session.add(WebhookDelivery(**row))
    return str(row["id"])


async def list_deliveries(
    db: Database, project_id: str, webhook_id: str, limit: int = 50, cursor: str | None = None
) -> DeliveryPage:
    """The endpoint's deliveries, newest first, `limit` (1–1000) at a time, each with its
    attempts. NotFound for another project's endpoint; InvalidCursor for a cursor this server
    did not hand out; InvalidInput for a bad `limit`."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"`limit` must be from 1 to {MAX_PAGE}", param="limit")
    before_seq = decode_cursor(cursor) if cursor is not None else None
    async with db.reading() as session:
        await _owned(session, project_id, webhook_id)
        query = select(WebhookDelivery).where(
            col(WebhookDelivery.project_id) == project_id,
            col(WebhookDelivery.webhook_id) == webhook_id,
        )
        if before_seq is not None:
            query = query.where(col(WebhookDelivery.seq) < before_seq)
        rows = list(
            (
                await session.execute(
                    query.order_by(col(WebhookDelivery.seq).desc()).limit(limit + 1)
                )
            )
            .scalars()
            .all()
        )
        more = len(rows) > limit
        rows = rows[:limit]
        attempts = await _attempts_of(session, [row.id for row in rows])
    last_seq = rows[-1].seq if more and rows else None
    records = [DeliveryRecord(row, attempts[row.id]) for row in rows]
    return DeliveryPage(records, encode_cursor(last_seq) if last_seq is not None else None)


async def get_delivery(
    db: Database, project_id: str, webhook_id: str, delivery_id: str
) -> DeliveryRecord:
    """One delivery of this project's endpoint with its attempts, or NotFound."""
    async with db.reading() as session:
        delivery = await _owned_delivery(session, project_id, webhook_id, delivery_id)
        attempts = await _attempts_of(session, [delivery.id])
    return DeliveryRecord(delivery, attempts[delivery.id])


async def retry_delivery(
    db: Database, project_id: str, webhook_id: str, delivery_id: str, now: datetime | None = None
) -> DeliveryRecord:
    """Makes a delivery due now: a failed (or succeeded) one is pending again and gets one
    more attempt (more if that fails while the retry schedule has tries left). It is sent
    while its endpoint is enabled. NotFound for another project's endpoint or delivery."""
    moment = now or utcnow()
    async with db.transaction() as session:
        delivery = await _owned_delivery(session, project_id, webhook_id, delivery_id)
        delivery.status = PENDING
        delivery.next_attempt_at = moment
        delivery.completed_at = None
        delivery.updated_at = moment
        attempts = await _attempts_of(session, [delivery.id])
    return DeliveryRecord(delivery, attempts[delivery.id])


async def _owned_delivery(
    session: AsyncSession, project_id: str, webhook_id: str, delivery_id: str
) -> WebhookDelivery:
    await _owned(session, project_id, webhook_id)
    delivery = (
        await session.execute(
            select(WebhookDelivery).where(
                col(WebhookDelivery.project_id) == project_id,
                col(WebhookDelivery.webhook_id) == webhook_id,
                col(WebhookDelivery.id) == delivery_id,
            )
        )
    ).scalar_one_or_none()
    if delivery is None:
        raise NotFound(f"delivery {delivery_id!r} of webhook {webhook_id!r} not found")
    return delivery


async def _attempts_of(
    session: AsyncSession, delivery_ids: list[str]
) -> dict[str, list[WebhookAttempt]]:
    found: dict[str, list[WebhookAttempt]] = defaultdict(list)
    if delivery_ids:
        query = (
            select(WebhookAttempt)
            .where(col(WebhookAttempt.delivery_id).in_(delivery_ids))
            .order_by(col(WebhookAttempt.seq))
        )
        for attempt in (await session.execute(query)).scalars():
            found[attempt.delivery_id].append(attempt)
    return found
