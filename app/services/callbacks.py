"""`callback_url` of a paid (x402) send: that request's message events, and the replies to its
messages, go to a hidden webhook endpoint of its own, signed with a per-request secret.

The secret is derived from the operator key and the request id (HMAC-SHA256), so the 202 and
every retry of the same payment show the same one without storing it in the clear; the endpoint
row keeps it sealed like any other endpoint's. The URL is checked (SSRF rules) before any
payment is asked for."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Webhook
from app.domain.errors import Unavailable
from app.services.ids import new_id, utcnow
from app.settings import Settings
from app.webhooks.secrets import SECRET_PREFIX, SecretBox
from app.webhooks.ssrf import check_webhook_url

# What a request's callback is told about: its messages, its completion, replies to it.
CALLBACK_EVENTS = [
    "message.queued",
    "message.sent",
    "message.delivered",
    "message.failed",
    "message.expired",
    "message.canceled",
    "message.received",
    "request.completed",
]
_DERIVATION = b"simwire callback secret v1:"


def _operator_key(settings: Settings) -> str:
    if settings.secret_key is None:
        raise Unavailable(
            "`callback_url` needs an operator secret key to sign callbacks: the server's "
            "operator sets SIMWIRE_SECRET_KEY (32 or more characters)"
        )
    return settings.secret_key.get_secret_value()


def callback_secret(operator_key: str, request_id: str) -> str:
    """The request's signing secret, in Standard Webhooks form (`whsec_` + base64 of 32 bytes)."""
    digest = hmac.new(operator_key.encode(), _DERIVATION + request_id.encode(), hashlib.sha256)
    return SECRET_PREFIX + base64.b64encode(digest.digest()).decode()


async def callback_order(settings: Settings, url: str, request_id: str) -> dict[str, Any]:
    """What a paid send's order carries for its callback: the checked URL and the endpoint
    (id and sealed secret) to create when the payment is fulfilled. InvalidWebhookUrl /
    WebhookUrlNotAllowed for a URL Simwire must not call; Unavailable without an operator key."""
    operator_key = _operator_key(settings)
    await check_webhook_url(url, settings.webhook_allow_private)
    webhook_id = new_id("wh")
    sealed = SecretBox(operator_key).seal(callback_secret(operator_key, request_id), webhook_id)
    return {"url": url, "webhook_id": webhook_id, "secret_sealed": sealed}


def add_callback_endpoint(
    session: AsyncSession, project_id: str, request_id: str, callback: dict[str, Any]
) -> Webhook:
    """The request's hidden endpoint, added in the caller's transaction (the one that queues
    the request's messages, so no event of theirs is routed before it exists)."""
    now = utcnow()
    endpoint = Webhook(
        id=callback["webhook_id"],
        project_id=project_id,
        url=callback["url"],
        events=list(CALLBACK_EVENTS),
        description=f"callback_url of {request_id}",
        enabled=True,
        secret_sealed=callback["secret_sealed"],
        request_id=request_id,
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    return endpoint


def with_callback_secret(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A paid send's 202 body with `callback_secret` when it has a callback: shown with the
    first answer and with every retry's, never stored in the clear."""
    if not body.get("callback_url") or settings.secret_key is None:
        return body
    secret = callback_secret(settings.secret_key.get_secret_value(), body["request_id"])
    return {**body, "callback_secret": secret}
