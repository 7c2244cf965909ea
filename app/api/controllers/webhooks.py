"""Webhook endpoints of a project (scope `webhooks.manage`): create, list, read, change,
delete one or all, rotate the signing secret, send a test event, list deliveries with their
attempts, retry a delivery."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.di import Provide

from app.api.auth import require_scope
from app.api.controllers.reading import Cursor, Limit, parse_limit
from app.api.openapi import KEY_SECURITY, body_schema, error_responses, typed_body
from app.db.engine import Database
from app.db.models import Webhook, WebhookAttempt
from app.domain.events import EVENT_TYPES
from app.domain.webhook_urls import MAX_URL_LENGTH, URL_PATTERN
from app.services import webhooks
from app.services.projects import AuthContext
from app.settings import Settings
from app.webhooks.delivery import DeliveryWorker


class WebhookIn(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    events: list[str] | None = None
    description: str | None = None


class WebhookPatchIn(msgspec.Struct, forbid_unknown_fields=True):
    url: str | None = None
    events: list[str] | None = None
    enabled: bool | None = None
    description: str | None = None


class WebhookOut(msgspec.Struct):
    """An endpoint. `events` are the types it is sent; the signing secret is never here.
    `failing_since`: the first failed attempt since the last success (after 5 days of only
    failures the endpoint is disabled, `disabled_reason` saying so)."""

    id: str
    url: str
    events: list[str]
    enabled: bool
    description: str | None
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


class IssuedWebhookOut(WebhookOut):
    """An endpoint with its signing secret (`whsec_…`), shown in this response only."""

    secret: str


class WebhookList(msgspec.Struct):
    data: list[WebhookOut]
    count: int


class AttemptOut(msgspec.Struct):
    """One HTTP try: the status the endpoint answered (null when it did not answer), how long
    it took, what went wrong (null for a 2xx), and when the next try is due (null after a
    success or the last try)."""

    number: int
    status_code: int | None
    latency_ms: int
    error: str | None
    next_retry_at: datetime | None
    attempted_at: datetime


class DeliveryOut(msgspec.Struct):
    """One event to this endpoint: `pending` (due at `next_attempt_at`), `succeeded`, or
    `failed` once the retries (about 2 days) are used up. `status_code`, `latency_ms` and
    `error` are those of the latest attempt; `attempts` lists every attempt, oldest first."""

    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: str
    attempt_count: int
    status_code: int | None
    latency_ms: int | None
    error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    completed_at: datetime | None
    attempts: list[AttemptOut]


class DeliveryList(msgspec.Struct):
    data: list[DeliveryOut]
    count: int
    next_cursor: str | None
    """Pass as `cursor` for the next (older) page; null on the last page."""


class DeletedOut(msgspec.Struct):
    success: bool
    deleted: int
    """How many endpoints were removed."""


# What the service checks, stated for the document (the service keeps its own error codes).
_URL = {
    "type": "string",
    "maxLength": MAX_URL_LENGTH,
    "pattern": URL_PATTERN,
    "description": "Where deliveries are POSTed: https, and a public address unless the "
    "operator allows private targets (else 400 `webhook_url_not_allowed`, saying why)",
}
_EVENTS = {
    "anyOf": [
        {"type": "array", "items": {"enum": list(EVENT_TYPES)}, "minItems": 1},
        {"type": "null"},
    ],
    "description": "Event types to send; null (or absent) sends every type",
}
_DESCRIPTION = {
    "anyOf": [{"type": "string", "maxLength": 500, "pattern": r"^[^\u0000]*$"}, {"type": "null"}]
}
_CREATE_BODY = typed_body(
    body_schema(WebhookIn, url=_URL, events=_EVENTS, description=_DESCRIPTION)
)
_PATCH_BODY = typed_body(
    body_schema(
        WebhookPatchIn,
        url={"anyOf": [_URL, {"type": "null"}]},
        events=_EVENTS | {"description": "Event types to send; null leaves them as they are"},
        description=_DESCRIPTION,
    )
)


def _fields(webhook: Webhook) -> dict[str, object]:
    return {
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


def webhook_out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(**_fields(webhook))  # type: ignore[arg-type]


def issued_out(issued: webhooks.IssuedWebhook) -> IssuedWebhookOut:
    return IssuedWebhookOut(**_fields(issued.webhook), secret=issued.secret)  # type: ignore[arg-type]


def attempt_out(attempt: WebhookAttempt) -> AttemptOut:
    return AttemptOut(
        number=attempt.number,
        status_code=attempt.status_code,
        latency_ms=attempt.latency_ms,
        error=attempt.error,
        next_retry_at=attempt.next_retry_at,
        attempted_at=attempt.created_at,
    )


def delivery_out(record: webhooks.DeliveryRecord) -> DeliveryOut:
    delivery = record.delivery
    return DeliveryOut(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,
        attempt_count=delivery.attempts,
        status_code=delivery.last_status_code,
        latency_ms=delivery.last_latency_ms,
        error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at,
        created_at=delivery.created_at,
        completed_at=delivery.completed_at,
        attempts=[attempt_out(attempt) for attempt in record.attempts],
    )


class WebhookController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]
    security = KEY_SECURITY
    dependencies = {"auth": Provide(require_scope("webhooks.manage"))}

    @post(
        "/",
        summary="Add an endpoint; its signing secret is in this response only",
        operation_class=_CREATE_BODY,
        responses=error_responses(400, 401, 403, 413),
    )
    async def create_webhook(
        self, db: Database, auth: AuthContext, settings: Settings, data: WebhookIn
    ) -> IssuedWebhookOut:
        """400 `invalid_url` for a malformed or over-long URL, `webhook_url_not_allowed` for
        one Simwire will not call (with `reason`), `unknown_event_type` for a bad filter."""
        issued = await webhooks.create_webhook(
            db, settings, auth.project_id, data.url, data.events, data.description
        )
        return issued_out(issued)

    @get("/", summary="List this project's endpoints", responses=error_responses(401, 403))
    async def list_webhooks(self, db: Database, auth: AuthContext) -> WebhookList:
        found = await webhooks.list_webhooks(db, auth.project_id)
        return WebhookList(data=[webhook_out(w) for w in found], count=len(found))

    @delete(
        "/",
        status_code=200,
        summary="Remove every endpoint of this project",
        responses=error_responses(401, 403),
    )
    async def delete_all_webhooks(self, db: Database, auth: AuthContext) -> DeletedOut:
        return DeletedOut(
            success=True, deleted=await webhooks.delete_all_webhooks(db, auth.project_id)
        )

    @get(
        "/{webhook_id:str}",
        summary="One endpoint",
        responses=error_responses(400, 401, 403, 404),
    )
    async def get_webhook(self, db: Database, auth: AuthContext, webhook_id: str) -> WebhookOut:
        return webhook_out(await webhooks.get_webhook(db, auth.project_id, webhook_id))

    @patch(
        "/{webhook_id:str}",
        summary="Change an endpoint's URL, event filter, description or whether it is enabled",
        operation_class=_PATCH_BODY,
        responses=error_responses(400, 401, 403, 404, 413),
    )
    async def update_webhook(
        self,
        db: Database,
        auth: AuthContext,
        settings: Settings,
        webhook_id: str,
        data: WebhookPatchIn,
    ) -> WebhookOut:
        updated = await webhooks.update_webhook(
            db,
            settings,
            auth.project_id,
            webhook_id,
            url=data.url,
            events=data.events,
            enabled=data.enabled,
            description=data.description,
        )
        return webhook_out(updated)

    @delete(
        "/{webhook_id:str}",
        status_code=200,
        summary="Remove one endpoint",
        responses=error_responses(400, 401, 403, 404),
    )
    async def delete_webhook(self, db: Database, auth: AuthContext, webhook_id: str) -> DeletedOut:
        await webhooks.delete_webhook(db, auth.project_id, webhook_id)
        return DeletedOut(success=True, deleted=1)

    @post(
        "/{webhook_id:str}/rotate",
        status_code=200,
        summary="New signing secret, shown once; the old one signs alongside it for 24 h",
        responses=error_responses(400, 401, 403, 404),
    )
    async def rotate_secret(
        self, db: Database, auth: AuthContext, settings: Settings, webhook_id: str
    ) -> IssuedWebhookOut:
        return issued_out(await webhooks.rotate_secret(db, settings, auth.project_id, webhook_id))

    @post(
        "/{webhook_id:str}/test",
        status_code=200,
        summary="Send a webhook.test event to this endpoint now; the delivery and its attempt",
        responses=error_responses(400, 401, 403, 404),
    )
    async def test_webhook(
        self, db: Database, auth: AuthContext, webhook_worker: DeliveryWorker, webhook_id: str
    ) -> DeliveryOut:
        """Records a `webhook.test` event (its `data` is this endpoint) for this endpoint only
        and sends it at once, even while the endpoint is disabled; answers after the attempt
        (at most the 10 s timeout). A failed test is retried like any delivery."""
        delivery_id = await webhooks.create_test_delivery(db, auth.project_id, webhook_id)
        await webhook_worker.deliver_now(delivery_id)
        return delivery_out(
            await webhooks.get_delivery(db, auth.project_id, webhook_id, delivery_id)
        )

    @get(
        "/{webhook_id:str}/deliveries",
        summary="This endpoint's deliveries, newest first, each with its attempts",
        responses=error_responses(400, 401, 403, 404),
    )
    async def list_deliveries(
        self,
        db: Database,
        auth: AuthContext,
        webhook_id: str,
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> DeliveryList:
        """Pages of `limit` (1–1000, default 50); pass `next_cursor` back as `cursor`."""
        page = await webhooks.list_deliveries(
            db, auth.project_id, webhook_id, parse_limit(limit), cursor
        )
        data = [delivery_out(record) for record in page.deliveries]
        return DeliveryList(data=data, count=len(data), next_cursor=page.next_cursor)

    @post(
        "/{webhook_id:str}/deliveries/{delivery_id:str}/retry",
        status_code=200,
        summary="Make a delivery due now (a failed one is pending again)",
        responses=error_responses(400, 401, 403, 404),
    )
    async def retry_delivery(
        self,
        db: Database,
        auth: AuthContext,
        webhook_worker: DeliveryWorker,
        webhook_id: str,
        delivery_id: str,
    ) -> DeliveryOut:
        """The delivery gets another attempt at once (while the endpoint is enabled); its
        earlier attempts stay listed."""
        record = await webhooks.retry_delivery(db, auth.project_id, webhook_id, delivery_id)
        webhook_worker.wake()
        return delivery_out(record)
