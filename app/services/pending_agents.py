"""Pending agents an organization knows of: registrations nobody has claimed yet whose claim
link one of its owners or admins opened on the dashboard, or tried a code with for one of its
projects. A registration belongs to no organization until it is claimed, and its link is the
only way to it, so an organization sees exactly the pending agents its own people were handed
and never another's. An opening is forgotten when the agent is claimed (by anyone) and purged
with its registration."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import AgentClaimOpening, AgentRegistration, User
from app.domain import agent_claims as rules


@dataclass(frozen=True)
class PendingAgent:
    """A registration awaiting its claim, as an organization that opened it sees it."""

    registration: AgentRegistration
    opened_by: str
    """The name of the owner or admin who opened it first."""
    opened_at: datetime
    locked: bool
    attempts_left: int


async def note_opening(
    session: AsyncSession,
    registration_id: str,
    organization_ids: Iterable[str],
    user_id: str,
    now: datetime,
) -> None:
    """Records that `user_id` opened the registration's claim for these organizations; an
    organization that knows of it already keeps its first opening."""
    rows = [
        {
            "registration_id": registration_id,
            "organization_id": organization_id,
            "opened_by": user_id,
            "opened_at": now,
        }
        for organization_id in sorted(set(organization_ids))
    ]
    if not rows:
        return
    insert = sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert
    await session.execute(
        insert(AgentClaimOpening).on_conflict_do_nothing(
            index_elements=["registration_id", "organization_id"]
        ),
        rows,
    )


async def note_opened(
    db: Database,
    registration: AgentRegistration,
    organization_ids: Iterable[str],
    user_id: str,
    now: datetime,
) -> None:
    """`note_opening` in a transaction of its own, for a registration still open to a claim
    (claimed or expired ones are never pending)."""
    state = rules.claim_state(
        registration.expires_at, registration.claimed_at, registration.wrong_codes, now
    )
    if state.status != rules.UNCLAIMED:
        return
    async with db.transaction() as session:
        await note_opening(session, registration.id, organization_ids, user_id, now)


async def forget_openings(session: AsyncSession, registration_id: str) -> None:
    """The registration is no longer pending anywhere (it was just claimed)."""
    await session.execute(
        delete(AgentClaimOpening).where(col(AgentClaimOpening.registration_id) == registration_id)
    )


async def list_pending(db: Database, organization_id: str, now: datetime) -> list[PendingAgent]:
    """The organization's pending agents, the latest opened first: unclaimed and not expired
    (locked ones too: they stay until they expire, and the agent must register again)."""
    async with db.reading() as session:
        rows = (
            await session.execute(
                select(AgentRegistration, AgentClaimOpening, col(User.name))
                .join(
                    AgentClaimOpening,
                    col(AgentClaimOpening.registration_id) == col(AgentRegistration.id),
                )
                .join(User, col(User.id) == col(AgentClaimOpening.opened_by))
                .where(
                    col(AgentClaimOpening.organization_id) == organization_id,
                    col(AgentRegistration.claimed_at).is_(None),
                    col(AgentRegistration.expires_at) > now,
                )
                .order_by(col(AgentClaimOpening.opened_at).desc(), col(AgentClaimOpening.seq))
            )
        ).all()
    return [
        PendingAgent(
            registration=registration,
            opened_by=str(opener),
            opened_at=opening.opened_at,
            locked=registration.wrong_codes >= rules.MAX_WRONG_CODES,
            attempts_left=max(0, rules.MAX_WRONG_CODES - registration.wrong_codes),
        )
        for registration, opening, opener in rows
    ]
