"""Webhook signatures verify the way a receiver checks them: with a ten-line hand-written
verify() over `{timestamp}.{raw body}` and with the `standardwebhooks` package; a tampered
body, a wrong secret or an old timestamp fails both."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from app.webhooks.secrets import new_signing_secret, secret_bytes
from app.webhooks.signing import signature_headers, simple_signature, standard_signature

TOLERANCE_S = 300


def verify(raw_body: bytes, headers: dict[str, str], secret: str) -> bool:
    """What a receiver writes by hand from the docs."""
    timestamp = headers["X-Webhook-Timestamp"]
    if abs(time.time() - int(timestamp)) > TOLERANCE_S:
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + raw_body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, headers["X-Webhook-Signature"]) and hmac.compare_digest(
        "sha256=" + expected, headers["X-Webhook-Signature-256"]
    )


def delivery(secrets: list[str], timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"id": "evt_1", "type": "message.sent", "data": {"id": "msg_1", "body": "héllo ✓"}}
    ).encode()
    stamp = int(time.time()) if timestamp is None else timestamp
    return body, signature_headers(secrets, "evt_1", stamp, body)


def test_a_secret_is_whsec_and_base64_of_32_random_bytes():
    first, second = new_signing_secret(), new_signing_secret()
    assert first.startswith("whsec_") and first != second
    assert len(secret_bytes(first)) == 32


def test_both_conventions_verify():
    secret = new_signing_secret()
    body, headers = delivery([secret])
    assert verify(body, headers, secret)
    assert Webhook(secret).verify(body, headers)["data"]["body"] == "héllo ✓"
    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-timestamp"] == headers["X-Webhook-Timestamp"]


def test_the_signatures_match_the_published_recipes():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    timestamp = 1614265330
    # The Standard Webhooks specification's own example.
    assert (
        standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    expected = hmac.new(secret.encode(), b"1614265330." + body, hashlib.sha256).hexdigest()
    assert simple_signature(secret, timestamp, body) == expected


def test_a_tampered_body_fails_both():
    secret = new_signing_secret()
    body, headers = delivery([secret])
    tampered = body.replace(b"msg_1", b"msg_2")
    assert not verify(tampered, headers, secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)


def test_a_wrong_secret_fails_both():
    body, headers = delivery([new_signing_secret()])
    other = new_signing_secret()
    assert not verify(body, headers, other)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


def test_an_old_timestamp_fails_both():
    secret = new_signing_secret()
    body, headers = delivery([secret], timestamp=int(time.time()) - 3600)
    assert not verify(body, headers, secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_during_a_rotation_either_secret_verifies_the_standard_signature():
    new, old = new_signing_secret(), new_signing_secret()
    body, headers = delivery([new, old])
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(body, headers)["id"] == "evt_1"
    assert Webhook(old).verify(body, headers)["id"] == "evt_1"
    assert verify(body, headers, new)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_signing_secret()).verify(body, headers)


def test_a_delivery_needs_a_secret():
    with pytest.raises(ValueError, match="signing secret"):
        signature_headers([], "evt_1", 0, b"{}")
