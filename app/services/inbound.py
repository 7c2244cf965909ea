"""Inbound SMS from phones: stored once per (device, phone-side id), as reported."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import Device, Message, Sim
from app.domain import statuses
from app.domain.errors import SimwireError
from app.domain.segments import plan_segments
from app.domain.text import storable
from app.services.ids import new_id, utcnow


@dataclass(frozen=True)
class ReceivedSms:
    phone_message_id: str
    sender: str
    body: str
    device_time: datetime | None
    sim_slot: int | None


def _encoding_of(body: str) -> tuple[str, int]:
    try:
        plan = plan_segments(body)
    except SimwireError:  # empty or overlong bodies are stored as received, just not planned
        return "UCS-2", 1
    return plan.encoding, plan.segment_count


async def store_inbound(db: Database, device: Device, sms: ReceivedSms) -> tuple[str, bool]:
    """Stores an inbound SMS; returns (message id, whether it is new). A repeat of a
    phone-side id from the same device returns the first message's id. NUL in the sender or
    body is stored as U+FFFD; the sender is kept to its first 64 characters."""
    existing = await _find(db, device.id, sms.phone_message_id)
    if existing:
        return existing, False
    # A real SMS is stored whatever it holds: NUL, which PostgreSQL cannot store, becomes U+FFFD.
    body, sender = storable(sms.body), storable(sms.sender)
    encoding, segments = _encoding_of(body)
    try:
        async with db.transaction() as session:
            sim = None
            if sms.sim_slot is not None:
                sim = (
                    await session.execute(
                        select(Sim).where(
                            col(Sim.device_id) == device.id, col(Sim.slot) == sms.sim_slot
                        )
                    )
                ).scalar_one_or_none()
            message = Message(
                id=new_id("msg"),
                project_id=device.project_id,
                direction="in",
                status=statuses.RECEIVED,
                to_number=(sim.number if sim and sim.number else ""),
                from_number=sender[:64],
                body=body,
                encoding=encoding,
                segment_count=segments,
                sim_id=sim.id if sim else None,
                device_id=device.id,
                phone_message_id=sms.phone_message_id[:200],
                created_at=utcnow(),
                device_time=sms.device_time,
            )
            session.add(message)
        return message.id, True
    except IntegrityError:  # the same SMS arrived twice at once
        found = await _find(db, device.id, sms.phone_message_id)
        if found is None:
            raise
        return found, False


async def _find(db: Database, device_id: str, phone_message_id: str) -> str | None:
    async with db.sessions() as session:
        return (
            await session.execute(
                select(col(Message.id)).where(
                    col(Message.device_id) == device_id,
                    col(Message.phone_message_id) == phone_message_id[:200],
                )
            )
        ).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class DeviceSms:
    """An inbound SMS and the device (of its project) that received it."""

    device_id: str
    project_id: str
    sms: ReceivedSms


async def store_inbound_many(
    session: AsyncSession, items: Sequence[DeviceSms], *, dialect: str
) -> None:
    """Stores SMS from phones in the caller's transaction, each once per (device, phone-side
    id): a repeat, in the batch or of one stored before, is skipped, never an error. Stored as
    `store_inbound` stores one (`dialect`: the engine's, "sqlite" or "postgresql")."""
    if not items:
        return
    slots = {(i.device_id, i.sms.sim_slot) for i in items if i.sms.sim_slot is not None}
    sims: dict[tuple[str, int], tuple[str, str | None]] = {}
    if slots:
        found = await session.execute(
            select(col(Sim.device_id), col(Sim.slot), col(Sim.id), col(Sim.number)).where(
                col(Sim.device_id).in_(sorted({device_id for device_id, _ in slots}))
            )
        )
        sims = {(d, slot): (sim_id, number) for d, slot, sim_id, number in found.all()}
    now = utcnow()
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        sms = item.sms
        key = (item.device_id, sms.phone_message_id[:200])
        if key in seen:
            continue
        seen.add(key)
        body, sender = storable(sms.body), storable(sms.sender)
        encoding, segments = _encoding_of(body)
        sim_id, number = (
            sims.get((item.device_id, sms.sim_slot), (None, None))
            if sms.sim_slot is not None
            else (None, None)
        )
        rows.append(
            {
                "id": new_id("msg"),
                "project_id": item.project_id,
                "direction": "in",
                "status": statuses.RECEIVED,
                "to_number": number or "",
                "from_number": sender[:64],
                "body": body,
                "encoding": encoding,
                "segment_count": segments,
                "price_atomic": 0,
                "billing": "credits",
                "refunded": False,
                "attempts": 0,
                "archived": False,
                "sim_id": sim_id,
                "device_id": item.device_id,
                "phone_message_id": key[1],
                "created_at": now,
                "device_time": sms.device_time,
            }
        )
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    await session.execute(
        insert(Message).on_conflict_do_nothing(index_elements=["device_id", "phone_message_id"]),
        rows,
    )
