"""Per-device budgets on the phone channel, over real sockets and real HTTP, with a movable
clock: a flooding phone is slowed to its budget and loses nothing."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select

from app.api.app import create_app
from app.db.models import Message
from app.services import devices
from tests.integration.test_hub import RawPhone
from tests.support.factories import new_tenant
from tests.support.live import fast_settings, live_server

pytestmark = pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)


class Clock:
    """Time that moves only when the code under test waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def install(limits: object, clock: Clock) -> None:
    limits.clock = clock  # type: ignore[attr-defined]
    limits.sleep = clock.sleep  # type: ignore[attr-defined]


def inbound(sms_id: str) -> dict:
    return {
        "type": "inbound",
        "message": {"id": sms_id, "address": "+15550001111", "body": f"hi {sms_id}", "sim_slot": 0},
    }


async def inbound_count(db) -> int:
    async with db.sessions() as session:
        query = select(func.count()).select_from(Message).where(Message.direction == "in")
        return int((await session.execute(query)).scalar_one())


async def test_a_phone_flooding_frames_is_slowed_to_its_budget_and_loses_nothing(settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    limited = fast_settings(
        settings,
        rate_limits=True,
        rate_limit_phone_frames_per_s=10.0,
        rate_limit_phone_frames_burst=5,
    )
    clock = Clock()
    async with live_server(limited, db) as server:
        install(server.hub.phone_limits, clock)
        phone = await RawPhone.connect(server, paired.token)  # `hello` is frame 1
        for _ in range(25):
            await phone.send({"type": "heartbeat", "battery": 50, "charging": False, "signal": 3})
        await phone.send(inbound("flood-1"))
        assert (await phone.next("inbound_ack"))["id"] == "flood-1"
        await phone.close()
    # 27 frames, 5 at once, then 10 a second: the server waited 2.2 s before reading on.
    assert sum(clock.waits) == pytest.approx(2.2)
    assert all(wait <= 0.1 + 1e-9 for wait in clock.waits)
    assert await inbound_count(db) == 1


async def test_inbound_over_the_device_budget_waits_and_is_all_stored(settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    other = await devices.pair_device(db, tenant.project_id)
    limited = fast_settings(
        settings,
        rate_limits=True,
        rate_limit_inbound_per_minute=6,
        rate_limit_inbound_burst=2,
    )
    clock = Clock()
    async with live_server(limited, db) as server:
        install(server.hub.phone_limits, clock)
        phone = await RawPhone.connect(server, paired.token)
        for i in range(4):
            await phone.send(inbound(f"in-{i}"))
        acked = [(await phone.next("inbound_ack"))["id"] for _ in range(4)]
        assert acked == ["in-0", "in-1", "in-2", "in-3"]
        # Two at once, then one every 10 s of (movable) time.
        assert sum(clock.waits) == pytest.approx(20.0)
        # Another phone's budget is its own.
        waited = sum(clock.waits)
        second = await RawPhone.connect(server, other.token)
        await second.send(inbound("other-0"))
        assert (await second.next("inbound_ack"))["id"] == "other-0"
        assert sum(clock.waits) == pytest.approx(waited)
        await phone.close()
        await second.close()
    assert await inbound_count(db) == 5


async def test_inbound_batch_stores_what_the_budget_allows_then_429(settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    app = create_app(
        settings.model_copy(
            update={
                "rate_limits": True,
                "rate_limit_inbound_per_minute": 6,
                "rate_limit_inbound_burst": 3,
            }
        ),
        db,
    )
    clock = Clock()
    install(app.state["hub"].phone_limits, clock)
    headers = {"Authorization": f"Bearer {paired.token}"}
    batch = {"messages": [inbound(f"b-{i}")["message"] for i in range(5)]}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://simwire.test"
    ) as http:
        first = await http.post("/v1/phone/inbound", json=batch, headers=headers)
        assert first.status_code == 200
        assert first.json() == {"acked": ["b-0", "b-1", "b-2"], "stored": 3}
        rest = {"messages": batch["messages"][3:]}
        refused = await http.post("/v1/phone/inbound", json=rest, headers=headers)
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert refused.headers["retry-after"] == "10"
        clock.now += 10
        later = await http.post("/v1/phone/inbound", json=rest, headers=headers)
        assert later.json() == {"acked": ["b-3"], "stored": 1}
    assert await inbound_count(db) == 4


async def test_phone_budgets_are_off_with_rate_limits_false(settings, db):
    tenant = await new_tenant(db)
    paired = await devices.pair_device(db, tenant.project_id)
    unlimited = fast_settings(
        settings,
        rate_limits=False,
        rate_limit_phone_frames_per_s=1.0,
        rate_limit_phone_frames_burst=1,
        rate_limit_inbound_per_minute=1,
        rate_limit_inbound_burst=1,
    )
    clock = Clock()
    async with live_server(unlimited, db) as server:
        install(server.hub.phone_limits, clock)
        phone = await RawPhone.connect(server, paired.token)
        for i in range(5):
            await phone.send(inbound(f"free-{i}"))
        assert [(await phone.next("inbound_ack"))["id"] for _ in range(5)] == [
            f"free-{i}" for i in range(5)
        ]
        await phone.close()
    assert clock.waits == []
