"""Webhook delivery from the event outbox to real receivers on loopback: signed so a
hand-written verify() and the `standardwebhooks` package both accept it (and reject a
tampered body or an old timestamp), retried with backoff on a clock the test moves, failed
after about two days, the endpoint disabled after five days of failures; SSRF refused again
at connect time, redirects not followed; the test, deliveries and retry routes; every route
and every event kept to its project."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ssl
import time
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks import WebhookVerificationError

from app.db.engine import Database
from app.db.models import Webhook, WebhookAttempt, WebhookDelivery
from app.domain.webhook_retries import RETRY_DELAYS_S
from app.services import callbacks, credits, devices, outbox, webhooks
from app.services.events import record_event
from app.services.ids import new_id, utcnow
from app.settings import Settings
from app.webhooks.client import WebhookClient
from app.webhooks.delivery import MAX_IN_FLIGHT_PER_ENDPOINT, DeliveryWorker
from app.webhooks.fanout import route_events
from app.webhooks.signing import signature_headers
from tests.conftest import TEST_SECRET_KEY
from tests.support.factories import new_tenant
from tests.support.live import eventually, fast_settings, live_server, start_phone
from tests.support.receiver import Receiver, refusing_port, running_receiver

TOLERANCE_S = 300
JITTER = 0.5  # the worker's random draws in these tests: every retry waits half its ceiling


def verify(raw_body: bytes, headers: dict[str, str], secret: str) -> bool:
    """A receiver's hand-written check, as docs/webhooks.md gives it."""
    timestamp = headers["x-webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > TOLERANCE_S:
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + raw_body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, headers["x-webhook-signature"]) and hmac.compare_digest(
        "sha256=" + expected, headers["x-webhook-signature-256"]
    )


class Clock:
    """A clock the test moves; starts at the real now."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def move_to(self, moment: datetime) -> None:
        assert moment >= self.now
        self.now = moment


def worker(
    db: Database, settings: Settings, clock: Clock | None = None, **changes
) -> DeliveryWorker:
    return DeliveryWorker(
        db, settings.model_copy(update=changes), clock=clock or utcnow, random=lambda: JITTER
    )


async def deliver(delivery_worker: DeliveryWorker) -> int:
    """One round of the worker (route, claim, send), waiting until its sends are recorded."""
    started = await delivery_worker.run_once()
    await delivery_worker.drain()
    return started


async def deliver_all(delivery_worker: DeliveryWorker) -> int:
    """Rounds until nothing is due; how many sends they started in all."""
    total = 0
    while started := await deliver(delivery_worker):
        total += started
    return total


async def add_hook(client: httpx.AsyncClient, headers: dict[str, str], url: str, **body) -> dict:
    response = await client.post("/v1/webhooks", headers=headers, json={"url": url, **body})
    assert response.status_code == 201, response.text
    return response.json()


async def state_change(
    db: Database, project_id: str, type: str = "message.sent", data: dict | None = None
) -> str:
    """A change's event, committed in its own transaction as the services do; its id."""
    async with db.transaction() as session:
        event = await record_event(
            session, project_id, type, data or {"id": new_id("msg"), "request_id": None}
        )
    return event.id


async def deliveries(client, headers, webhook_id: str) -> list[dict]:
    response = await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def test_a_delivery_verifies_by_hand_and_with_standardwebhooks(client, db, settings):
    tenant = await new_tenant(db)
    async with running_receiver() as receiver:
        hook = await add_hook(client, tenant.headers, receiver.url)
        event_id = await state_change(
            db, tenant.project_id, data={"id": "msg_1", "request_id": None, "body": "héllo ✓"}
        )
        assert await deliver(worker(db, settings)) == 1
    [got] = receiver.received
    secret = hook["secret"]
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == event_id
    assert verify(got.body, got.headers, secret)
    assert StandardWebhook(secret).verify(got.body, got.headers)["id"] == event_id

    # The body is the event exactly as GET /v1/events lists it.
    listed = (await client.get("/v1/events", headers=tenant.headers)).json()["data"]
    assert got.json == next(event for event in listed if event["id"] == event_id)
    assert set(got.json) == {"id", "type", "created_at", "project_id", "data"}

    tampered = got.body.replace("héllo".encode(), b"hello")
    assert tampered != got.body
    assert not verify(tampered, got.headers, secret)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(secret).verify(tampered, got.headers)

    # The same delivery signed ten minutes ago: a replay outside the tolerance fails both ways.
    old = int(time.time()) - 600
    replayed = {
        k.lower(): v for k, v in signature_headers([secret], event_id, old, got.body).items()
    }
    assert not verify(got.body, replayed, secret)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(secret).verify(got.body, replayed)


async def test_during_a_rotation_both_secrets_verify(client, db, settings):
    tenant = await new_tenant(db)
    async with running_receiver() as receiver:
        hook = await add_hook(client, tenant.headers, receiver.url)
        rotated = await client.post(f"/v1/webhooks/{hook['id']}/rotate", headers=tenant.headers)
        new_secret = rotated.json()["secret"]
        await state_change(db, tenant.project_id)
        assert await deliver(worker(db, settings)) == 1
    [got] = receiver.received
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (hook["secret"], new_secret):
        assert StandardWebhook(secret).verify(got.body, got.headers)
    assert verify(got.body, got.headers, new_secret)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook("whsec_" + "A" * 43 + "=").verify(got.body, got.headers)


async def test_500_three_times_then_200_is_four_attempts_with_one_webhook_id(client, db, settings):
    tenant = await new_tenant(db)
    clock = Clock()
    delivery_worker = worker(db, settings, clock)
    async with running_receiver(Receiver(statuses=[500, 500, 500])) as receiver:
        hook = await add_hook(client, tenant.headers, receiver.url)
        event_id = await state_change(db, tenant.project_id)
        first_attempt_at = clock.now
        for attempt in range(4):
            assert await deliver(delivery_worker) == 1
            [delivery] = await deliveries(client, tenant.headers, hook["id"])
            if attempt < 3:
                due = datetime.fromisoformat(delivery["next_attempt_at"])
                assert due == clock.now + timedelta(seconds=RETRY_DELAYS_S[attempt] * JITTER)
                clock.move_to(due - timedelta(milliseconds=1))
                assert await deliver(delivery_worker) == 0  # not due yet
                clock.move_to(due)
    assert receiver.ids() == [event_id] * 4
    assert all(verify(one.body, one.headers, hook["secret"]) for one in receiver.received)
    assert delivery["status"] == "succeeded" and delivery["attempt_count"] == 4
    assert delivery["event_id"] == event_id and delivery["event_type"] == "message.sent"
    assert delivery["status_code"] == 200 and delivery["error"] is None
    assert delivery["next_attempt_at"] is None and delivery["completed_at"] is not None
    attempts = delivery["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3, 4]
    assert [a["status_code"] for a in attempts] == [500, 500, 500, 200]
    assert [a["error"] for a in attempts] == ["answered 500"] * 3 + [None]
    assert all(a["latency_ms"] >= 0 for a in attempts)
    assert attempts[3]["next_retry_at"] is None
    waits = [
        datetime.fromisoformat(a["next_retry_at"]) - datetime.fromisoformat(a["attempted_at"])
        for a in attempts[:3]
    ]
    assert waits == [timedelta(seconds=s * JITTER) for s in RETRY_DELAYS_S[:3]]
    assert datetime.fromisoformat(attempts[0]["attempted_at"]) == first_attempt_at
    row = await stored_hook(db, hook["id"])
    assert row.failing_since is None  # the success ended the streak


async def stored_hook(db: Database, webhook_id: str) -> Webhook:
    async with db.reading() as session:
        return (await session.execute(select(Webhook).where(Webhook.id == webhook_id))).scalar_one()


async def walk_the_schedule(
    delivery_worker: DeliveryWorker, clock: Clock, client, headers, webhook_id: str
) -> dict:
    """Runs every attempt of the endpoint's one delivery, moving the clock to each retry."""
    for number in range(1, len(RETRY_DELAYS_S) + 2):
        assert await deliver(delivery_worker) == 1
        [delivery] = await deliveries(client, headers, webhook_id)
        assert delivery["attempt_count"] == number
        if number <= len(RETRY_DELAYS_S):
            assert delivery["status"] == "pending"
            due = datetime.fromisoformat(delivery["next_attempt_at"])
            assert due - clock.now == timedelta(seconds=RETRY_DELAYS_S[number - 1] * JITTER)
            assert await deliver(delivery_worker) == 0
            clock.move_to(due)
    return delivery


async def test_a_receiver_that_never_answers_is_retried_on_schedule_then_failed(
    client, db, settings
):
    tenant = await new_tenant(db)
    clock = Clock()
    # Each attempt gives up after 0.2 s of silence: the schedule runs on the moved clock.
    hanging = worker(db, settings, clock, webhook_timeout_s=0.2, webhook_lease_s=1.0)
    async with running_receiver(Receiver(hang=True)) as receiver:
        hook = await add_hook(client, tenant.headers, receiver.url)
        event_id = await state_change(db, tenant.project_id)
        delivery = await walk_the_schedule(hanging, clock, client, tenant.headers, hook["id"])
    assert receiver.ids() == [event_id] * (len(RETRY_DELAYS_S) + 1)
    assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None
    assert {a["error"] for a in delivery["attempts"]} == {"no answer within 0.2 s"}
    assert {a["status_code"] for a in delivery["attempts"]} == {None}
    # The failed delivery stays listed; later rounds leave it alone.
    clock.move_to(clock.now + timedelta(days=30))
    assert await deliver(hanging) == 0
    assert (await deliveries(client, tenant.headers, hook["id"]))[0]["status"] == "failed"


async def test_a_refused_connection_is_retried_and_five_days_of_failures_disable_the_endpoint(
    client, db, settings
):
    tenant = await new_tenant(db)
    clock = Clock()
    delivery_worker = worker(db, settings, clock)
    with refusing_port() as port:
        async with running_receiver() as watcher:
            bad = await add_hook(client, tenant.headers, f"http://127.0.0.1:{port}/hook")
            good = await add_hook(client, tenant.headers, watcher.url, events=["webhook.disabled"])
            await state_change(db, tenant.project_id)
            failing_since = clock.now
            delivery = await walk_the_schedule(
                delivery_worker, clock, client, tenant.headers, bad["id"]
            )
            assert delivery["status"] == "failed"
            assert delivery["error"].startswith("could not connect")
            row = await stored_hook(db, bad["id"])
            assert row.enabled and row.failing_since == failing_since  # 2 days: not yet

            clock.move_to(failing_since + timedelta(days=5))
            await state_change(db, tenant.project_id, "message.delivered")
            assert await deliver(delivery_worker) == 1
            row = await stored_hook(db, bad["id"])
            assert not row.enabled
            assert row.disabled_reason and "5 days" in row.disabled_reason
            # The webhook.disabled event, recorded with the change, reaches the other endpoint.
            assert await deliver(delivery_worker) == 1
            [told] = watcher.received
    assert told.json["type"] == "webhook.disabled"
    assert told.json["data"]["id"] == bad["id"] and told.json["data"]["enabled"] is False
    shown = (await client.get(f"/v1/webhooks/{bad['id']}", headers=tenant.headers)).json()
    assert shown["enabled"] is False and "5 days" in shown["disabled_reason"]
    listed = await client.get("/v1/events?type=webhook.disabled", headers=tenant.headers)
    assert [e["data"]["id"] for e in listed.json()["data"]] == [bad["id"]]
    # A disabled endpoint is sent nothing new.
    await state_change(db, tenant.project_id)
    assert await deliver(delivery_worker) == 0
    assert len(await deliveries(client, tenant.headers, bad["id"])) == 2
    assert good["enabled"]


async def test_private_targets_are_refused_again_at_connect_time(client, db, settings):
    """Endpoints made while private targets were allowed; a worker that does not allow them
    refuses to connect, saying why, and the receiver behind them hears nothing."""
    tenant = await new_tenant(db)
    strict = worker(db, settings, webhook_allow_private=False)
    async with running_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        refusals = {
            f"https://127.0.0.1:{port}/hook": "127.0.0.1 is a loopback address",
            f"https://localhost:{port}/hook": "'localhost' resolves to",
            "https://10.0.0.1/hook": "10.0.0.1 is a private address",
            "https://192.168.1.1/hook": "192.168.1.1 is a private address",
            "https://169.254.169.254/latest/meta-data": "169.254.169.254 is a cloud metadata",
            f"https://[::1]:{port}/hook": "::1 is a loopback address",
            f"https://[::ffff:127.0.0.1]:{port}/hook": "127.0.0.1 is a loopback address",
            receiver.url: "only https URLs are allowed",
        }
        hooks = {
            (await add_hook(client, tenant.headers, url))["id"]: reason
            for url, reason in refusals.items()
        }
        await state_change(db, tenant.project_id)
        assert await deliver(strict) == len(hooks)
        assert receiver.received == []
    for webhook_id, reason in hooks.items():
        [delivery] = await deliveries(client, tenant.headers, webhook_id)
        assert delivery["status"] == "pending" and delivery["status_code"] is None
        assert delivery["error"].startswith("not sent: ") and reason in delivery["error"]
        assert any(
            kind in delivery["error"] for kind in ("loopback", "private", "metadata", "https")
        )


async def test_a_redirect_is_not_followed(client, db, settings):
    tenant = await new_tenant(db)
    async with running_receiver() as inner:
        async with running_receiver(Receiver(redirect_to=inner.url)) as outer:
            hook = await add_hook(client, tenant.headers, outer.url)
            await state_change(db, tenant.project_id)
            assert await deliver(worker(db, settings)) == 1
        assert len(outer.received) == 1
        assert inner.received == []
    [delivery] = await deliveries(client, tenant.headers, hook["id"])
    assert delivery["status"] == "pending" and delivery["status_code"] == 302
    assert delivery["error"] == "answered 302: redirects are not followed"


def _certificate_authority(tmp_path: Path, name: str) -> tuple[Path, Path, ssl.SSLContext]:
    """A CA and a server certificate for `name` signed by it: (cert file, key file, a client
    context that trusts only that CA)."""
    now = datetime.now(UTC)

    def build(subject: str, issuer: x509.Name, public_key, signing_key, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Simwire test CA")])
    ca_cert = build("Simwire test CA", ca_name, ca_key.public_key(), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = build(name, ca_name, server_key.public_key(), ca_key, ca=False)
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    trust = ssl.create_default_context(
        cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    )
    return cert_file, key_file, trust


async def test_the_connection_goes_to_the_address_checked_with_the_name_in_host_and_tls(
    tmp_path,
):
    """The name is resolved once (here by a resolver that knows names no DNS does); the
    request goes to that address with the name in `Host` and in TLS SNI, so the certificate is
    verified for the name; a certificate for another name is refused."""
    name = "hooks.simwire.test"
    cert_file, key_file, trust = _certificate_authority(tmp_path, name)
    lookups: list[str] = []

    async def resolver(host: str, port: int):
        lookups.append(host)
        return [ip_address("127.0.0.1")] if host.endswith(".simwire.test") else []

    client = WebhookClient(allow_private=True, timeout_s=5, resolver=resolver, verify=trust)
    try:
        async with running_receiver(
            ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)
        ) as receiver:
            port = receiver.url.split(":")[2].split("/")[0]
            result = await client.post(f"https://{name}:{port}/hook?x=1", b"{}", {})
            assert (result.status_code, result.error) == (200, None)
            assert receiver.received[0].headers["host"] == f"{name}:{port}"
            assert receiver.received[0].path == "/hook"
            other = await client.post(f"https://other.simwire.test:{port}/hook", b"{}", {})
            assert other.status_code is None and "could not connect" in str(other.error)
            assert len(receiver.received) == 1
            await client.aclose()  # its idle keep-alive connection would hold the server up
        assert lookups == [name, "other.simwire.test"]
        missing = await client.post("https://nowhere.example.invalid/hook", b"{}", {})
        assert missing.error == "not sent: host 'nowhere.example.invalid' does not resolve"
    finally:
        await client.aclose()


async def test_a_name_with_any_private_address_is_refused_when_private_targets_are_not_allowed():
    async def resolver(host: str, port: int):
        return [ip_address("93.184.215.14"), ip_address("10.1.2.3")]

    client = WebhookClient(allow_private=False, timeout_s=5, resolver=resolver)
    result = await client.post("https://rebinding.example.com/hook", b"{}", {})
    assert result.status_code is None
    assert result.error == (
        "not sent: 'rebinding.example.com' resolves to 10.1.2.3 is a private address"
    )


async def test_the_test_route_sends_a_webhook_test_to_that_endpoint_only(client, db, settings):
    tenant = await new_tenant(db)
    async with running_receiver() as tested, running_receiver() as other:
        hook = await add_hook(client, tenant.headers, tested.url)
        await add_hook(client, tenant.headers, other.url)
        response = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=tenant.headers)
        assert response.status_code == 200, response.text
        delivery = response.json()
        # Nothing else routes it anywhere: the other endpoint is never sent it.
        assert await deliver(worker(db, settings)) == 0
    assert other.received == []
    [got] = tested.received
    assert got.json["type"] == "webhook.test" and got.json["data"]["id"] == hook["id"]
    assert verify(got.body, got.headers, hook["secret"])
    assert delivery["event_id"] == got.json["id"] == got.headers["webhook-id"]
    assert delivery["status"] == "succeeded" and delivery["event_type"] == "webhook.test"
    assert [a["status_code"] for a in delivery["attempts"]] == [200]
    assert await deliveries(client, tenant.headers, hook["id"]) == [delivery]


async def test_a_test_delivery_is_its_callers_to_send_before_any_round_takes_it(
    client, db, settings
):
    """A background round between the test delivery's commit and the route's own send used to
    lease it first, and the route then had nothing to send (or to answer with)."""
    tenant = await new_tenant(db)
    async with running_receiver() as receiver:
        hook = await add_hook(client, tenant.headers, receiver.url)
        delivery_id = await webhooks.create_test_delivery(db, tenant.project_id, hook["id"])
        clock = Clock()  # after the commit: the delivery was made in this clock's past
        rounds = worker(db, settings, clock)
        assert await deliver(rounds) == 0  # not due for the rounds yet
        await rounds.deliver_now(delivery_id)
        assert [r.json["type"] for r in receiver.received] == ["webhook.test"]
        # Had the caller never sent it, a round takes it once the hold is over.
        orphan = await webhooks.create_test_delivery(db, tenant.project_id, hook["id"])
        clock.move_to(clock.now + timedelta(seconds=webhooks.TEST_DELIVERY_HOLD_S + 1))
        assert await deliver(rounds) == 1
        assert len(receiver.received) == 2
    [listed] = [
        d for d in await deliveries(client, tenant.headers, hook["id"]) if d["id"] == orphan
    ]
    assert listed["status"] == "succeeded"


async def test_retry_makes_a_failed_delivery_pending_and_due_now(client, db, settings):
    tenant = await new_tenant(db)
    clock = Clock()
    delivery_worker = worker(db, settings, clock)
    with refusing_port() as port:
        hook = await add_hook(client, tenant.headers, f"http://127.0.0.1:{port}/hook")
        await state_change(db, tenant.project_id)
        failed = await walk_the_schedule(delivery_worker, clock, client, tenant.headers, hook["id"])
    assert failed["status"] == "failed"
    async with running_receiver() as receiver:
        path = f"/v1/webhooks/{hook['id']}"
        moved = await client.patch(path, headers=tenant.headers, json={"url": receiver.url})
        assert moved.status_code == 200, moved.text
        retried = await client.post(
            f"{path}/deliveries/{failed['id']}/retry", headers=tenant.headers
        )
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "pending"
        assert datetime.fromisoformat(retried.json()["next_attempt_at"]) <= utcnow()
        assert len(retried.json()["attempts"]) == len(RETRY_DELAYS_S) + 1
        assert await deliver(delivery_worker) == 1
    assert receiver.ids() == [failed["event_id"]]
    [done] = await deliveries(client, tenant.headers, hook["id"])
    assert done["status"] == "succeeded" and done["attempt_count"] == len(RETRY_DELAYS_S) + 2


async def test_deliveries_are_listed_newest_first_a_page_at_a_time(client, db, settings):
    tenant = await new_tenant(db)
    async with running_receiver() as receiver:
        hook = await add_hook(client, tenant.headers, receiver.url)
        made = [await state_change(db, tenant.project_id) for _ in range(5)]
        assert await deliver_all(worker(db, settings)) == 5
    path = f"/v1/webhooks/{hook['id']}/deliveries"
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get(path, headers=tenant.headers, params=params)).json()
        assert page["count"] == len(page["data"]) <= 2
        seen += [delivery["event_id"] for delivery in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]


@pytest.mark.parametrize(
    ("suffix", "params", "status", "code"),
    [
        ("/deliveries", {"limit": "0"}, 400, "invalid_input"),
        ("/deliveries", {"limit": "abc"}, 400, "invalid_input"),
        ("/deliveries", {"cursor": "not-a-cursor"}, 400, "invalid_cursor"),
        ("/deliveries/dlv_missing/retry", {}, 404, "not_found"),
    ],
)
async def test_bad_input_to_the_delivery_routes_is_a_clear_error(
    client, db, suffix, params, status, code
):
    tenant = await new_tenant(db)
    hook = await add_hook(client, tenant.headers, "http://127.0.0.1:9/hook")
    method = client.post if suffix.endswith("/retry") else client.get
    response = await method(
        f"/v1/webhooks/{hook['id']}{suffix}", headers=tenant.headers, params=params
    )
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["message"]


async def test_routes_of_a_missing_endpoint_are_404_and_need_webhooks_manage(client, db):
    tenant = await new_tenant(db)
    reader = await new_tenant(db, "reader", scopes=["messages.read"])
    for method, path in [
        ("POST", "/v1/webhooks/wh_missing/test"),
        ("GET", "/v1/webhooks/wh_missing/deliveries"),
        ("POST", "/v1/webhooks/wh_missing/deliveries/dlv_missing/retry"),
    ]:
        response = await client.request(method, path, headers=tenant.headers)
        assert response.status_code == 404 and response.json()["error"] == "not_found"
        refused = await client.request(method, path, headers=reader.headers)
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
        assert (await client.request(method, path)).status_code == 401


async def test_one_project_never_reaches_another_projects_deliveries(client, db, settings):
    ours = await new_tenant(db, "ours")
    theirs = await new_tenant(db, "theirs")
    async with running_receiver() as our_receiver, running_receiver() as their_receiver:
        our_hook = await add_hook(client, ours.headers, our_receiver.url)
        their_hook = await add_hook(client, theirs.headers, their_receiver.url)
        ours_event = await state_change(db, ours.project_id)
        theirs_event = await state_change(db, theirs.project_id)
        assert await deliver(worker(db, settings)) == 2
    assert our_receiver.ids() == [ours_event]
    assert their_receiver.ids() == [theirs_event]
    [their_delivery] = await deliveries(client, theirs.headers, their_hook["id"])
    [our_delivery] = await deliveries(client, ours.headers, our_hook["id"])
    base = f"/v1/webhooks/{their_hook['id']}"
    assert (await client.get(f"{base}/deliveries", headers=ours.headers)).status_code == 404
    assert (await client.post(f"{base}/test", headers=ours.headers)).status_code == 404
    retry = f"{base}/deliveries/{their_delivery['id']}/retry"
    assert (await client.post(retry, headers=ours.headers)).status_code == 404
    # Our endpoint with their delivery's id is no way in either.
    mixed = f"/v1/webhooks/{our_hook['id']}/deliveries/{their_delivery['id']}/retry"
    assert (await client.post(mixed, headers=ours.headers)).status_code == 404
    assert [d["id"] for d in await deliveries(client, ours.headers, our_hook["id"])] == [
        our_delivery["id"]
    ]
    assert their_receiver.received[0].json["project_id"] == theirs.project_id


async def test_a_requests_callback_endpoint_gets_its_events_and_replies_and_stays_hidden(
    client, db, settings
):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10_000_000)
    sent = await client.post(
        "/v1/messages", headers=tenant.headers, json={"to": "+14155550100", "message": "hi"}
    )
    assert sent.status_code == 202, sent.text
    request_id = sent.json()["request_id"]
    message_id = sent.json()["messages"][0]["id"]
    secret = callbacks.callback_secret(TEST_SECRET_KEY, request_id)
    async with running_receiver() as callback, running_receiver() as listed_receiver:
        listed = await add_hook(client, tenant.headers, listed_receiver.url)
        order = await callbacks.callback_order(settings, callback.url, request_id)
        async with db.transaction() as session:
            hidden = callbacks.add_callback_endpoint(session, tenant.project_id, request_id, order)
        ours = [
            await state_change(db, tenant.project_id, "message.sent", {"request_id": request_id}),
            await state_change(
                db, tenant.project_id, "request.completed", {"request_id": request_id}
            ),
            await state_change(
                db,
                tenant.project_id,
                "message.received",
                {"id": new_id("msg"), "request_id": None, "in_reply_to": message_id},
            ),
        ]
        elsewhere = [
            await state_change(db, tenant.project_id, "message.sent", {"request_id": "req_x"}),
            await state_change(
                db,
                tenant.project_id,
                "message.received",
                {"id": new_id("msg"), "request_id": None, "in_reply_to": None},
            ),
            await state_change(db, tenant.project_id, "device.online", {"id": "dev_1"}),
        ]
        await deliver_all(worker(db, settings))
        # Deleting every listed endpoint leaves the request's own alone.
        gone = await client.delete("/v1/webhooks", headers=tenant.headers)
        assert gone.json() == {"success": True, "deleted": 1}
    assert [one for one in callback.ids() if one in ours + elsewhere] == ours
    assert all(StandardWebhook(secret).verify(one.body, one.headers) for one in callback.received)
    assert set(ours + elsewhere) <= set(listed_receiver.ids())
    shown = (await client.get("/v1/webhooks", headers=tenant.headers)).json()
    assert shown["count"] == 0
    for path in (f"/v1/webhooks/{hidden.id}", f"/v1/webhooks/{hidden.id}/deliveries"):
        assert (await client.get(path, headers=tenant.headers)).status_code == 404
    assert (await stored_hook(db, hidden.id)).request_id == request_id
    assert listed["id"] != hidden.id


async def batched_state_change(db: Database, project_id: str) -> str:
    """A change's event written as the send batches and the hub write theirs: many rows at
    once inside a transaction already begun (a `COPY` on PostgreSQL); its id."""
    row = outbox.event_row(project_id, "message.sent", {"id": new_id("msg"), "request_id": None})

    def write(conn) -> None:
        conn.execute(select(1))
        outbox.write_events(conn, [row])

    await db.run(write)
    return row["id"]


@pytest.mark.parametrize("written", ["one insert", "batched"])
async def test_a_committed_event_wakes_the_servers_worker_at_once(settings, db, written):
    """The running server's worker polls only every 30 s here: the commit itself wakes it,
    whichever way the event was written."""
    change = state_change if written == "one insert" else batched_state_change
    tenant = await new_tenant(db)
    slow_poll = settings.model_copy(update={"webhook_poll_s": 30.0})
    async with live_server(slow_poll) as server, running_receiver() as receiver:
        async with httpx.AsyncClient(base_url=server.url, headers=tenant.headers) as http:
            response = await http.post("/v1/webhooks", json={"url": receiver.url})
            assert response.status_code == 201, response.text
        await eventually(lambda: server.app.state["webhook_worker"]._task is not None)
        latencies: dict[str, float] = {}
        for _ in range(5):
            started = time.monotonic()
            event_id = await change(db, tenant.project_id)
            arrived = await eventually(
                lambda wanted=event_id: next(
                    (r for r in receiver.received if r.headers["webhook-id"] == wanted), None
                ),
                timeout_s=5,
                interval_s=0.005,
            )
            latencies[event_id] = arrived.at - started
    slow = [event_id for event_id, seconds in latencies.items() if seconds >= 1.0]
    assert not slow, (latencies, await attempts_of(db, slow))


async def attempts_of(db: Database, event_ids: list[str]) -> list[tuple]:
    """How each delivery of these events went, try by try (for a failure's message)."""
    async with db.reading() as session:
        rows = await session.execute(
            select(
                WebhookDelivery.event_id,
                WebhookAttempt.number,
                WebhookAttempt.status_code,
                WebhookAttempt.latency_ms,
                WebhookAttempt.error,
                WebhookAttempt.created_at,
            )
            .join(WebhookAttempt, WebhookAttempt.delivery_id == WebhookDelivery.id)
            .where(WebhookDelivery.event_id.in_(event_ids))
            .order_by(WebhookAttempt.seq)
        )
        return [tuple(row) for row in rows]


async def test_a_message_sent_through_a_phone_and_its_reply_reach_a_receiver(
    settings, db, tmp_path
):
    """The whole path on a running server: a message through a fake phone reaches the
    receiver as message.sent and message.delivered, the reply as message.received naming it in
    `in_reply_to`; each verifies by hand and with standardwebhooks."""
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 10_000_000)
    paired = await devices.pair_device(db, tenant.project_id, "fake phone")
    async with (
        live_server(fast_settings(settings)) as server,
        running_receiver() as receiver,
        httpx.AsyncClient(base_url=server.url, headers=tenant.headers) as http,
    ):
        hook = await add_hook(
            http,
            tenant.headers,
            receiver.url,
            events=["message.sent", "message.delivered", "message.received"],
        )
        phone = await start_phone(server, paired.token, tmp_path / "phone.db")
        try:
            sent = await http.post("/v1/messages", json={"to": "+14155550100", "message": "ping"})
            assert sent.status_code == 202, sent.text
            message_id = sent.json()["messages"][0]["id"]

            def of_type(kind: str):
                return [one for one in receiver.received if one.json["type"] == kind]

            await eventually(lambda: of_type("message.delivered"), timeout_s=15)
            await phone.radio.receive("+14155550100", "pong")
            [reply] = await eventually(lambda: of_type("message.received"), timeout_s=15)
        finally:
            await phone.stop()
    [sent_event] = of_type("message.sent")
    [delivered_event] = of_type("message.delivered")
    assert sent_event.json["data"]["id"] == delivered_event.json["data"]["id"] == message_id
    assert sent_event.json["data"]["status"] == "sent"
    assert delivered_event.json["data"]["status"] == "delivered"
    assert reply.json["data"]["in_reply_to"] == message_id
    assert reply.json["data"]["body"] == "pong"
    for one in receiver.received:
        assert verify(one.body, one.headers, hook["secret"])
        assert StandardWebhook(hook["secret"]).verify(one.body, one.headers)
    assert len(receiver.ids()) == len(set(receiver.ids())) == 3


async def test_one_slow_endpoint_never_holds_up_another(client, db, settings):
    """A running worker with ten events for an endpoint that never answers and for one that
    does: the quick one gets all ten while the slow one still holds its few sends."""
    tenant = await new_tenant(db)
    running = worker(db, settings, webhook_timeout_s=5.0, webhook_lease_s=10.0)
    async with running_receiver(Receiver(hang=True)) as slow, running_receiver() as quick:
        await add_hook(client, tenant.headers, slow.url)
        await add_hook(client, tenant.headers, quick.url)
        running.start()
        try:
            started = time.monotonic()
            made = [await state_change(db, tenant.project_id) for _ in range(10)]
            await eventually(lambda: sorted(quick.ids()) == sorted(made), timeout_s=4)
            took_s = time.monotonic() - started
            assert len(slow.received) == MAX_IN_FLIGHT_PER_ENDPOINT  # its cap, no more
        finally:
            await running.stop()
    assert took_s < 2.0


async def test_no_url_secret_or_body_reaches_the_logs(client, db, settings, capsys, caplog):
    tenant = await new_tenant(db)
    async with running_receiver(Receiver(statuses=[500])) as receiver:
        await add_hook(client, tenant.headers, receiver.url + "?token=url-secret-4711")
        await state_change(db, tenant.project_id, data={"id": "msg_1", "body": "body-secret-0815"})
        assert await deliver(worker(db, settings)) == 1
    assert receiver.received[0].path == "/hook"
    logged = caplog.text + capsys.readouterr().err
    assert "url-secret-4711" not in logged and "body-secret-0815" not in logged


async def test_two_instances_routing_one_backlog_at_once_make_each_delivery_once(settings, db):
    """Each takes the oldest events no other one holds (`FOR UPDATE SKIP LOCKED` on
    PostgreSQL) and marks them routed in the same statement: together they route every event
    once, and each gets its one delivery (a second would break the deliveries' unique key)."""
    tenant = await new_tenant(db)
    issued = await webhooks.create_webhook(
        db, settings, tenant.project_id, "http://127.0.0.1:9/hook", ["message.sent"]
    )
    rows = [
        outbox.event_row(tenant.project_id, "message.sent", {"id": new_id("msg"), "n": n})
        for n in range(1_200)
    ]
    async with db.transaction() as session:
        await outbox.insert_events(session, rows)
    second = Database(settings.database_url)  # another instance's pool on the same database

    async def route_all(database: Database) -> int:
        routed = 0
        while taken := await route_events(database, batch=50):
            routed += taken
        return routed

    try:
        routed = await asyncio.gather(route_all(db), route_all(second))
    finally:
        await second.dispose()
    assert sum(routed) == len(rows)
    async with db.sessions() as session:
        made = (
            await session.execute(
                select(WebhookDelivery.event_id).where(
                    WebhookDelivery.webhook_id == issued.webhook.id
                )
            )
        ).scalars()
        assert sorted(made) == sorted(row["id"] for row in rows)
    assert await route_events(db) == 0
