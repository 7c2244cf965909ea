"""What the hub writes of its connected phones every 30 s (`devices.flush_seen`, one
statement for all of them through the driver): when each was last heard from and its last
battery, charging and signal, a value a phone did not report keeping the stored one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlmodel import col

from app.db.models import Device
from app.services import devices
from app.services.devices import SeenState
from tests.support.factories import new_tenant


async def stored(db, device_id: str) -> Device:
    async with db.sessions() as session:
        return (
            await session.execute(select(Device).where(col(Device.id) == device_id))
        ).scalar_one()


async def test_a_flush_writes_each_phone_and_keeps_what_it_did_not_report(db):
    tenant = await new_tenant(db)
    first, second, untouched = [
        (await devices.pair_device(db, tenant.project_id, name)).device.id
        for name in ("first", "second", "untouched")
    ]
    earlier = datetime(2026, 12, 3, 8, 0, 0, 123456, tzinfo=UTC)
    await devices.flush_seen(
        db,
        [
            SeenState(first, earlier, battery=70, charging=False, signal=2),
            SeenState(second, earlier, battery=30, charging=True, signal=4),
        ],
    )
    later = earlier + timedelta(seconds=30, microseconds=-123456)  # a whole second
    await devices.flush_seen(
        db,
        [SeenState(first, later, battery=65, signal=3), SeenState(second, later)],
    )

    one, two, three = [await stored(db, d) for d in (first, second, untouched)]
    assert one.last_seen_at == later and two.last_seen_at == later
    assert (one.battery, one.charging, one.signal) == (65, False, 3)  # charging kept
    assert (two.battery, two.charging, two.signal) == (30, True, 4)  # all kept
    assert three.last_seen_at is None and three.battery is None
    # Stored as every other time is, so comparisons in SQL see it right.
    async with db.sessions() as session:
        recent = (
            await session.execute(
                select(col(Device.id))
                .where(col(Device.last_seen_at) >= later)
                .order_by(col(Device.id))
            )
        ).scalars()
        assert sorted(recent) == sorted([first, second])
        assert (
            await session.execute(select(col(Device.id)).where(col(Device.last_seen_at) > later))
        ).first() is None
