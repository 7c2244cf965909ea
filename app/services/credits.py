"""Prepaid credits: every balance change is one conditional update plus its ledger row, in the
caller's transaction. Balances never go below zero."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement
from sqlmodel import col

from app.db.engine import Database
from app.db.models import CreditAccount, LedgerEntry, Message, MessageRequest, ProjectPolicy
from app.db.repositories.projects import ProjectRepository
from app.domain import ledger
from app.domain.errors import InsufficientCredits, NotFound
from app.services import outbox
from app.services.ids import new_id, utcnow


def _project_owner(project_id: str) -> ColumnElement[bool]:
    return col(CreditAccount.project_id) == project_id


def _payer_owner(payer: str, network: str) -> ColumnElement[bool]:
    return (col(CreditAccount.payer) == payer.lower()) & (col(CreditAccount.network) == network)


async def _find_account(session: AsyncSession, owner: ColumnElement[bool]) -> CreditAccount | None:
    return (await session.execute(select(CreditAccount).where(owner))).scalar_one_or_none()


async def _ensure_account(
    session: AsyncSession,
    owner: ColumnElement[bool],
    project_id: str | None = None,
    payer: str | None = None,
    network: str | None = None,
) -> None:
    """Opens the account a credit goes to; debits need none (no account means no balance)."""
    if await _find_account(session, owner) is None:
        session.add(
            CreditAccount(
                id=new_id("acct"),
                project_id=project_id,
                payer=payer,
                network=network,
                created_at=utcnow(),
            )
        )
        await session.flush()


async def _apply(
    session: AsyncSession,
    account: ColumnElement[bool],
    kind: str,
    amount_atomic: int,
    *,
    request_id: str | None = None,
    message_id: str | None = None,
    tx_hash: str | None = None,
    note: str | None = None,
) -> LedgerEntry:
    """One balance change of the account matching `account`, and its ledger row. A debit is
    conditional on the balance covering it, so concurrent debits can never overdraw."""
    delta = ledger.signed_amount(kind, amount_atomic)
    statement = (
        update(CreditAccount)
        .where(account)
        .values(balance_atomic=col(CreditAccount.balance_atomic) + delta)
        .returning(col(CreditAccount.id), col(CreditAccount.balance_atomic))
    )
    if delta < 0:
        statement = statement.where(col(CreditAccount.balance_atomic) >= -delta)
    changed = (await session.execute(statement)).one_or_none()
    if changed is None:
        current = (
            await session.execute(select(col(CreditAccount.balance_atomic)).where(account))
        ).scalar_one_or_none()
        raise InsufficientCredits(balance_atomic=current or 0, required_atomic=amount_atomic)
    account_id, balance_after = changed
    entry = LedgerEntry(
        id=new_id("led"),
        account_id=account_id,
        kind=kind,
        amount_atomic=delta,
        balance_after_atomic=balance_after,
        request_id=request_id,
        message_id=message_id,
        tx_hash=tx_hash,
        note=note,
        created_at=utcnow(),
    )
    session.add(entry)
    return entry


async def credit_project(
    session: AsyncSession,
    project_id: str,
    kind: str,
    amount_atomic: int,
    **refs: str | None,
) -> LedgerEntry:
    """A credit (`grant`, `topup`, `refund`) to a project; `refs` are the ledger row's
    `request_id`, `message_id`, `tx_hash` and `note`."""
    await _ensure_account(session, _project_owner(project_id), project_id=project_id)
    return await _apply(session, _project_owner(project_id), kind, amount_atomic, **refs)


async def charge_project(
    session: AsyncSession, project_id: str, amount_atomic: int, request_id: str
) -> LedgerEntry:
    """Debits the whole cost of a request, or raises InsufficientCredits having changed nothing.
    A debit that takes the balance below the project's threshold records `credits.low`."""
    # One conditional UPDATE: a project that never had credit has no account, hence no row.
    try:
        entry = await _apply(
            session,
            _project_owner(project_id),
            ledger.CHARGE,
            amount_atomic,
            request_id=request_id,
        )
    except InsufficientCredits as exc:
        # Again with the project, so the error's fixes name it.
        raise InsufficientCredits(
            exc.details["balance_atomic"], exc.details["required_atomic"], project_id
        ) from None
    threshold = (
        await session.execute(
            select(col(ProjectPolicy.credits_low_threshold_atomic)).where(
                col(ProjectPolicy.project_id) == project_id
            )
        )
    ).scalar_one_or_none()
    after = entry.balance_after_atomic
    event = outbox.credits_low_event(project_id, after + amount_atomic, after, threshold)
    if event is not None:
        await outbox.insert_events(session, [event])
    return entry


async def payer_balance(session: AsyncSession, payer: str, network: str) -> int:
    """A paying wallet's refund credit on `network`, in USDC atomic units (0 if none)."""
    account = await _find_account(session, _payer_owner(payer, network))
    return account.balance_atomic if account else 0


async def charge_payer(
    session: AsyncSession, payer: str, network: str, amount_atomic: int, request_id: str
) -> LedgerEntry:
    """Spends a paying wallet's refund credit, or raises InsufficientCredits having changed
    nothing."""
    return await _apply(
        session, _payer_owner(payer, network), ledger.CHARGE, amount_atomic, request_id=request_id
    )


async def _credit_payer(
    session: AsyncSession, payer: str, network: str, amount_atomic: int, **refs: str | None
) -> LedgerEntry:
    owner = _payer_owner(payer, network)
    await _ensure_account(session, owner, payer=payer.lower(), network=network)
    return await _apply(session, owner, ledger.REFUND, amount_atomic, **refs)


async def refund_payer(
    session: AsyncSession, payer: str, network: str, amount_atomic: int, request_id: str, note: str
) -> LedgerEntry:
    """Gives a wallet back credit that `charge_payer` took for a payment that did not settle."""
    return await _credit_payer(
        session, payer, network, amount_atomic, request_id=request_id, note=note
    )


async def refund_message(session: AsyncSession, message: Message) -> bool:
    """Gives a failed, expired or canceled message's price back, once: to its project, or to
    the wallet that paid for it per call. Returns whether a refund was made now."""
    if message.price_atomic <= 0 or message.direction != "out":
        return False
    flipped = await session.execute(
        update(Message)
        .where(col(Message.id) == message.id, col(Message.refunded).is_(False))
        .values(refunded=True)
        .returning(col(Message.id))
    )
    if flipped.scalar_one_or_none() is None:
        return False
    request = None
    if message.request_id:
        request = (
            await session.execute(
                select(MessageRequest).where(col(MessageRequest.id) == message.request_id)
            )
        ).scalar_one_or_none()
    # The flip above makes this once per message; the ledger's unique message_id backs it up.
    refs = {"message_id": message.id, "request_id": message.request_id}
    if request is not None and request.billing == "x402" and request.payer and request.network:
        await _credit_payer(session, request.payer, request.network, message.price_atomic, **refs)
    else:
        await credit_project(
            session, message.project_id, ledger.REFUND, message.price_atomic, **refs
        )
    message.refunded = True
    return True


@dataclass(frozen=True)
class LedgerPage:
    balance_atomic: int
    entries: list[LedgerEntry]
    next_cursor: int | None


async def project_ledger(
    db: Database, project_id: str, limit: int = 50, before_seq: int | None = None
) -> LedgerPage:
    async with db.sessions() as session:
        account = await _find_account(session, _project_owner(project_id))
        if account is None:
            return LedgerPage(0, [], None)
        query = select(LedgerEntry).where(col(LedgerEntry.account_id) == account.id)
        if before_seq is not None:
            query = query.where(col(LedgerEntry.seq) < before_seq)
        rows = list(
            (
                await session.execute(query.order_by(col(LedgerEntry.seq).desc()).limit(limit + 1))
            ).scalars()
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return LedgerPage(account.balance_atomic, rows, rows[-1].seq if more and rows else None)


async def spend_since(db: Database, project_id: str, *moments: datetime) -> list[int]:
    """What the project's credit paid for messages (charges minus refunds, USDC atomic units)
    in each window from one of `moments` until now; one query for them all."""
    if not moments:
        return []
    columns = [
        func.coalesce(
            func.sum(
                case(
                    (col(LedgerEntry.created_at) >= moment, col(LedgerEntry.amount_atomic)), else_=0
                )
            ),
            0,
        )
        for moment in moments
    ]
    async with db.sessions() as session:
        row = (
            await session.execute(
                select(*columns)
                .join(CreditAccount, col(CreditAccount.id) == col(LedgerEntry.account_id))
                .where(
                    col(CreditAccount.project_id) == project_id,
                    col(LedgerEntry.kind).in_([ledger.CHARGE, ledger.REFUND]),
                    col(LedgerEntry.created_at) >= min(moments),
                )
            )
        ).one()
    return [-int(value) for value in row]


async def ledger_sum(db: Database, project_id: str) -> tuple[int, int]:
    """(balance, sum of ledger amounts) for a project: equal unless something is broken."""
    async with db.sessions() as session:
        account = await _find_account(session, _project_owner(project_id))
        if account is None:
            return 0, 0
        total = (
            await session.execute(
                select(func.coalesce(func.sum(col(LedgerEntry.amount_atomic)), 0)).where(
                    col(LedgerEntry.account_id) == account.id
                )
            )
        ).scalar_one()
    return account.balance_atomic, int(total)


async def grant(
    db: Database, project_id: str, amount_atomic: int, note: str | None = None
) -> LedgerEntry:
    """Operator grant of credit to a project."""
    async with db.transaction() as session:
        if await ProjectRepository(session).get_project(project_id) is None:
            raise NotFound(f"project {project_id!r} not found")
        return await credit_project(session, project_id, ledger.GRANT, amount_atomic, note=note)
