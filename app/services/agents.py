"""Use cases only agents ask for: wait for the next inbound SMS that matches (the OTP case),
woken by the hub's inbound signal the moment one is stored — not by polling."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import col

from app.db.models import Message, Sim
from app.domain.errors import InvalidInput
from app.domain.numbers import same_number
from app.hub.hub import Hub
from app.services import reading
from app.services.ids import utcnow

MAX_WAIT_S = 120.0
MAX_PATTERN_CHARS = 200
_SCAN = 200


@dataclass(frozen=True)
class InboundMatch:
    """What an inbound SMS must match: sender, a case-insensitive substring, a regex."""

    sender: str | None = None
    contains: str | None = None
    pattern: re.Pattern[str] | None = None

    def accepts(self, record: reading.MessageRecord) -> bool:
        body = record.message.body
        if self.sender is not None and not same_number(record.sender or "", self.sender):
            return False
        if self.contains is not None and self.contains.lower() not in body.lower():
            return False
        return self.pattern is None or self.pattern.search(body) is not None


def inbound_match(sender: str | None, contains: str | None, pattern: str | None) -> InboundMatch:
    """Raises `InvalidInput` for a pattern that is too long or not a regular expression."""
    compiled = None
    if pattern:
        if len(pattern) > MAX_PATTERN_CHARS:
            raise InvalidInput(f"`pattern` is longer than {MAX_PATTERN_CHARS} characters")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise InvalidInput(f"`pattern` is not a regular expression: {exc}") from None
    return InboundMatch(sender or None, contains or None, compiled)


async def wait_for_sms(
    hub: Hub,
    project_id: str,
    match: InboundMatch,
    *,
    since: datetime | None,
    timeout_s: float,
) -> reading.MessageRecord | None:
    """The first inbound SMS of the project stored at or after `since` (default: now) that
    `match` accepts, as soon as it is stored; None once `timeout_s` (at most 120) passed."""
    if not 0 < timeout_s <= MAX_WAIT_S:
        raise InvalidInput(f"`timeout_s` must be above 0 and at most {MAX_WAIT_S:g}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    start = since or utcnow()
    after_seq = 0
    with hub.inbound.watch(project_id) as stored:
        while True:
            stored.clear()  # before looking: a store during the look wakes the next wait
            records = await _inbound_after(hub, project_id, start, after_seq)
            for record in records:
                after_seq = max(after_seq, record.message.seq or 0)
                if match.accepts(record):
                    return record
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stored.wait(), remaining)


async def _inbound_after(
    hub: Hub, project_id: str, since: datetime, after_seq: int
) -> list[reading.MessageRecord]:
    async with hub.db.sessions() as session:
        rows = (
            await session.execute(
                select(Message, col(Sim.number))
                .outerjoin(Sim, col(Sim.id) == col(Message.sim_id))
                .where(
                    col(Message.project_id) == project_id,
                    col(Message.direction) == "in",
                    col(Message.created_at) >= since,
                    col(Message.seq) > after_seq,
                )
                .order_by(col(Message.seq))
                .limit(_SCAN)
            )
        ).all()
    return [reading.MessageRecord(message, number) for message, number in rows]
