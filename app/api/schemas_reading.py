"""Response shapes (msgspec) of the read side: messages, requests, stats and credits, and the
mapping from stored rows to them (shared by the API and the CLI)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from app.db.models import LedgerEntry
from app.domain.pricing import format_usdc
from app.services.credits import LedgerPage
from app.services.reading import MessageRecord, ProjectStats, RequestView, Window


class MessageOut(msgspec.Struct):
    """One SMS. Outbound: `from` is the SIM it went through (null until one is chosen).
    Inbound: `from` is the sender as the phone reported it, `to` the receiving SIM's number,
    and `status` is `received`."""

    id: str
    request_id: str | None
    direction: str
    status: str
    to: str
    from_: str | None = msgspec.field(name="from")
    body: str
    encoding: str
    segments: int
    price_atomic: int
    """Price in USDC atomic units (6 decimals)."""
    tag: str | None
    sim_id: str | None
    device_id: str | None
    attempts: int
    error_code: str | None
    archived: bool
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None
    expires_at: datetime | None


class MessageList(msgspec.Struct):
    data: list[MessageOut]
    count: int
    next_cursor: str | None
    """Pass as `cursor` for the next (older) page; null on the last page."""


class RequestOut(msgspec.Struct):
    """`failed` counts messages that did not get out (failed, expired or canceled; refunded);
    `sent` those that did (sent or delivered); `queued` those not out yet."""

    request_id: str
    status: str
    billing: str
    total: int
    delivered: int
    sent: int
    failed: int
    queued: int
    total_atomic: int
    created_at: datetime
    messages: list[MessageOut]


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


def message_out(record: MessageRecord) -> MessageOut:
    message = record.message
    return MessageOut(
        id=message.id,
        request_id=message.request_id,
        direction=message.direction,
        status=message.status,
        to=message.to_number,
        from_=record.sender,
        body=message.body,
        encoding=message.encoding,
        segments=message.segment_count,
        price_atomic=message.price_atomic,
        tag=message.tag,
        sim_id=message.sim_id,
        device_id=message.device_id,
        attempts=message.attempts,
        error_code=message.error_code,
        archived=message.archived,
        created_at=message.created_at,
        sent_at=message.sent_at,
        delivered_at=message.delivered_at,
        failed_at=message.failed_at,
        expires_at=message.expires_at,
    )


def request_out(view: RequestView) -> RequestOut:
    return RequestOut(
        request_id=view.request.id,
        status=view.status,
        billing=view.request.billing,
        total=len(view.records),
        delivered=view.delivered,
        sent=view.sent,
        failed=view.failed,
        queued=view.queued,
        total_atomic=view.request.total_atomic,
        created_at=view.request.created_at,
        messages=[message_out(record) for record in view.records],
    )


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
