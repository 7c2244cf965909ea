"""Paying per call with x402: quote → 402 offer → verify → reserve → settle → record → enqueue,
and project credit top-ups paid the same way (an EIP-3009 authorization or a plain transfer).

Nothing moves on chain before every local check passed and the authorization is reserved in
our database; nothing is queued or credited before the chain confirmed the payment.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import Database
from app.db.models import MessageRequest, Payment, StoredQuote
from app.domain import ledger, pricing
from app.domain.errors import (
    InsufficientCredits,
    InvalidInput,
    Unavailable,
)
from app.logs import get_logger
from app.payments import wire
from app.payments.eip3009 import verify_authorization
from app.payments.errors import ChainUnavailable, PaymentInvalid, SettlementFailed
from app.payments.networks import NetworkConfig
from app.payments.requirements import PaymentRequirement
from app.services import credits, outbound, quoting, sending
from app.services.ids import new_id, utcnow
from app.services.x402_errors import (
    PaymentOffer,
    X402PaymentRequired,
    failure_from,
)
from app.services.x402_runtime import PaymentRuntime, x402_project_id
from app.settings import Settings

log = get_logger("simwire.x402")

PAYMENT_TX_HEADER = "X-Payment-Tx"
QUOTE_ID_HEADER = "X-Quote-Id"
PAYER_HEADER = "X-Payer"

SEND = "send"
TOPUP = "topup"
RESERVED = "reserved"
SETTLED = "settled"

# Top-ups are bounded so a typo cannot ask a wallet for a fortune.
MAX_TOPUP_ATOMIC = 10_000 * pricing.ATOMIC_PER_USDC

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


# ------------------------------------------------------------------------ inputs/outputs


@dataclass(frozen=True)
class PresentedPayment:
    """What the caller sent along: an x402 header (`PAYMENT-SIGNATURE` is v2, `X-PAYMENT` v1),
    or the hash of a plain USDC transfer, and the quote it pays."""

    header: str | None = None
    header_version: int = 0
    tx_hash: str | None = None
    quote_id: str | None = None
    payer_hint: str | None = None

    @property
    def present(self) -> bool:
        return bool(self.header or self.tx_hash)


@dataclass(frozen=True)
class PaidResult:
    """The answer to a paid call: its body and the settlement header to send with it."""

    body: dict[str, Any]
    response_header_name: str
    response_header: str


class QueueNotifier(Protocol):
    async def notify_queued(self, project_id: str) -> None: ...


@dataclass
class _Paid:
    """A payment that moved on chain (or a transfer proven), not yet recorded as settled."""

    payment_id: str
    payer: str
    tx_hash: str
    amount_atomic: int
    network_name: str
    x402_version: int


@dataclass
class X402Gateway:
    """The x402 use cases of one request: send paid per call, top up a project's credits."""

    db: Database
    settings: Settings
    runtime: PaymentRuntime
    notifier: QueueNotifier
    _now: Callable[[], float] = field(default=time.time, repr=False)

    @property
    def network(self) -> NetworkConfig:
        assert self.runtime.network is not None
        return self.runtime.network

    # ------------------------------------------------------------------------- sends

    async def send(
        self,
        drafts: Sequence[quoting.Draft],
        options: sending.SendOptions,
        presented: PresentedPayment,
        resource_url: str,
    ) -> PaidResult:
        """Anonymous `POST /v1/messages`. Screening and limits come first (400/422, nothing
        asked); without a payment, raises `X402PaymentRequired` for a new quote; with one,
        settles it and queues the messages, or raises an `X402Failure` having queued nothing.
        """
        policy = await quoting.policy_for(self.db, self.settings, None)
        prepared = quoting.prepare(
            drafts, policy, options.region, self.settings.max_paid_recipients
        )
        prepared.raise_if_blocked()
        if not presented.present:
            raise await self._send_offer(prepared, presented.payer_hint, resource_url)
        project_id = await x402_project_id(self.db, self.settings)
        request_id = new_id("req")

        async def finish(session: AsyncSession, paid: _Paid, quote: StoredQuote) -> dict:
            request = MessageRequest(
                id=request_id,
                project_id=project_id,
                billing="x402",
                payer=paid.payer.lower(),
                network=self.network.network,
                payment_id=paid.payment_id,
                total_atomic=quote.total_atomic,
                segment_count=prepared.segment_count,
                created_at=utcnow(),
            )
            session.add(request)
            await session.flush()
            messages = await outbound.enqueue(
                session,
                project_id,
                [_outbound_item(item) for item in prepared.items],
                request_id=request_id,
                ttl_s=options.ttl_s or self.settings.message_ttl_s,
                billing="x402",
            )
            body = sending.accepted_response(request, messages, quote.total_atomic)
            body["payment"] = _payment_out(paid, quote, self.network)
            request.response = body
            return body

        def matches(quote: StoredQuote) -> None:
            _check_send_quote(quote, prepared)

        result = await self._collect(
            presented,
            purpose=SEND,
            project_id=None,
            request_id=request_id,
            body_sha256=quoting.content_sha256(prepared.items),
            matches=matches,
            finish=finish,
        )
        await self.notifier.notify_queued(project_id)
        return result

    async def _send_offer(
        self, prepared: quoting.PreparedSend, payer_hint: str | None, resource_url: str
    ) -> X402PaymentRequired:
        payer = _payer_hint(payer_hint)
        total = prepared.total_atomic
        if total <= 0:
            raise Unavailable("x402 needs a price above zero; this server prices sends at 0")
        async with self.db.transaction() as session:
            credit = 0
            if payer is not None:
                balance = await credits.payer_balance(session, payer, self.network.network)
                # At least one atomic unit is paid on chain: its signature is what proves the
                # caller holds the wallet whose credit we spend.
                credit = min(balance, total - 1)
            quote = await quoting.store_quote(
                session,
                prepared,
                None,
                self.settings.quote_ttl_s,
                purpose=SEND,
                asset=self.network.usdc_address,
                network=self.network.network,
                pay_to=self.network.pay_to,
            )
            if credit > 0:
                quote.payer = payer
                quote.credit_atomic = credit
        first = prepared.items[0]
        details = {
            "quote_id": quote.id,
            "recipient_count": len(prepared.items),
            "message_length": first.plan.characters,
            "segment_count": prepared.segment_count,
            "encoding": first.plan.encoding,
            "per_message_rate": pricing.format_usdc(max(i.price_atomic for i in prepared.items)),
            "messaging_fee": pricing.format_usdc(prepared.fees_atomic),
            "total": pricing.format_usdc(total),
            "total_atomic": total,
            "expires_at": quote.expires_at.isoformat(),
        }
        if credit > 0:
            details |= {
                "payer": payer,
                "credit_applied": pricing.format_usdc(credit),
                "credit_applied_atomic": credit,
                "amount_due": pricing.format_usdc(total - credit),
                "amount_due_atomic": total - credit,
            }
        segments = prepared.segment_count
        description = f"{len(prepared.items)} SMS, {segments} segment{'s' * (segments != 1)}"
        return X402PaymentRequired(
            self._offer(total - credit, details, resource_url, description),
            f"pay {pricing.format_usdc(total - credit)} USDC with x402 to send (quote {quote.id})",
        )

    # ----------------------------------------------------------------------- top-ups

    async def topup(
        self, project_id: str, amount_atomic: int, presented: PresentedPayment, resource_url: str
    ) -> PaidResult:
        """`POST /v1/credits/topup`: raises `X402PaymentRequired` for `amount_atomic` without a
        payment; with one, credits the project (a `topup` ledger row with the tx hash)."""
        if not 0 < amount_atomic <= MAX_TOPUP_ATOMIC:
            raise InvalidInput(
                f"`amount` must be above 0 and at most {pricing.format_usdc(MAX_TOPUP_ATOMIC)}"
            )
        if not presented.present:
            raise await self.topup_offer(project_id, amount_atomic, resource_url)

        async def finish(session: AsyncSession, paid: _Paid, quote: StoredQuote) -> dict:
            entry = await credits.credit_project(
                session,
                project_id,
                ledger.TOPUP,
                paid.amount_atomic,
                note=f"x402 payment {paid.payment_id}",
                tx_hash=paid.tx_hash,
            )
            return {
                "project_id": project_id,
                "credited": pricing.format_usdc(paid.amount_atomic),
                "credited_atomic": paid.amount_atomic,
                "balance": pricing.format_usdc(entry.balance_after_atomic),
                "balance_atomic": entry.balance_after_atomic,
                "payment": _payment_out(paid, quote, self.network),
            }

        def matches(quote: StoredQuote) -> None:
            if quote.total_atomic != amount_atomic:
                raise PaymentInvalid(
                    "quote_mismatch",
                    f"quote {quote.id} is for {pricing.format_usdc(quote.total_atomic)} USDC, "
                    f"not {pricing.format_usdc(amount_atomic)}",
                )

        return await self._collect(
            presented,
            purpose=TOPUP,
            project_id=project_id,
            request_id=None,
            body_sha256=_topup_sha256(project_id, amount_atomic),
            matches=matches,
            finish=finish,
        )

    async def topup_offer(
        self, project_id: str, amount_atomic: int, resource_url: str
    ) -> X402PaymentRequired:
        """A stored top-up quote for `amount_atomic` and the 402 offer that pays it."""
        now = utcnow()
        async with self.db.transaction() as session:
            quote = StoredQuote(
                id=new_id("quo"),
                project_id=project_id,
                body_sha256=_topup_sha256(project_id, amount_atomic),
                recipients=[],
                encoding="",
                segment_count=0,
                per_segment_rate_atomic=0,
                fees_atomic=0,
                total_atomic=amount_atomic,
                purpose=TOPUP,
                asset=self.network.usdc_address,
                network=self.network.network,
                pay_to=self.network.pay_to,
                created_at=now,
                expires_at=now + timedelta(seconds=self.settings.quote_ttl_s),
            )
            session.add(quote)
        details = {
            "quote_id": quote.id,
            "purpose": TOPUP,
            "project_id": project_id,
            "total": pricing.format_usdc(amount_atomic),
            "total_atomic": amount_atomic,
            "expires_at": quote.expires_at.isoformat(),
        }
        description = f"{pricing.format_usdc(amount_atomic)} USDC of Simwire credits"
        return X402PaymentRequired(
            self._offer(amount_atomic, details, resource_url, description),
            f"pay {pricing.format_usdc(amount_atomic)} USDC with x402 to top up (quote {quote.id})",
        )

    def _offer(
        self, amount_atomic: int, quote: dict[str, Any], resource_url: str, description: str
    ) -> PaymentOffer:
        requirement = PaymentRequirement(
            self.network, amount_atomic, self.settings.payment_timeout_s
        )
        extra = {"quote": quote}
        kwargs: dict[str, Any] = {
            "resource_url": resource_url,
            "description": description,
            "error": "payment_required",
            "extra": extra,
        }
        header = wire.payment_required_header([requirement], **kwargs)
        body = wire.payment_required_body_v1([requirement], **kwargs)
        body["message"] = f"payment required: {description}"
        body["quote"] = quote
        return PaymentOffer(header_v2=header, body_v1=body, quote=quote)

    # -------------------------------------------------------------- collecting payment

    async def _collect(
        self,
        presented: PresentedPayment,
        *,
        purpose: str,
        project_id: str | None,
        request_id: str | None,
        body_sha256: str,
        matches: Callable[[StoredQuote], None],
        finish: Callable[[AsyncSession, _Paid, StoredQuote], Awaitable[dict[str, Any]]],
    ) -> PaidResult:
        version = presented.header_version if presented.header else 0
        network_name = self._network_name(version)
        try:
            if presented.header:
                return await self._collect_authorization(
                    presented, purpose, project_id, request_id, body_sha256, matches, finish
                )
            return await self._collect_transfer(
                presented, purpose, project_id, request_id, matches, finish
            )
        except (PaymentInvalid, SettlementFailed, ChainUnavailable) as exc:
            log.info("x402_refused", reason=exc.reason, purpose=purpose)
            raise failure_from(exc, version, network_name) from exc

    def _network_name(self, version: int) -> str:
        if version == 1 and self.network.v1_name:
            return self.network.v1_name
        return self.network.network

    async def _collect_authorization(
        self,
        presented: PresentedPayment,
        purpose: str,
        project_id: str | None,
        request_id: str | None,
        body_sha256: str,
        matches: Callable[[StoredQuote], None],
        finish: Callable[[AsyncSession, _Paid, StoredQuote], Awaitable[dict[str, Any]]],
    ) -> PaidResult:
        assert presented.header is not None
        payment = wire.decode_payment(presented.header)
        network = self.network.network
        payer = payment.from_address.lower()
        async with self.db.sessions() as session:
            if await _authorization_recorded(session, network, payer, payment.nonce):
                raise PaymentInvalid("authorization_used", "this authorization already paid")
            quote = await _find_quote(
                session,
                _quote_id_of(payment) or presented.quote_id,
                purpose=purpose,
                project_id=project_id,
                network=network,
                body_sha256=body_sha256,
                amount_atomic=payment.value,
                payer=payer,
            )
        matches(quote)
        _check_quote_usable(quote, utcnow())
        requirement = PaymentRequirement(
            self.network, quote.total_atomic - quote.credit_atomic, self.settings.payment_timeout_s
        )
        await asyncio.to_thread(verify_authorization, payment, requirement, int(self._now()))
        _check_payer(quote, payer)
        chain = self.runtime.chain
        await chain.check_payable(payment)

        payment_id = new_id("pay")
        await self._reserve(
            Payment(
                id=payment_id,
                network=network,
                payer=payer,
                nonce=payment.nonce,
                amount_atomic=payment.value,
                quote_id=quote.id,
                purpose=purpose,
                status=RESERVED,
                project_id=project_id,
                created_at=utcnow(),
            ),
            quote,
            request_id,
        )
        try:
            settlement = await self.runtime.settle(payment, requirement)
        except (SettlementFailed, ChainUnavailable) as exc:
            if isinstance(exc, ChainUnavailable) and (
                exc.tx_hash or exc.reason == "settlement_unknown"
            ):
                # Sent but not confirmed in time (or a facilitator gave no clear answer): it
                # may still move the money, so the reservation stays (with its hash when
                # known) for the operator to reconcile.
                if exc.tx_hash:
                    await self._note_pending(payment_id, exc.tx_hash)
            else:
                await self._release(payment_id, quote, request_id)
            raise
        paid = _Paid(
            payment_id=payment_id,
            payer=payment.from_address,
            tx_hash=settlement.tx_hash,
            amount_atomic=settlement.amount,
            network_name=payment.network,
            x402_version=payment.x402_version,
        )
        try:
            async with self.db.transaction() as session:
                await session.execute(
                    update(Payment)
                    .where(col(Payment.id) == payment_id)
                    .values(status=SETTLED, tx_hash=settlement.tx_hash, settled_at=utcnow())
                )
                body = await finish(session, paid, quote)
        except Exception:
            # The money moved: the reservation (with the quote) stays, with its hash, for the
            # operator to reconcile.
            log.error("x402_record_failed", payment_id=payment_id, tx_hash=settlement.tx_hash)
            with contextlib.suppress(Exception):
                await self._note_pending(payment_id, settlement.tx_hash)
            raise
        log.info("x402_settled", payment_id=payment_id, purpose=purpose, tx_hash=paid.tx_hash)
        return self._result(body, paid)

    async def _collect_transfer(
        self,
        presented: PresentedPayment,
        purpose: str,
        project_id: str | None,
        request_id: str | None,
        matches: Callable[[StoredQuote], None],
        finish: Callable[[AsyncSession, _Paid, StoredQuote], Awaitable[dict[str, Any]]],
    ) -> PaidResult:
        assert presented.tx_hash is not None
        tx_hash = presented.tx_hash.strip().lower()
        if not presented.quote_id:
            raise PaymentInvalid(
                "quote_required",
                f"a plain transfer pays a quote: send its id as {QUOTE_ID_HEADER} or `quote_id`",
            )
        network = self.network.network
        async with self.db.sessions() as session:
            if await _tx_recorded(session, network, tx_hash):
                raise PaymentInvalid("tx_already_used", f"{tx_hash} already paid for something")
            quote = await _find_quote(
                session,
                presented.quote_id,
                purpose=purpose,
                project_id=project_id,
                network=network,
            )
        matches(quote)
        _check_quote_usable(quote, utcnow())
        proof = await self.runtime.chain.verify_transfer_tx(
            tx_hash, quote.total_atomic - quote.credit_atomic
        )
        _check_payer(quote, proof.payer.lower())
        payment_id = new_id("pay")
        paid = _Paid(
            payment_id=payment_id,
            payer=proof.payer,
            tx_hash=proof.tx_hash,
            amount_atomic=proof.amount,
            network_name=network,
            x402_version=2,
        )
        try:
            async with self.db.transaction() as session:
                await _use_quote(session, quote)
                session.add(
                    Payment(
                        id=payment_id,
                        network=network,
                        payer=proof.payer.lower(),
                        tx_hash=proof.tx_hash,
                        amount_atomic=proof.amount,
                        quote_id=quote.id,
                        purpose=purpose,
                        status=SETTLED,
                        project_id=project_id,
                        created_at=utcnow(),
                        settled_at=utcnow(),
                    )
                )
                await session.flush()
                await self._spend_credit(session, quote, request_id)
                body = await finish(session, paid, quote)
        except IntegrityError as exc:
            raise PaymentInvalid("tx_already_used", f"{tx_hash} already paid") from exc
        log.info("x402_transfer_accepted", payment_id=payment_id, purpose=purpose)
        return self._result(body, paid)

    def _result(self, body: dict[str, Any], paid: _Paid) -> PaidResult:
        header = wire.payment_response_header(
            network=paid.network_name,
            transaction=paid.tx_hash,
            payer=paid.payer,
            amount_atomic=paid.amount_atomic,
        )
        return PaidResult(body, wire.payment_response_header_name(paid.x402_version), header)

    # ------------------------------------------------------------ reservation lifecycle

    async def _reserve(self, row: Payment, quote: StoredQuote, request_id: str | None) -> None:
        """Takes the quote, the authorization's nonce and the payer's credit in one commit, so
        a second request with the same authorization or quote stops here."""
        try:
            async with self.db.transaction() as session:
                await _use_quote(session, quote)
                session.add(row)
                await session.flush()
                await self._spend_credit(session, quote, request_id)
        except IntegrityError as exc:
            raise PaymentInvalid(
                "authorization_used", "this authorization is already being settled"
            ) from exc

    async def _spend_credit(
        self, session: AsyncSession, quote: StoredQuote, request_id: str | None
    ) -> None:
        if quote.credit_atomic <= 0 or quote.payer is None:
            return
        try:
            await credits.charge_payer(
                session,
                quote.payer,
                self.network.network,
                quote.credit_atomic,
                request_id or quote.id,
            )
        except InsufficientCredits as exc:
            raise PaymentInvalid(
                "payer_credit_changed",
                "the payer's refund credit changed since the quote; ask for a new quote",
            ) from exc

    async def _release(self, payment_id: str, quote: StoredQuote, request_id: str | None) -> None:
        """Undoes `_reserve` after a settlement that moved nothing: no payment is recorded,
        the quote and the authorization can pay again."""
        async with self.db.transaction() as session:
            await session.execute(delete(Payment).where(col(Payment.id) == payment_id))
            await session.execute(
                update(StoredQuote).where(col(StoredQuote.id) == quote.id).values(used_at=None)
            )
            if quote.credit_atomic > 0 and quote.payer is not None:
                await credits.refund_payer(
                    session,
                    quote.payer,
                    self.network.network,
                    quote.credit_atomic,
                    request_id or quote.id,
                    note=f"payment {payment_id} did not settle",
                )

    async def _note_pending(self, payment_id: str, tx_hash: str) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(Payment).where(col(Payment.id) == payment_id).values(tx_hash=tx_hash.lower())
            )


# --------------------------------------------------------------------------- helpers


def _outbound_item(item: quoting.PreparedItem) -> outbound.OutboundItem:
    return outbound.OutboundItem(
        to=item.to,
        body=item.body,
        encoding=item.plan.encoding,
        segment_count=item.plan.segment_count,
        price_atomic=item.price_atomic,
        tag=item.tag,
    )


def _payment_out(paid: _Paid, quote: StoredQuote, network: NetworkConfig) -> dict[str, Any]:
    return {
        "id": paid.payment_id,
        "quote_id": quote.id,
        "network": network.network,
        "payer": paid.payer,
        "transaction": paid.tx_hash,
        "amount": pricing.format_usdc(paid.amount_atomic),
        "amount_atomic": paid.amount_atomic,
        "credit_applied_atomic": quote.credit_atomic,
    }


def _topup_sha256(project_id: str, amount_atomic: int) -> str:
    return pricing.body_sha256(f"topup\x1f{project_id}\x1f{amount_atomic}")


def _payer_hint(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not _ADDRESS.match(value):
        raise InvalidInput(f"{PAYER_HEADER} must be a 0x-prefixed 20-byte address")
    return value.lower()


def _quote_id_of(payment: wire.DecodedPayment) -> str | None:
    """The quote id a v2 client echoes back in `accepted.extra.quote`."""
    if payment.accepted is None or not isinstance(payment.accepted.extra, dict):
        return None
    quote = payment.accepted.extra.get("quote")
    if isinstance(quote, dict) and isinstance(quote.get("quote_id"), str):
        return str(quote["quote_id"])
    return None


async def _authorization_recorded(
    session: AsyncSession, network: str, payer: str, nonce: str
) -> bool:
    found = await session.execute(
        select(col(Payment.id)).where(
            col(Payment.network) == network,
            col(Payment.payer) == payer,
            col(Payment.nonce) == nonce,
        )
    )
    return found.first() is not None


async def _tx_recorded(session: AsyncSession, network: str, tx_hash: str) -> bool:
    found = await session.execute(
        select(col(Payment.id)).where(
            col(Payment.network) == network, col(Payment.tx_hash) == tx_hash
        )
    )
    return found.first() is not None


async def _find_quote(
    session: AsyncSession,
    quote_id: str | None,
    *,
    purpose: str,
    project_id: str | None,
    network: str,
    body_sha256: str | None = None,
    amount_atomic: int | None = None,
    payer: str | None = None,
) -> StoredQuote:
    """The quote a payment names, or (v1 clients echo nothing) the newest unused, unexpired
    quote for the same content whose amount due equals the authorization's value."""
    if quote_id:
        quote = (
            await session.execute(
                select(StoredQuote).where(col(StoredQuote.id) == quote_id.strip())
            )
        ).scalar_one_or_none()
        if (
            quote is None
            or quote.purpose != purpose
            or quote.project_id != project_id
            or quote.network != network
        ):
            raise PaymentInvalid("quote_not_found", f"no {purpose} quote {quote_id!r} to pay")
        return quote
    query = select(StoredQuote).where(
        col(StoredQuote.purpose) == purpose,
        col(StoredQuote.network) == network,
        col(StoredQuote.body_sha256) == body_sha256,
        col(StoredQuote.used_at).is_(None),
        col(StoredQuote.expires_at) > utcnow(),
    )
    query = query.where(
        col(StoredQuote.project_id).is_(None)
        if project_id is None
        else col(StoredQuote.project_id) == project_id
    )
    candidates = (
        await session.execute(query.order_by(col(StoredQuote.seq).desc()).limit(20))
    ).scalars()
    for quote in candidates:
        if quote.total_atomic - quote.credit_atomic == amount_atomic and (
            quote.payer is None or quote.payer == payer
        ):
            return quote
    raise PaymentInvalid(
        "quote_not_found",
        f"no unused quote for this request at that amount; send {QUOTE_ID_HEADER}",
    )


def _check_send_quote(quote: StoredQuote, prepared: quoting.PreparedSend) -> None:
    if quote.body_sha256 != quoting.content_sha256(prepared.items) or list(quote.recipients) != [
        item.to for item in prepared.items
    ]:
        raise PaymentInvalid(
            "quote_mismatch", f"the request's recipients or body differ from quote {quote.id}"
        )


def _check_quote_usable(quote: StoredQuote, now: Any) -> None:
    if quote.used_at is not None:
        raise PaymentInvalid("quote_used", f"quote {quote.id} was already paid")
    if quote.expires_at <= now:
        raise PaymentInvalid("quote_expired", f"quote {quote.id} expired; ask for a new one")


def _check_payer(quote: StoredQuote, payer: str) -> None:
    if quote.payer is not None and quote.credit_atomic > 0 and payer != quote.payer:
        raise PaymentInvalid(
            "payer_mismatch",
            f"quote {quote.id} spends the credit of {quote.payer}; only that wallet can pay it",
        )


async def _use_quote(session: AsyncSession, quote: StoredQuote) -> None:
    taken = await session.execute(
        update(StoredQuote)
        .where(col(StoredQuote.id) == quote.id, col(StoredQuote.used_at).is_(None))
        .values(used_at=utcnow())
        .returning(col(StoredQuote.id))
    )
    if taken.scalar_one_or_none() is None:
        raise PaymentInvalid("quote_used", f"quote {quote.id} was already paid")
