"""What an inbound consent keyword does, in the transaction that stores the SMS: STOP (and its
kin) suppresses the sender for the project that owns the SIM, cancelling what is queued to
them; START lifts it; with `SIMWIRE_OPT_OUT_REPLY` set, STOP and HELP are answered once, free,
from the SIM that received them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import Message, ProjectPolicy
from app.domain import numbers
from app.domain.consent import consent_keyword
from app.domain.errors import SimwireError
from app.domain.segments import plan_segments
from app.services import outbound, suppressions
from app.settings import Settings

# HELP's answer when automatic replies are on: what the keywords do, nothing more.
HELP_REPLY = "Reply STOP to stop messages from this number, START to get them again."
# One automatic reply per sender and project in this long, so two autoresponders cannot loop.
REPLY_INTERVAL = timedelta(hours=24)
SYSTEM_BILLING = "system"
REPLY_TTL_S = 86_400


@dataclass(frozen=True, slots=True)
class KeywordSms:
    """A newly stored inbound SMS: the project that owns the receiving SIM, the SIM (None when
    the phone did not say which), the sender as reported, and the body."""

    project_id: str
    sim_id: str | None
    sender: str
    body: str


async def apply_keywords(
    session: AsyncSession, settings: Settings | None, received: Sequence[KeywordSms], now: datetime
) -> set[str]:
    """Acts on the consent keywords among `received` (anything else costs one string check).
    A sender that is no phone number (a short code, `AMAZON`) is left alone. Returns the
    projects an automatic reply was queued for (wake their phones after the commit)."""
    keyworded = [(sms, consent_keyword(sms.body)) for sms in received]
    found = [(sms, keyword) for sms, keyword in keyworded if keyword is not None]
    if not found:
        return set()
    regions = await _regions(session, {sms.project_id for sms, _ in found})
    fallback = settings.default_region if settings else None
    reply_text = (settings.opt_out_reply or "").strip() if settings else ""
    replied: set[str] = set()
    for sms, keyword in found:
        try:
            number = numbers.normalize_destination(
                sms.sender, regions.get(sms.project_id) or fallback
            ).e164
        except SimwireError:
            continue
        if keyword == "opt_out":
            await suppressions.suppress(
                session, sms.project_id, [(number, suppressions.OPT_OUT)], now
            )
        elif keyword == "opt_in":
            await suppressions.lift_opt_out(session, sms.project_id, number)
        if not reply_text or sms.sim_id is None or keyword == "opt_in":
            continue
        text = reply_text if keyword == "opt_out" else HELP_REPLY
        if await _queue_reply(session, sms.project_id, sms.sim_id, number, text, now):
            replied.add(sms.project_id)
    return replied


async def _regions(session: AsyncSession, project_ids: set[str]) -> dict[str, str | None]:
    rows = await session.execute(
        select(col(ProjectPolicy.project_id), col(ProjectPolicy.default_region)).where(
            col(ProjectPolicy.project_id).in_(sorted(project_ids))
        )
    )
    return {project_id: region for project_id, region in rows.all()}


async def _queue_reply(
    session: AsyncSession, project_id: str, sim_id: str, number: str, text: str, now: datetime
) -> bool:
    """Queues the free reply pinned to `sim_id`, unless this project already answered this
    number automatically within `REPLY_INTERVAL`."""
    earlier = (
        await session.execute(
            select(func.count())
            .select_from(Message)
            .where(
                col(Message.to_number) == number,
                col(Message.created_at) >= now - REPLY_INTERVAL,
                col(Message.project_id) == project_id,
                col(Message.billing) == SYSTEM_BILLING,
            )
        )
    ).scalar_one()
    if earlier:
        return False
    plan = plan_segments(text)
    await outbound.enqueue(
        session,
        project_id,
        [outbound.OutboundItem(number, text, plan.encoding, plan.segment_count, 0)],
        sim_selector=sim_id,
        ttl_s=REPLY_TTL_S,
        billing=SYSTEM_BILLING,
    )
    return True
