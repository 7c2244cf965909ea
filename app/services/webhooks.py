"""A project's webhook endpoints: create (the signing secret shown once), list, read, change,
delete, rotate the secret (the old one signs alongside for a day)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import Webhook
from app.domain.errors import InvalidInput, NotFound, Unavailable
from app.domain.events import EVENT_TYPES, unknown_event_types
from app.services.ids import new_id, utcnow
from app.settings import Settings
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
    return SecretBox(settings.secret_key.get_secret_value())


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


async def list_webhooks(db: Database, project_id: str) -> list[Webhook]:
    """The project's endpoints, oldest first."""
    async with db.reading() as session:
        query = (
            select(Webhook).where(col(Webhook.project_id) == project_id).order_by(col(Webhook.seq))
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
                col(Webhook.project_id) == project_id, col(Webhook.id) == webhook_id
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
        if description is not None:
            webhook.description = _description(description)
        webhook.updated_at = utcnow()
    return webhook


async def delete_webhook(db: Database, project_id: str, webhook_id: str) -> None:
    async with db.transaction() as session:
        await session.delete(await _owned(session, project_id, webhook_id))


async def delete_all_webhooks(db: Database, project_id: str) -> int:
    """Removes every endpoint of the project; how many there were."""
    async with db.transaction() as session:
        result = await session.execute(delete(Webhook).where(col(Webhook.project_id) == project_id))
    return int(getattr(result, "rowcount", 0) or 0)


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
