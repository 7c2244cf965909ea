"""Webhook delivery across real `simwire serve` processes: two instances on one PostgreSQL
deliver each event exactly once, and a server killed (kill -9) after a change committed but
before its delivery was sent delivers it after a restart: no event lost over 200 messages
sent through a fake phone."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select

from app.db.engine import Database
from app.db.models import Event, WebhookDelivery
from app.services import credits, devices, webhooks
from app.services.events import record_event
from tests.conftest import TEST_SECRET_KEY
from tests.support.factories import new_tenant
from tests.support.live import eventually, start_phone
from tests.support.processes import ServerProcess
from tests.support.receiver import Receiver, running_receiver

WEBHOOK_ENV = {
    "SIMWIRE_SECRET_KEY": TEST_SECRET_KEY,
    "SIMWIRE_WEBHOOK_ALLOW_PRIVATE": "true",
    "SIMWIRE_RATE_LIMITS": "false",
}


async def all_settled(db: Database, count: int) -> bool:
    """Whether `count` deliveries exist and every one has succeeded."""
    async with db.reading() as session:
        found = (await session.execute(select(WebhookDelivery.status))).scalars().all()
    return len(found) == count and set(found) == {"succeeded"}


@pytest.mark.parametrize("engine_name", ["postgresql"], indirect=True)
async def test_two_instances_deliver_each_event_exactly_once(database_url, db, settings):
    tenant = await new_tenant(db)
    count = 150
    # A receiver slow enough that both instances have sends in flight at once.
    async with running_receiver(Receiver(answer_after_s=0.02)) as receiver:
        await webhooks.create_webhook(db, settings, tenant.project_id, receiver.url)
        env = {**WEBHOOK_ENV, "SIMWIRE_WEBHOOK_POLL_S": "0.05"}
        a, b = ServerProcess(database_url, env), ServerProcess(database_url, env)
        try:
            await asyncio.gather(a.ready(), b.ready())

            async def change(i: int) -> str:
                async with db.transaction() as session:
                    event = await record_event(
                        session, tenant.project_id, "message.sent", {"id": f"msg_{i}"}
                    )
                return event.id

            made: list[str] = []
            for start in range(0, count, 10):
                made += await asyncio.gather(*(change(i) for i in range(start, start + 10)))
            await eventually(lambda: all_settled(db, count), timeout_s=60, interval_s=0.1)
        finally:
            a.stop()
            b.stop()
    assert sorted(receiver.ids()) == sorted(made)  # each once, none twice


async def test_a_server_killed_before_sending_delivers_after_restart_and_loses_nothing(
    database_url, db, settings, tmp_path
):
    tenant = await new_tenant(db)
    await credits.grant(db, tenant.project_id, 1_000_000_000)
    paired = await devices.pair_device(db, tenant.project_id, "fake phone")
    env = {
        **WEBHOOK_ENV,
        "SIMWIRE_SIM_PARTS_PER_MINUTE": "100000",
        "SIMWIRE_DEVICE_MAX_IN_FLIGHT": "50",
        "SIMWIRE_SWEEP_INTERVAL_S": "0.2",
        "SIMWIRE_ACK_TIMEOUT_S": "3",
        # A send cut short by the kill is taken again once its lease lapses.
        "SIMWIRE_WEBHOOK_TIMEOUT_S": "1",
        "SIMWIRE_WEBHOOK_LEASE_S": "2",
    }
    count = 200
    async with running_receiver() as receiver:
        await webhooks.create_webhook(
            db, settings, tenant.project_id, receiver.url, events=["message.sent"]
        )
        # The first server dies (SIGKILL) as it is about to send the 51st delivery: changes
        # committed, their events routed, deliveries claimed, nothing more.
        crashing = ServerProcess(
            database_url,
            {**env, "SIMWIRE_CRASH_AT": "webhook_before_send", "SIMWIRE_CRASH_AFTER": "50"},
        )
        restarted: ServerProcess | None = None
        phone = None
        try:
            await crashing.ready()
            phone = await start_phone(crashing.url, paired.token, tmp_path / "phone.db")
            numbers = [f"+1415555{i:04d}" for i in range(count)]
            async with httpx.AsyncClient(base_url=crashing.url, headers=tenant.headers) as http:
                sent = await http.post(
                    "/v1/messages", json={"to": numbers, "message": "no event lost"}
                )
            assert sent.status_code == 202, sent.text
            message_ids = {message["id"] for message in sent.json()["messages"]}
            assert len(message_ids) == count
            assert await crashing.exit_code(timeout_s=60) == -9
            delivered_before = set(receiver.ids())
            assert len(delivered_before) < count

            restarted = ServerProcess(database_url, env, port=crashing.port)
            await restarted.ready()

            async def every_sent_event_delivered() -> bool:
                async with db.reading() as session:
                    events = (
                        await session.execute(select(Event).where(Event.type == "message.sent"))
                    ).scalars()
                    by_message = {event.data["id"]: event.id for event in events}
                return set(by_message) == message_ids and set(by_message.values()) <= set(
                    receiver.ids()
                )

            await eventually(every_sent_event_delivered, timeout_s=120, interval_s=0.2)
        finally:
            if phone is not None:
                await phone.stop()
            crashing.stop()
            if restarted is not None:
                restarted.stop()
    got = {one.json["data"]["id"]: one.headers["webhook-id"] for one in receiver.received}
    assert set(got) == message_ids
    assert all(one.json["type"] == "message.sent" for one in receiver.received)
