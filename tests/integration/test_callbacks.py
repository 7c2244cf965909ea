"""`callback_url` on a paid (x402) send: refused before any payment when Simwire must not call
it; once paid, the 202 (and every retry's answer) shows the request's `callback_secret`, and the
request gets a hidden endpoint of its own that the project's webhook routes never show."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from x402.http import decode_payment_required_header, encode_payment_signature_header

from app.db.engine import Database
from app.db.models import Payment, Webhook
from app.payments.devchain import DevChain
from app.payments.networks import NetworkConfig
from app.services.callbacks import CALLBACK_EVENTS, callback_secret
from app.services.projects import create_key
from app.settings import Settings
from app.webhooks.secrets import SecretBox
from tests.conftest import TEST_SECRET_KEY
from tests.integration.test_x402 import SEND, Rig, paid_rig
from tests.support.devchain import official_client
from tests.support.factories import new_tenant

pytest_plugins = ["tests.support.devchain"]

HOOK = "http://127.0.0.1:9/callback"


@pytest.fixture
async def rig(
    settings: Settings, db: Database, devchain: DevChain, local_network: NetworkConfig
) -> AsyncIterator[Rig]:
    async for made in paid_rig(settings, db, devchain, local_network):
        yield made


@pytest.fixture(scope="module")
async def local_network(devchain: DevChain) -> NetworkConfig:
    from eth_account import Account

    relayer: LocalAccount = Account.create()
    await devchain.set_eth_balance(relayer.address, 10**20)
    return devchain.network_config(
        relayer_key=relayer.key.to_0x_hex(), pay_to=Account.create().address, v1_name=None
    )


async def _paid_header(rig: Rig, payer: LocalAccount, body: dict) -> str:
    offer = await rig.http.post("/v1/messages", json=body)
    assert offer.status_code == 402, offer.text
    required = decode_payment_required_header(offer.headers["PAYMENT-REQUIRED"])
    payload = await official_client(payer, rig.network).create_payment_payload(required)
    return encode_payment_signature_header(payload)


async def test_a_paid_send_with_a_callback_shows_its_secret_on_every_answer(
    rig: Rig, funded_payer: LocalAccount
) -> None:
    body = {**SEND, "callback_url": HOOK}
    header = await _paid_header(rig, funded_payer, body)

    first = await rig.pay(header, None, body)
    again = await rig.pay(header, None, body)

    assert first.status_code == 202, first.text
    answer = first.json()
    assert answer["callback_url"] == HOOK
    secret = answer["callback_secret"]
    assert secret == callback_secret(TEST_SECRET_KEY, answer["request_id"])
    assert secret.startswith("whsec_")
    assert again.status_code == 202 and again.json() == answer
    async with rig.db.sessions() as session:
        [endpoint] = (await session.execute(select(Webhook))).scalars()
        [payment] = (await session.execute(select(Payment))).scalars()
        stored = (await session.execute(select(Payment.order, Payment.response))).one()
    assert endpoint.request_id == answer["request_id"] and endpoint.url == HOOK
    assert endpoint.events == CALLBACK_EVENTS and endpoint.enabled
    assert SecretBox(TEST_SECRET_KEY).open(endpoint.secret_sealed, endpoint.id) == secret
    # Never kept in the clear: not in the order, not in the answer a retry is given from.
    assert secret not in str(stored) and payment.status == "settled"


async def test_a_callback_endpoint_is_not_one_of_the_projects_webhooks(
    rig: Rig, funded_payer: LocalAccount
) -> None:
    body = {**SEND, "callback_url": HOOK}
    paid = await rig.pay(await _paid_header(rig, funded_payer, body), None, body)
    assert paid.status_code == 202, paid.text
    async with rig.db.sessions() as session:
        [endpoint] = (await session.execute(select(Webhook))).scalars()
    # The key of the project whose phones send paid messages sees none of it.
    issued = await create_key(rig.db, endpoint.project_id, "owner")
    headers = {"Authorization": f"Bearer {issued.raw}"}
    assert (await rig.http.get("/v1/webhooks", headers=headers)).json()["data"] == []
    missing = await rig.http.get(f"/v1/webhooks/{endpoint.id}", headers=headers)
    assert missing.status_code == 404
    assert (await rig.http.delete("/v1/webhooks", headers=headers)).status_code == 200
    async with rig.db.sessions() as session:
        assert (await session.execute(select(Webhook.id))).scalars().all() == [endpoint.id]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://10.0.0.1/hook", "webhook_url_not_allowed"),
        ("https://169.254.169.254/latest", "webhook_url_not_allowed"),
        ("http://example.com/hook", "webhook_url_not_allowed"),
        ("not a url", "invalid_url"),
        ("https://example.com/" + "a" * 2048, "invalid_url"),
    ],
)
async def test_a_callback_simwire_must_not_call_is_refused_before_any_payment(
    settings: Settings,
    db: Database,
    devchain: DevChain,
    local_network: NetworkConfig,
    url: str,
    code: str,
) -> None:
    strict = settings.model_copy(update={"webhook_allow_private": False})
    async for rig in paid_rig(strict, db, devchain, local_network):
        response = await rig.http.post("/v1/messages", json={**SEND, "callback_url": url})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == code
        assert "PAYMENT-REQUIRED" not in response.headers
        assert await rig.count(Payment) == 0


async def test_a_send_with_a_key_is_told_to_use_webhooks(rig: Rig) -> None:
    tenant = await new_tenant(rig.db)
    response = await rig.http.post(
        "/v1/messages",
        json={**SEND, "callback_url": HOOK},
        headers={"Authorization": f"Bearer {tenant.key}"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "callback_url_not_supported"
    assert "POST /v1/webhooks" in response.json()["message"]
