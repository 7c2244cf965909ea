"""Counting for the send limits of app/domain/send_limits.py, from what was sent: a number's
outbound messages of the last day (`ix_messages_to_created`), a wallet's paid requests of the
last hour (`ix_requests_payer_created`). One statement for all the numbers of a request or a
batch; nothing is counted in memory, so every instance sees the same figures."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlmodel import col

from app.db import lists
from app.db.models import Message, MessageRequest
from app.db.types import UTCDateTime
from app.domain.errors import PayerRateLimited, RecipientRateLimited
from app.domain.send_limits import DAY_S, HOUR_S, Usage, Window, first_exceeded, windows
from app.services.ids import utcnow
from app.settings import Settings

X402_BILLING = "x402"
_MESSAGES = Message.metadata.tables["messages"]


def recipient_usage(
    executor: Connection | Session,
    to_numbers: Iterable[str],
    now: datetime,
    *,
    project_ids: Iterable[str] | None = None,
    billing: str | None = None,
) -> dict[tuple[str | None, str], dict[int, Usage]]:
    """For each number, its outbound messages of the last hour and of the last day, keyed by
    (project id, number) when `project_ids` is given (their own messages only), else by
    (None, number) over every project; `billing` narrows to one kind (`x402`). Synchronous
    (`Database.run`, `run_sync`)."""
    wanted = sorted(set(to_numbers))
    if not wanted:
        return {}
    projects = sorted(set(project_ids)) if project_ids is not None else None
    params: dict[str, object] = {
        "numbers": wanted,
        "hour_start": now - timedelta(seconds=HOUR_S),
        "day_start": now - timedelta(seconds=DAY_S),
    }
    if projects is not None:
        params["projects"] = projects
    if billing is not None:
        params["billing"] = billing
    statement = _usage_statement(
        projects is not None, billing is not None, lists.is_postgresql(executor)
    )
    rows = executor.execute(statement, params)
    found: dict[tuple[str | None, str], dict[int, Usage]] = {}
    for row in rows:
        key = (row.project_id if projects is not None else None, row.to_number)
        found[key] = {
            HOUR_S: Usage(int(row.hour_count or 0), row.hour_oldest),
            DAY_S: Usage(int(row.day_count), row.day_oldest),
        }
    return found


@functools.cache
def _usage_statement(by_project: bool, by_billing: bool, on_postgresql: bool) -> Select[Any]:
    """`recipient_usage`'s statement for one combination of filters, built once."""
    in_hour = col(Message.created_at) >= sa.bindparam("hour_start")
    conditions = [
        lists.one_of(_MESSAGES.c.to_number, "numbers", on_postgresql),
        col(Message.created_at) >= sa.bindparam("day_start"),
        col(Message.direction) == "out",
    ]
    keys = [col(Message.to_number)]
    if by_project:
        conditions.append(lists.one_of(_MESSAGES.c.project_id, "projects", on_postgresql))
        keys.insert(0, col(Message.project_id))
    if by_billing:
        conditions.append(col(Message.billing) == sa.bindparam("billing"))
    return (
        select(
            *keys,
            func.sum(case((in_hour, 1), else_=0)).label("hour_count"),
            sa.type_coerce(
                func.min(case((in_hour, col(Message.created_at)), else_=None)), UTCDateTime()
            ).label("hour_oldest"),
            func.count().label("day_count"),
            sa.type_coerce(func.min(col(Message.created_at)), UTCDateTime()).label("day_oldest"),
        )
        .where(*conditions)
        .group_by(*keys)
    )


def check_recipients(
    limits: tuple[Window, ...],
    to_numbers: Sequence[str],
    usage: dict[str, dict[int, Usage]],
    now: datetime,
) -> None:
    """RecipientRateLimited for the first number that these messages would take past one of
    `limits` (`usage` by number, as `recipient_usage` counted it)."""
    for number, adding in Counter(to_numbers).items():
        verdict = first_exceeded(limits, usage.get(number, {}), adding, now)
        if verdict is not None:
            raise RecipientRateLimited(
                number, verdict.window.limit, verdict.window.name, verdict.retry_after_s
            )


async def check_paid_send(
    session: AsyncSession, settings: Settings, to_numbers: Sequence[str], payer: str | None
) -> None:
    """The limits of a pay-per-call send, before any payment is asked for or taken: every
    wallet together may send one number `paid_recipient_per_hour` / `paid_recipient_per_day`
    messages, one wallet (`payer`, when known) `payer_sends_per_hour` sends. Off with
    `rate_limits`. Raises RecipientRateLimited or PayerRateLimited."""
    if not settings.rate_limits:
        return
    now = utcnow()
    limits = windows(settings.paid_recipient_per_hour, settings.paid_recipient_per_day)
    counted = await session.run_sync(
        lambda sync: recipient_usage(sync, to_numbers, now, billing=X402_BILLING)
    )
    check_recipients(limits, to_numbers, {n: u for (_, n), u in counted.items()}, now)
    if payer:
        await _check_payer(session, settings, payer.lower(), now)


async def _check_payer(
    session: AsyncSession, settings: Settings, payer: str, now: datetime
) -> None:
    row = (
        await session.execute(
            select(
                func.count().label("count"),
                sa.type_coerce(func.min(col(MessageRequest.created_at)), UTCDateTime()).label(
                    "oldest"
                ),
            ).where(
                col(MessageRequest.payer) == payer,
                col(MessageRequest.created_at) >= now - timedelta(seconds=HOUR_S),
                col(MessageRequest.billing) == X402_BILLING,
            )
        )
    ).one()
    window = Window(settings.payer_sends_per_hour, HOUR_S, "hour")
    verdict = first_exceeded((window,), {HOUR_S: Usage(int(row[0]), row[1])}, 1, now)
    if verdict is not None:
        raise PayerRateLimited(payer, window.limit, window.name, verdict.retry_after_s)
