"""The headers that sign a webhook delivery, in both conventions at once: Simwire's own
(`X-Webhook-Timestamp`, `X-Webhook-Signature`, `X-Webhook-Signature-256`: hex HMAC-SHA256 of
`"{timestamp}.{raw body}"` keyed with the secret string as shown) and Standard Webhooks
(`webhook-id`, `webhook-timestamp`, `webhook-signature`: `v1,<base64>` HMAC-SHA256 of
`"{id}.{timestamp}.{raw body}"` keyed with the secret's decoded bytes)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from app.webhooks.secrets import secret_bytes


def simple_signature(secret: str, timestamp: int, raw_body: bytes) -> str:
    """Hex HMAC-SHA256 of `"{timestamp}.{raw body}"`, keyed with the UTF-8 bytes of `secret`
    exactly as shown (`whsec_…`)."""
    message = str(timestamp).encode() + b"." + raw_body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def standard_signature(secret: str, message_id: str, timestamp: int, raw_body: bytes) -> str:
    """`v1,` + base64 HMAC-SHA256 of `"{id}.{timestamp}.{raw body}"`, keyed with the bytes the
    secret's base64 encodes (the Standard Webhooks rule)."""
    message = f"{message_id}.{timestamp}.".encode() + raw_body
    digest = hmac.new(secret_bytes(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secrets: list[str], message_id: str, timestamp: int, raw_body: bytes
) -> dict[str, str]:
    """Every signing header of one delivery. `secrets` is the current secret first, then any
    older one still signing after a rotation: `webhook-signature` carries one signature per
    secret, space-separated; the `X-Webhook-*` headers are signed with the current secret."""
    if not secrets:
        raise ValueError("a delivery needs at least one signing secret")
    simple = simple_signature(secrets[0], timestamp, raw_body)
    return {
        "X-Webhook-Timestamp": str(timestamp),
        "X-Webhook-Signature": simple,
        "X-Webhook-Signature-256": "sha256=" + simple,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(secret, message_id, timestamp, raw_body) for secret in secrets
        ),
    }
