"""One reserved authorization, from reservation to outcome, whoever drives it: the paying
request, a retry of the same payment, or the reconciliation sweep after a crash.

Every step is written down before the next is taken: the reservation (with the signed
authorization and the order) before anything is sent, the settling transaction's hash before
it is broadcast. Recording is one conditional update, so a payment is fulfilled once however
many workers see it settle; releasing is only done when the chain proves nothing moved.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import Database
from app.db.models import Payment, StoredQuote
from app.db.repositories.payments import PaymentRepository
from app.domain.errors import InsufficientCredits
from app.faults import crash_point
from app.logs import get_logger
from app.payments import wire
from app.payments.errors import ChainUnavailable, PaymentInvalid, SettlementFailed
from app.payments.networks import NetworkConfig
from app.payments.requirements import PaymentRequirement
from app.services import credits
from app.services.ids import utcnow
from app.services.x402.common import (
    RECEIPT_TIMEOUT,
    SEND,
    SETTLED,
    SETTLEMENT_UNKNOWN,
    UNRESOLVED,
    Outcome,
)
from app.services.x402.orders import fulfil
from app.services.x402.quotes import get_quote, unuse_quote, use_quote
from app.services.x402_runtime import PaymentRuntime
from app.settings import Settings

log = get_logger("simwire.x402")

# How often a retry looks whether the worker holding a payment has finished it.
_WAIT_POLL_S = 0.1


class QueueNotifier(Protocol):
    async def notify_queued(self, project_id: str) -> None: ...


@dataclass
class Settlements:
    """The storage and chain steps of settling reserved authorizations on one network."""

    db: Database
    settings: Settings
    runtime: PaymentRuntime
    notifier: QueueNotifier

    @property
    def network(self) -> NetworkConfig:
        assert self.runtime.network is not None
        return self.runtime.network

    @property
    def lease_s(self) -> float:
        return self.settings.payment_lease_s

    def requirement(self, amount_atomic: int) -> PaymentRequirement:
        """What an authorization of `amount_atomic` must satisfy here."""
        return PaymentRequirement(self.network, amount_atomic, self.settings.payment_timeout_s)

    # ------------------------------------------------------------------- reservation

    async def reserve(self, row: Payment, quote: StoredQuote) -> None:
        """Takes the quote, the authorization's nonce and the payer's credit in one commit, so
        a second request with the same authorization or quote stops here. Raises
        `IntegrityError` when the authorization is already reserved."""
        row.lease_until = utcnow() + timedelta(seconds=self.lease_s)
        async with self.db.transaction() as session:
            await self._take(session, row, quote)
        crash_point("settle.reserved")

    async def accept_transfer(self, row: Payment, quote: StoredQuote) -> Outcome:
        """A proven plain transfer: taken, recorded settled and fulfilled in one commit.
        Raises `IntegrityError` when its transaction hash already paid."""
        row.status, row.settled_at = SETTLED, utcnow()
        async with self.db.transaction() as session:
            await self._take(session, row, quote)
            outcome = await fulfil(session, row, quote, self.network, late=False)
            await PaymentRepository(session).set_fields(row.id, response=outcome.stored())
        await self._fulfilled(row, outcome)
        return outcome

    async def _take(self, session: AsyncSession, row: Payment, quote: StoredQuote) -> None:
        await use_quote(session, quote)
        PaymentRepository(session).add(row)
        await session.flush()
        if quote.credit_atomic > 0 and quote.payer is not None:
            try:
                await credits.charge_payer(
                    session,
                    quote.payer,
                    self.network.network,
                    quote.credit_atomic,
                    row.request_id or quote.id,
                )
            except InsufficientCredits as exc:
                raise PaymentInvalid(
                    "payer_credit_changed",
                    "the payer's refund credit changed since the quote; ask for a new quote",
                ) from exc

    async def release(self, row: Payment, why: str) -> bool:
        """Undoes `reserve` for a payment that moved nothing: the row goes, the quote and
        the authorization can pay again, the payer's credit comes back. False when someone
        else resolved it first."""
        async with self.db.transaction() as session:
            if not await PaymentRepository(session).delete_unresolved(row.id, UNRESOLVED):
                return False
            await unuse_quote(session, row.quote_id)
            quote = await get_quote(session, row.quote_id)
            if quote.credit_atomic > 0 and quote.payer is not None:
                await credits.refund_payer(
                    session,
                    quote.payer,
                    self.network.network,
                    quote.credit_atomic,
                    row.request_id or quote.id,
                    note=f"payment {row.id} did not settle",
                )
        log.info("x402_released", payment_id=row.id, why=why)
        return True

    # ------------------------------------------------------------------ settling now

    async def settle(self, row: Payment, payment: wire.DecodedPayment) -> Outcome:
        """Submit a reserved authorization (our relayer or the facilitator) and record the
        outcome. Raises `SettlementFailed` having released it when nothing moved, and
        `ChainUnavailable` either having released it (nothing was sent) or leaving it to
        reconciliation (`receipt_timeout` / `settlement_unknown`: it may still move)."""

        async def note_tx(tx_hash: str) -> None:
            async with self.db.transaction() as session:
                await PaymentRepository(session).set_fields(row.id, tx_hash=tx_hash.lower())
            row.tx_hash = tx_hash.lower()
            crash_point("settle.tx_recorded")

        async with self._lease_kept(row.id):
            try:
                settlement = await self.runtime.settle(
                    payment, self.requirement(row.amount_atomic), on_signed=note_tx
                )
            except SettlementFailed as exc:
                if exc.reason == "authorization_used":
                    # Someone settled this very authorization (a retry, the payer itself):
                    # the money reached us all the same.
                    outcome = await self.resolve(row, payment, late=False)
                    if outcome is not None:
                        return outcome
                await self.release(row, f"settlement refused: {exc.reason}")
                raise
            except ChainUnavailable as exc:
                # A signed transaction whose broadcast got no answer may have reached the node.
                unanswered = exc.reason == "rpc_unavailable" and row.tx_hash is not None
                if exc.tx_hash or exc.reason == "settlement_unknown" or unanswered:
                    status = (
                        RECEIPT_TIMEOUT if exc.reason == "receipt_timeout" else SETTLEMENT_UNKNOWN
                    )
                    await self._mark(row, status, exc.tx_hash)
                else:
                    await self.release(row, f"settlement not sent: {exc.reason}")
                raise
            crash_point("settle.confirmed")
            return await self.record(row, settlement.tx_hash, late=False)

    async def record(self, row: Payment, tx_hash: str, *, late: bool) -> Outcome:
        """Marks the payment settled by `tx_hash` and fulfils its order in one transaction;
        when another worker recorded it first, returns that worker's outcome."""
        tx_hash = tx_hash.lower()
        async with self.db.transaction() as session:
            repo = PaymentRepository(session)
            if not await repo.claim_settled(row.id, UNRESOLVED, tx_hash, utcnow()):
                recorded = await repo.get(row.id)
                if recorded is None or recorded.response is None:
                    raise PaymentInvalid("authorization_used", "this authorization already paid")
                row.tx_hash, row.status = recorded.tx_hash, recorded.status
                return Outcome.from_stored(recorded.response)
            row.tx_hash, row.status = tx_hash, SETTLED
            quote = await get_quote(session, row.quote_id)
            outcome = await fulfil(session, row, quote, self.network, late=late)
            await repo.set_fields(row.id, response=outcome.stored())
        log.info("x402_settled", payment_id=row.id, purpose=row.purpose, tx_hash=tx_hash)
        await self._fulfilled(row, outcome)
        return outcome

    async def _fulfilled(self, row: Payment, outcome: Outcome) -> None:
        if row.purpose == SEND and outcome.status_code == 202 and row.order:
            await self.notifier.notify_queued(row.order["project_id"])

    # -------------------------------------------------------------- from the chain

    async def resolve(
        self, row: Payment, payment: wire.DecodedPayment, *, late: bool
    ) -> Outcome | None:
        """If the authorization is used on chain, find the transaction that used it, confirm
        it paid us, and record the payment; None while it is unused."""
        chain = self.runtime.chain
        if not await chain.authorization_used(payment.from_address, payment.nonce):
            return None
        tx_hash = await self._settling_tx(row, payment)
        if tx_hash is None:
            raise ChainUnavailable(
                "settlement_unknown",
                "the authorization is used on chain but its transaction was not found yet",
            )
        settlement = await chain.confirm_settlement(tx_hash, payment)
        return await self.record(row, settlement.tx_hash, late=late)

    async def _settling_tx(self, row: Payment, payment: wire.DecodedPayment) -> str | None:
        chain = self.runtime.chain
        found = await chain.find_authorization_tx(
            payment.from_address, payment.nonce, row.from_block or 0
        )
        return found or row.tx_hash

    async def expired_on_chain(self, row: Payment) -> bool:
        """Whether the chain's clock has passed the authorization's `validBefore`: from then on
        the token refuses it, so nothing can move any more."""
        assert row.valid_before is not None
        return await self.runtime.chain.block_timestamp() >= row.valid_before

    async def reconcile(self, payment_id: str) -> str:
        """The sweep's step for one unresolved payment, if no worker holds it: `settled` (the
        chain shows it paid: recorded and fulfilled), `released` (unused past its validity),
        or `pending` (still valid and unused: a later pass looks again)."""
        async with self.db.transaction() as session:
            repo = PaymentRepository(session)
            now = utcnow()
            if not await repo.take_lease(payment_id, now, now + timedelta(seconds=self.lease_s)):
                return "held"
            row = await repo.get(payment_id)
        if row is None or row.status == SETTLED or row.header is None:
            return "settled"  # resolved meanwhile (`unresolved_due` lists only rows with a header)
        try:
            payment = wire.decode_payment(row.header)
            if await self.resolve(row, payment, late=True) is not None:
                return "settled"
            if await self.expired_on_chain(row):
                await self.release(row, "authorization expired unused")
                return "released"
            return "pending"
        finally:
            await self._drop_lease(payment_id)

    # ------------------------------------------------------------------------ retries

    async def answer_again(
        self, row: Payment, payment: wire.DecodedPayment, *, may_read_outcome: bool
    ) -> Outcome:
        """A second request with an authorization we already hold gets its outcome: the one
        recorded (if `may_read_outcome`: see `X402Gateway._answer_again`), or (after a crash)
        the one this request now drives it to."""
        deadline = asyncio.get_running_loop().time() + self.settings.payment_retry_wait_s
        while True:
            async with self.db.transaction() as session:
                repo = PaymentRepository(session)
                now = utcnow()
                current = await repo.get(row.id)
                if current is None:
                    raise PaymentInvalid(
                        "authorization_released",
                        "this authorization did not settle and was released; sign a new one",
                    )
                if current.status == SETTLED and current.response is not None:
                    if not may_read_outcome:
                        raise PaymentInvalid(
                            "authorization_used", "this authorization already paid"
                        )
                    row.tx_hash, row.status = current.tx_hash, current.status
                    return Outcome.from_stored(current.response)
                if await repo.take_lease(row.id, now, now + timedelta(seconds=self.lease_s)):
                    break
            if asyncio.get_running_loop().time() > deadline:
                raise PaymentInvalid(
                    "settlement_in_progress",
                    "this authorization is being settled; retry in a few seconds",
                    retry_after_s=max(1, int(self.lease_s)),
                )
            await asyncio.sleep(_WAIT_POLL_S)
        row = current
        try:
            outcome = await self.resolve(row, payment, late=True)
            if outcome is not None:
                return outcome
            if row.tx_hash and await self.runtime.chain.transaction_pending(row.tx_hash):
                raise PaymentInvalid(
                    "settlement_in_progress",
                    f"its settlement {row.tx_hash} is not mined yet; retry in a few seconds",
                    retry_after_s=max(1, int(self.lease_s)),
                )
            if await self.expired_on_chain(row):
                await self.release(row, "authorization expired unused")
                raise PaymentInvalid(
                    "authorization_expired", "this authorization expired before it settled"
                )
        except BaseException:
            await self._drop_lease(row.id)
            raise
        # Never submitted, or submitted and dropped: submit it again, holding the lease.
        return await self.settle(row, payment)

    # ------------------------------------------------------------------------ leases

    async def _mark(self, row: Payment, status: str, tx_hash: str | None) -> None:
        values: dict[str, object] = {"status": status}
        if tx_hash:
            values["tx_hash"] = tx_hash.lower()
        with contextlib.suppress(IntegrityError):
            async with self.db.transaction() as session:
                await PaymentRepository(session).set_fields(row.id, **values)

    async def _drop_lease(self, payment_id: str) -> None:
        async with self.db.transaction() as session:
            await PaymentRepository(session).set_fields(payment_id, lease_until=None)

    @contextlib.asynccontextmanager
    async def _lease_kept(self, payment_id: str) -> AsyncIterator[None]:
        """Renews this worker's hold on the payment while the body runs, so the sweep and
        retries leave it alone; a crash stops the renewals and the hold lapses."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.lease_s / 3)
                async with self.db.transaction() as session:
                    until = utcnow() + timedelta(seconds=self.lease_s)
                    await PaymentRepository(session).set_fields(payment_id, lease_until=until)

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(Exception):
                await self._drop_lease(payment_id)
