"""Inbound SMS from phones: stored once per (device, phone-side id), as reported, each linked
to the message it answers (`in_reply_to`) and recorded with `message.received`; a consent
keyword (STOP, START, HELP) is acted on in the same transaction (app/services/consent.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import Device, Message, Sim
from app.domain import statuses
from app.domain.errors import SimwireError
from app.domain.numbers import same_number, same_number_candidates
from app.domain.segments import plan_segments
from app.domain.text import storable
from app.services import consent, outbox
from app.services.ids import new_id, utcnow
from app.services.views import MessageRecord
from app.settings import Settings

# A reply answers the latest message its sender got from the project on that SIM this long ago
# at most (DESIGN §9).
REPLY_WINDOW = timedelta(days=7)

_MESSAGES = Message.metadata.tables["messages"]


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


async def store_inbound(
    db: Database, device: Device, sms: ReceivedSms, settings: Settings | None = None
) -> tuple[str, bool]:
    """Stores an inbound SMS with its `in_reply_to` and `message.received`, and acts on a
    consent keyword (`settings` says whether STOP and HELP are answered); returns (message
    id, whether it is new). A repeat of a phone-side id from the same device returns the first
    message's id and records nothing. NUL in the sender or body is stored as U+FFFD; the
    sender is kept to its first 64 characters."""
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
            now = utcnow()
            replied = (
                await replied_to(session, [(device.project_id, sim.id, sender[:64])], now)
                if sim is not None
                else {}
            )
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
                created_at=now,
                device_time=sms.device_time,
                in_reply_to=replied.get((device.project_id, sim.id, sender[:64])) if sim else None,
            )
            session.add(message)
            await session.flush()
            record = MessageRecord(message, sim.number if sim else None)
            await outbox.insert_events(session, [outbox.message_event(record, now)])
            keyword = consent.KeywordSms(
                device.project_id, sim.id if sim else None, message.from_number or "", body
            )
            await consent.apply_keywords(session, settings, [keyword], now)
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
    session: AsyncSession,
    items: Sequence[DeviceSms],
    *,
    dialect: str,
    settings: Settings | None = None,
) -> set[str]:
    """Stores SMS from phones in the caller's transaction, each once per (device, phone-side
    id): a repeat, in the batch or of one stored before, is skipped, never an error. Stored as
    `store_inbound` stores one (`dialect`: the engine's, "sqlite" or "postgresql"); the replies
    are linked with one query, and the events of those newly stored written with one insert.
    Returns the projects an automatic consent reply was queued for (wake them after commit)."""
    if not items:
        return set()
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
    replied = await replied_to(
        session,
        [(row["project_id"], row["sim_id"], row["from_number"]) for row in rows if row["sim_id"]],
        now,
    )
    for row in rows:
        row["in_reply_to"] = replied.get((row["project_id"], row["sim_id"], row["from_number"]))
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    stored = set(
        (
            await session.execute(
                insert(Message)
                .on_conflict_do_nothing(index_elements=["device_id", "phone_message_id"])
                .returning(col(Message.id)),
                rows,
            )
        ).scalars()
    )
    numbers = {sim_id: number for sim_id, number in sims.values()}
    await outbox.insert_events(
        session,
        [
            outbox.message_event(MessageRecord(Message(**row), numbers.get(row["sim_id"])), now)
            for row in rows
            if row["id"] in stored
        ],
    )
    return await consent.apply_keywords(
        session,
        settings,
        [
            consent.KeywordSms(row["project_id"], row["sim_id"], row["from_number"], row["body"])
            for row in rows
            if row["id"] in stored
        ],
        now,
    )


ReplyKey = tuple[str, str, str]
"""(project id, SIM id, sender as reported)."""


async def replied_to(
    session: AsyncSession, wanted: Sequence[ReplyKey], now: datetime
) -> dict[ReplyKey, str]:
    """For each inbound SMS (project, receiving SIM, sender), the id of the latest outbound
    message of that project to that sender on that SIM given out within `REPLY_WINDOW` before
    `now`; those with none are left out. One query for all of them, on the SIM's dispatch
    index (`ix_messages_sim_window`); the sender matches the stored E.164 number as
    `same_number` says (the phone may report it national, or with spaces)."""
    keys = sorted(set(wanted))
    if not keys:
        return {}
    matches = []
    for project_id, sim_id, sender in keys:
        exact, suffix = same_number_candidates(sender)
        number = _MESSAGES.c.to_number == exact
        if suffix is not None:
            number = or_(number, _MESSAGES.c.to_number.like(f"%{suffix}"))
        matches.append(
            and_(_MESSAGES.c.sim_id == sim_id, _MESSAGES.c.project_id == project_id, number)
        )
    found = await session.execute(
        select(
            _MESSAGES.c.id,
            _MESSAGES.c.project_id,
            _MESSAGES.c.sim_id,
            _MESSAGES.c.to_number,
            _MESSAGES.c.dispatched_at,
            _MESSAGES.c.seq,
        ).where(
            _MESSAGES.c.sim_id.in_(sorted({sim_id for _, sim_id, _ in keys})),
            _MESSAGES.c.dispatched_at >= now - REPLY_WINDOW,
            _MESSAGES.c.direction == "out",
            or_(*matches),
        )
    )
    candidates = found.all()
    replied: dict[ReplyKey, str] = {}
    for key in keys:
        project_id, sim_id, sender = key
        latest = max(
            (
                row
                for row in candidates
                if row.sim_id == sim_id
                and row.project_id == project_id
                and same_number(sender, row.to_number)
            ),
            key=lambda row: (row.dispatched_at, row.seq),
            default=None,
        )
        if latest is not None:
            replied[key] = latest.id
    return replied
