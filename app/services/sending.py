"""Sending on prepaid credits: screen → quote → charge the whole request → enqueue, in one
transaction; an Idempotency-Key replays the first answer instead of charging again.

Sends are group-committed (`GroupCommit`): the requests that arrive while one transaction is
being written go into the next one together, and each is answered only after that commit.
Each request stays all-or-nothing inside the batch: its charge is the conditional
`balance >= cost` update, and a request that is short of credit, whose Idempotency-Key was
taken, that names a number suppressed for its project (`recipient_opted_out`), or that would
take a number past its project's per-recipient limit, writes nothing and fails alone while the
others commit. Suppressions and those limits are read with one statement each per batch. The
batch's events (`message.queued` for each message, `credits.low` for a charge that crossed its
project's threshold) are written with one insert in the same transaction."""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from app.db import bulk
from app.db.engine import Database
from app.db.models import CreditAccount, LedgerEntry, Message, MessageRequest, ProjectPolicy
from app.domain import ledger, statuses
from app.domain.errors import Conflict, InsufficientCredits, RecipientOptedOut, SimwireError
from app.domain.send_limits import DAY_S, HOUR_S, Usage, Window, windows
from app.faults import crash_point
from app.services import outbox, quoting, send_limits, suppressions
from app.services.ids import new_id, utcnow
from app.services.quote_terms import prepared_terms
from app.settings import Settings

MAX_CREDIT_RECIPIENTS = 1000


class QueueNotifier(Protocol):
    async def notify_queued(self, project_id: str) -> None: ...


@dataclass(frozen=True)
class SendOptions:
    region: str | None = None
    sim: str | None = None
    ttl_s: int | None = None
    idempotency_key: str | None = None
    callback_url: str | None = None
    """Paid (x402) sends only: where this request's message events go (app/services/callbacks)."""


def request_fingerprint(payload: Any) -> str:
    """What an Idempotency-Key is bound to: the canonical JSON of the request body."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def accepted_response(
    request: MessageRequest,
    messages: Sequence[Message],
    charged_atomic: int,
    terms: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The 202 body; `terms` (app/services/quote_terms.py) state the price as every quote
    does (`segment_count` is then the segments of one copy)."""
    return response_body(
        request.id,
        request.segment_count,
        [(m.id, m.to_number, m.status, m.segment_count, m.price_atomic) for m in messages],
        charged_atomic,
        terms,
    )


def response_body(
    request_id: str,
    segment_count: int,
    messages: Sequence[tuple[str, str, str, int, int]],
    charged_atomic: int,
    terms: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The 202 body from plain values: each message as (id, to, status, segments, price)."""
    return {
        "request_id": request_id,
        "status": "processing",
        "segment_count": segment_count,
        **(terms or {}),
        "charged_atomic": charged_atomic,
        "messages": [
            {"id": m[0], "to": m[1], "status": m[2], "segments": m[3], "price_atomic": m[4]}
            for m in messages
        ],
    }


async def _replay(
    db: Database, project_id: str, key: str, fingerprint: str
) -> dict[str, Any] | None:
    async with db.reading() as session:
        previous = (
            await session.execute(
                select(col(MessageRequest.request_sha256), col(MessageRequest.response)).where(
                    col(MessageRequest.project_id) == project_id,
                    col(MessageRequest.idempotency_key) == key,
                )
            )
        ).one_or_none()
    return _replayed(previous, key, fingerprint)


def _replayed(previous: Any, key: str, fingerprint: str) -> dict[str, Any] | None:
    if previous is None:
        return None
    if previous.request_sha256 != fingerprint:
        raise Conflict(
            "this Idempotency-Key was used with a different request body",
            idempotency_key=key,
        )
    return previous.response  # type: ignore[no-any-return]


async def send_with_credits(
    db: Database,
    notifier: QueueNotifier,
    settings: Settings,
    project_id: str,
    drafts: Sequence[quoting.Draft],
    options: SendOptions,
    fingerprint: str,
) -> dict[str, Any]:
    """Returns the 202 body once the request is committed. Raises 400/422 errors before
    anything is charged, and InsufficientCredits (nothing charged) when the balance does not
    cover the whole request."""
    key = options.idempotency_key
    if key:
        replayed = await _replay(db, project_id, key, fingerprint)
        if replayed is not None:
            return replayed
    policy = await quoting.policy_for(db, settings, project_id)
    prepared = quoting.prepare(drafts, policy, options.region, MAX_CREDIT_RECIPIENTS)
    prepared.raise_if_blocked()
    send = _pending_send(project_id, prepared, options, fingerprint, settings)
    if settings.rate_limits:
        send.recipient_limits = windows(policy.recipient_per_hour, policy.recipient_per_day)
    return await group_commit(db).submit(send, notifier)


# Group commit ----------------------------------------------------------------------------

# The most requests and messages one transaction takes; more wait for the next one.
MAX_BATCH_REQUESTS = 256
MAX_BATCH_MESSAGES = 5_000


@dataclass(eq=False)
class PendingSend:
    """One request's rows, built before it joins a batch, and how it is answered."""

    project_id: str
    key: str | None
    fingerprint: str
    cost_atomic: int
    request_row: dict[str, Any]
    message_rows: list[dict[str, Any]]
    event_rows: list[dict[str, Any]]
    """`message.queued` of each message."""
    response: dict[str, Any]
    future: asyncio.Future[dict[str, Any]] | None = None
    notifier: QueueNotifier | None = None
    ledger_row: dict[str, Any] | None = field(default=None)
    recipient_limits: tuple[Window, ...] = ()
    """The project's per-recipient limits (none while `rate_limits` is off)."""

    @property
    def recipients(self) -> list[str]:
        return [row["to_number"] for row in self.message_rows]


def _pending_send(
    project_id: str,
    prepared: quoting.PreparedSend,
    options: SendOptions,
    fingerprint: str,
    settings: Settings,
) -> PendingSend:
    now = utcnow()
    request_id = new_id("req")
    expires_at = now + timedelta(seconds=options.ttl_s or settings.message_ttl_s)
    messages = [
        (new_id("msg"), item.to, statuses.QUEUED, item.plan.segment_count, item.price_atomic)
        for item in prepared.items
    ]
    message_rows = [
        {
            "id": message[0],
            "project_id": project_id,
            "request_id": request_id,
            "direction": "out",
            "status": statuses.QUEUED,
            "to_number": item.to,
            "body": item.body,
            "encoding": item.plan.encoding,
            "segment_count": item.plan.segment_count,
            "price_atomic": item.price_atomic,
            "billing": "credits",
            "refunded": False,
            "tag": item.tag,
            "sim_selector": options.sim,
            "attempts": 0,
            "archived": False,
            "created_at": now,
            "expires_at": expires_at,
        }
        for message, item in zip(messages, prepared.items, strict=True)
    ]
    response = response_body(
        request_id,
        prepared.segment_count,
        messages,
        prepared.total_atomic,
        prepared_terms(prepared),
    )
    key = options.idempotency_key
    request_row = {
        "id": request_id,
        "project_id": project_id,
        "billing": "credits",
        "payer": None,
        "network": None,
        "payment_id": None,
        "total_atomic": prepared.total_atomic,
        "segment_count": prepared.segment_count,
        "idempotency_key": key,
        "request_sha256": fingerprint if key else None,
        "response": response,
        "created_at": now,
    }
    event_rows = [outbox.message_event(outbox.record_of(row), now) for row in message_rows]
    return PendingSend(
        project_id,
        key,
        fingerprint,
        prepared.total_atomic,
        request_row,
        message_rows,
        event_rows,
        response,
    )


class _Retry(Exception):
    """This request must go again in a later batch (its Idempotency-Key was first used by an
    earlier request of the same batch, whose outcome it must answer with)."""


class GroupCommit:
    """Writes the sends waiting for it in as few transactions as it can, one at a time: while
    one commits, the next requests gather. One per database per process."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.pending: list[PendingSend] = []
        self.writer: asyncio.Task[None] | None = None

    async def submit(self, send: PendingSend, notifier: QueueNotifier) -> dict[str, Any]:
        """The 202 body once `send` is committed, or the error that kept it out."""
        loop = asyncio.get_running_loop()
        send.future = loop.create_future()
        send.notifier = notifier
        self.pending.append(send)
        if self.writer is None:
            self.writer = loop.create_task(self._write_all(), name="send-group-commit")
        return await send.future

    async def _write_all(self) -> None:
        try:
            while self.pending:
                # Let the requests already on their way (parsed, screened) join this batch.
                await asyncio.sleep(0)
                batch = self._take()
                if batch:
                    await self._write(batch)
        finally:
            self.writer = None

    def _take(self) -> list[PendingSend]:
        batch: list[PendingSend] = []
        messages = 0
        while self.pending and len(batch) < MAX_BATCH_REQUESTS:
            send = self.pending[0]
            if batch and messages + len(send.message_rows) > MAX_BATCH_MESSAGES:
                break
            self.pending.pop(0)
            if send.future is not None and send.future.done():  # its caller went away
                continue
            batch.append(send)
            messages += len(send.message_rows)
        return batch

    async def _write(self, batch: list[PendingSend]) -> None:
        try:
            outcomes = await self._commit(batch)
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [await self._alone_after(batch[0], exc)]
            else:
                # Something broke the whole batch (an Idempotency-Key raced in from another
                # instance): each request again in a transaction of its own.
                outcomes = []
                for send in batch:
                    try:
                        outcomes.extend(await self._commit([send]))
                    except Exception as alone_exc:
                        outcomes.append(await self._alone_after(send, alone_exc))
        woken: set[str] = set()
        for send, outcome in zip(batch, outcomes, strict=True):
            if not isinstance(outcome, Exception) and send.project_id not in woken:
                woken.add(send.project_id)
                if send.notifier is not None:
                    await send.notifier.notify_queued(send.project_id)
        for send, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, _Retry):
                self.pending.append(send)
            elif send.future is not None and not send.future.done():
                if isinstance(outcome, BaseException):
                    send.future.set_exception(outcome)
                else:
                    send.future.set_result(outcome)

    async def _alone_after(self, send: PendingSend, exc: Exception) -> dict[str, Any] | Exception:
        """The answer for a request whose own transaction failed with `exc`."""
        if isinstance(exc, IntegrityError) and send.key:
            # The same Idempotency-Key raced in from elsewhere: answer as that request did.
            try:
                replayed = await _replay(self.db, send.project_id, send.key, send.fingerprint)
            except Conflict as conflict:
                return conflict
            if replayed is not None:
                return replayed
        return exc

    async def _commit(self, batch: list[PendingSend]) -> list[dict[str, Any] | Exception]:
        """One transaction for the whole batch, written in one database hand-off; each
        request's answer (its body or its error)."""
        return await self.db.run(lambda conn: _write_batch(conn, batch))


def _write_batch(conn: Connection, batch: list[PendingSend]) -> list[dict[str, Any] | Exception]:
    outcomes: list[dict[str, Any] | Exception | None] = [None] * len(batch)
    _claim_idempotency_keys(conn, batch, outcomes)
    _screen_recipients(conn, batch, outcomes)
    low = _charge(conn, batch, outcomes)
    admitted = [s for s, o in zip(batch, outcomes, strict=True) if o is None]
    if admitted:
        # An Idempotency-Key raced in from another instance breaks the requests' unique
        # index: SQLAlchemy's IntegrityError, which `_alone_after` answers.
        bulk.insert_many(conn, _REQUESTS, [s.request_row for s in admitted])
        bulk.insert_many(conn, _LEDGER, [s.ledger_row for s in admitted if s.ledger_row])
        messages = [row for s in admitted for row in s.message_rows]
        if messages:
            bulk.insert_rows(conn, _MESSAGES, messages)
        outbox.write_events(conn, [row for s in admitted for row in s.event_rows] + low)
    crash_point("send_batch_commit")
    return [s.response if o is None else o for s, o in zip(batch, outcomes, strict=True)]


def _claim_idempotency_keys(
    conn: Connection,
    batch: list[PendingSend],
    outcomes: list[dict[str, Any] | Exception | None],
) -> None:
    """Requests whose Idempotency-Key is already used answer with the first result (or 409);
    a second use inside this batch waits for the next batch, where it finds the first."""
    first_in_batch: set[tuple[str, str]] = set()
    for n, send in enumerate(batch):
        if not send.key:
            continue
        if (send.project_id, send.key) in first_in_batch:
            outcomes[n] = _Retry()
            continue
        previous = (
            conn.execute(
                select(col(MessageRequest.request_sha256), col(MessageRequest.response)).where(
                    col(MessageRequest.project_id) == send.project_id,
                    col(MessageRequest.idempotency_key) == send.key,
                )
            )
        ).one_or_none()
        if previous is None:
            first_in_batch.add((send.project_id, send.key))
            continue
        try:
            outcomes[n] = _replayed(previous, send.key, send.fingerprint)
        except Conflict as conflict:
            outcomes[n] = conflict


def _screen_recipients(
    conn: Connection,
    batch: list[PendingSend],
    outcomes: list[dict[str, Any] | Exception | None],
) -> None:
    """Refuses, before any charge, the requests naming a number suppressed for their project
    (one statement for the batch), then those that would pass their project's per-recipient
    limit (one more, only when a project of the batch has one), counting the batch's earlier
    requests as sent."""
    live = [n for n, outcome in enumerate(outcomes) if outcome is None]
    suppressed = suppressions.suppressed_among(
        conn, {(batch[n].project_id, to) for n in live for to in batch[n].recipients}
    )
    for n in live:
        send = batch[n]
        opted_out = sorted({to for to in send.recipients if (send.project_id, to) in suppressed})
        if opted_out:
            outcomes[n] = RecipientOptedOut(opted_out)
    limited = [n for n in live if outcomes[n] is None and batch[n].recipient_limits]
    if not limited:
        return
    now = utcnow()
    usage = send_limits.recipient_usage(
        conn,
        {to for n in limited for to in batch[n].recipients},
        now,
        project_ids={batch[n].project_id for n in limited},
    )
    for n in limited:
        send = batch[n]
        mine = {to: usage.get((send.project_id, to), {}) for to in set(send.recipients)}
        try:
            send_limits.check_recipients(send.recipient_limits, send.recipients, mine, now)
        except SimwireError as exc:
            outcomes[n] = exc
            continue
        for to in send.recipients:  # the next requests of the batch see these as sent
            usage[(send.project_id, to)] = {
                seconds: Usage(used.count + 1, used.oldest or now)
                for seconds, used in _windows_of(usage.get((send.project_id, to))).items()
            }


def _windows_of(used: dict[int, Usage] | None) -> dict[int, Usage]:
    empty = Usage(0, None)
    return {seconds: (used or {}).get(seconds, empty) for seconds in (HOUR_S, DAY_S)}


def _charge(
    conn: Connection,
    batch: list[PendingSend],
    outcomes: list[dict[str, Any] | Exception | None],
) -> list[dict[str, Any]]:
    """Debits each paying request of the batch with its ledger row: one conditional UPDATE
    per project when its balance covers all of them, else one per request, in order, so
    that those the balance covers go through and the rest fail with InsufficientCredits.
    Returns the `credits.low` events of the debits that crossed a project's threshold."""
    low: list[dict[str, Any]] = []
    by_project: dict[str, list[int]] = {}
    for n, send in enumerate(batch):
        if outcomes[n] is None and send.cost_atomic > 0:
            by_project.setdefault(send.project_id, []).append(n)
    for project_id, indexes in by_project.items():
        total = sum(batch[n].cost_atomic for n in indexes)
        changed = _debit(conn, project_id, total)
        if changed is not None:
            account_id, balance, threshold = changed
            _note_low(low, project_id, balance + total, balance, threshold)
            # The balance after each request, as if they had been charged one by one.
            balance += total
            for n in indexes:
                balance -= batch[n].cost_atomic
                batch[n].ledger_row = _ledger_row(account_id, batch[n], balance)
            continue
        for n in indexes:
            changed = _debit(conn, project_id, batch[n].cost_atomic)
            if changed is None:
                current = (
                    conn.execute(
                        select(col(CreditAccount.balance_atomic)).where(
                            col(CreditAccount.project_id) == project_id
                        )
                    )
                ).scalar_one_or_none()
                outcomes[n] = InsufficientCredits(current or 0, batch[n].cost_atomic, project_id)
            else:
                account_id, balance, threshold = changed
                batch[n].ledger_row = _ledger_row(account_id, batch[n], balance)
                _note_low(low, project_id, balance + batch[n].cost_atomic, balance, threshold)
    return low


def _note_low(
    low: list[dict[str, Any]], project_id: str, before: int, after: int, threshold: int | None
) -> None:
    event = outbox.credits_low_event(project_id, before, after, threshold)
    if event is not None:
        low.append(event)


def _debit(conn: Connection, project_id: str, amount_atomic: int) -> Any:
    """The conditional charge: (account id, balance after, the project's `credits.low`
    threshold) or None when it does not cover."""
    params = {"debit_project": project_id, "debit_amount": amount_atomic}
    return conn.execute(_DEBIT, params).one_or_none()


# Built once: building it costs more than running it (~0.2 ms).
_DEBIT = (
    update(CreditAccount)
    .where(
        col(CreditAccount.project_id) == bindparam("debit_project"),
        col(CreditAccount.balance_atomic) >= bindparam("debit_amount"),
    )
    .values(balance_atomic=col(CreditAccount.balance_atomic) - bindparam("debit_amount"))
    .returning(
        col(CreditAccount.id),
        col(CreditAccount.balance_atomic),
        select(col(ProjectPolicy.credits_low_threshold_atomic))
        .where(col(ProjectPolicy.project_id) == bindparam("debit_project"))
        .scalar_subquery(),
    )
)
_REQUESTS = MessageRequest.metadata.tables["requests"]
_LEDGER = LedgerEntry.metadata.tables["ledger_entries"]
_MESSAGES = Message.metadata.tables["messages"]


def _ledger_row(account_id: str, send: PendingSend, balance_after: int) -> dict[str, Any]:
    return {
        "id": new_id("led"),
        "account_id": account_id,
        "kind": ledger.CHARGE,
        "amount_atomic": ledger.signed_amount(ledger.CHARGE, send.cost_atomic),
        "balance_after_atomic": balance_after,
        "request_id": send.request_row["id"],
        "message_id": None,
        "tx_hash": None,
        "note": None,
        "created_at": send.request_row["created_at"],
    }


_GROUP_COMMITS: weakref.WeakKeyDictionary[Database, GroupCommit] = weakref.WeakKeyDictionary()


def group_commit(db: Database) -> GroupCommit:
    """The process's writer of credit sends for `db`."""
    writer = _GROUP_COMMITS.get(db)
    if writer is None:
        writer = _GROUP_COMMITS[db] = GroupCommit(db)
    return writer
