"""Response shapes (msgspec) of the read side: message lists, stats and credits, and the
mapping from stored rows to them (shared by the API and the CLI); the message and request
objects themselves are app/services/views.py's."""

from __future__ import annotations

from datetime import datetime

import msgspec

from app.db.models import LedgerEntry
from app.domain.pricing import format_usdc
from app.services.credits import LedgerPage
from app.services.reading import ProjectStats, Window

# The message and request objects live with the services (the event outbox carries them too).
from app.services.views import MessageOut as MessageOut
from app.services.views import RequestOut as RequestOut
from app.services.views import message_out as message_out
from app.services.views import request_out as request_out


class MessageList(msgspec.Struct):
    data: list[MessageOut]
    count: int
    next_cursor: str | None
    """Pass as `cursor` for the next (older) page; null on the last page."""


class WindowOut(msgspec.Struct):
    sent: int
    received: int
    failed: int


class StatsOut(msgspec.Struct):
    """`total_sent` counts sent and delivered; `total_failed` failed and expired;
    `total_queued` messages not out of a radio yet. `spend` is charges minus refunds."""

    total_sent: int
    total_delivered: int
    total_received: int
    total_failed: int
    total_queued: int
    last_24h: WindowOut
    last_7d: WindowOut
    spend_atomic: int
    spend: str


class LedgerEntryOut(msgspec.Struct):
    id: str
    kind: str
    amount_atomic: int
    """Signed balance change: negative for a charge."""
    balance_after_atomic: int
    request_id: str | None
    message_id: str | None
    tx_hash: str | None
    note: str | None
    created_at: datetime


class CreditsOut(msgspec.Struct):
    balance_atomic: int
    balance: str
    currency: str
    ledger: list[LedgerEntryOut]
    next_cursor: str | None


def _window_out(window: Window) -> WindowOut:
    return WindowOut(sent=window.sent, received=window.received, failed=window.failed)


def stats_out(stats: ProjectStats) -> StatsOut:
    return StatsOut(
        total_sent=stats.total_sent,
        total_delivered=stats.total_delivered,
        total_received=stats.total_received,
        total_failed=stats.total_failed,
        total_queued=stats.total_queued,
        last_24h=_window_out(stats.last_24h),
        last_7d=_window_out(stats.last_7d),
        spend_atomic=stats.spend_atomic,
        spend=format_usdc(stats.spend_atomic),
    )


def ledger_entry_out(entry: LedgerEntry) -> LedgerEntryOut:
    return LedgerEntryOut(
        id=entry.id,
        kind=entry.kind,
        amount_atomic=entry.amount_atomic,
        balance_after_atomic=entry.balance_after_atomic,
        request_id=entry.request_id,
        message_id=entry.message_id,
        tx_hash=entry.tx_hash,
        note=entry.note,
        created_at=entry.created_at,
    )


def credits_out(page: LedgerPage, next_cursor: str | None) -> CreditsOut:
    return CreditsOut(
        balance_atomic=page.balance_atomic,
        balance=format_usdc(page.balance_atomic),
        currency="USDC",
        ledger=[ledger_entry_out(entry) for entry in page.entries],
        next_cursor=next_cursor,
    )
