"""The x402 use cases of one request: a send paid per call, a project's top-up.

Each reads like the protocol: screen → 402 offer, or decode → find the quote → verify → reserve
→ settle → record → fulfil. Nothing moves on chain before every local check passed and the
authorization is reserved in our database; nothing is queued or credited before the chain
confirmed the payment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.db.engine import Database
from app.db.models import Payment, StoredQuote
from app.db.repositories.payments import PaymentRepository
from app.domain import pricing
from app.domain.errors import InvalidInput, RecipientOptedOut
from app.logs import get_logger
from app.payments import wire
from app.payments.eip191 import recover_text_signer
from app.payments.eip3009 import CLOCK_SKEW_S, verify_authorization
from app.payments.errors import ChainUnavailable, PaymentInvalid, SettlementFailed
from app.payments.networks import NetworkConfig
from app.services import callbacks, quoting, send_limits, sending, suppressions
from app.services.ids import new_id, utcnow
from app.services.x402 import offers, orders
from app.services.x402.common import (
    PAYMENT_TX_SIGNATURE_HEADER,
    QUOTE_ID_HEADER,
    RESERVED,
    SEND,
    SETTLED,
    TOPUP,
    PaidResult,
    PresentedPayment,
    paid_result,
)
from app.services.x402.quotes import (
    check_payer,
    check_quote_usable,
    check_send_quote,
    find_quote,
    get_quote,
    payment_identifier_of,
    quote_id_of,
)
from app.services.x402.settlement import QueueNotifier, Settlements
from app.services.x402_errors import X402PaymentRequired, failure_from
from app.services.x402_runtime import PaymentRuntime, x402_project_id
from app.settings import Settings

log = get_logger("simwire.x402")

# Top-ups are bounded so a typo cannot ask a wallet for a fortune.
MAX_TOPUP_ATOMIC = 10_000 * pricing.ATOMIC_PER_USDC


@dataclass(frozen=True)
class _Purchase:
    """What one paid call buys: the quote it must pay and the order fulfilled once paid."""

    purpose: str
    project_id: str | None  # whose quote (None: an anonymous send)
    body_sha256: str
    order: dict[str, Any]
    matches: Callable[[StoredQuote], None]
    screen: Callable[[str], Awaitable[None]] | None = None
    """Checks a new authorization's payer may buy this (limits), before it is verified."""


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

    @property
    def settlements(self) -> Settlements:
        return Settlements(self.db, self.settings, self.runtime, self.notifier)

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
        request_id = new_id("req")
        callback = None
        if options.callback_url is not None:  # refused before any payment is asked for
            callback = await callbacks.callback_order(
                self.settings, options.callback_url, request_id
            )
        project_id = await x402_project_id(self.db, self.settings)
        recipients = [item.to for item in prepared.items]

        async def screen(payer: str | None) -> None:
            await self._screen_recipients(project_id, recipients, payer)

        if not presented.present:
            hint = presented.payer_hint
            await screen(hint.strip() if hint and hint.strip() else None)
            raise await offers.send_offer(
                self.db, self.settings, self.network, prepared, presented.payer_hint, resource_url
            )
        order = orders.send_order(
            project_id,
            request_id,
            prepared,
            options.ttl_s or self.settings.message_ttl_s,
            callback,
        )
        result = await self._collect(
            presented,
            _Purchase(
                purpose=SEND,
                project_id=None,
                body_sha256=quoting.content_sha256(prepared.items),
                order=order,
                matches=lambda quote: check_send_quote(quote, prepared),
                screen=screen,
            ),
        )
        if result.status_code != 202:
            return result
        return replace(result, body=callbacks.with_callback_secret(result.body, self.settings))

    async def _screen_recipients(
        self, project_id: str, recipients: list[str], payer: str | None
    ) -> None:
        """Before any payment is asked for or taken: numbers suppressed for the x402 project
        (422 `recipient_opted_out`), then the per-recipient and per-wallet limits (429)."""
        async with self.db.reading() as session:
            suppressed = await session.run_sync(
                suppressions.suppressed_among, {(project_id, to) for to in recipients}
            )
            if suppressed:
                raise RecipientOptedOut(sorted({number for _, number in suppressed}))
            await send_limits.check_paid_send(session, self.settings, recipients, payer)

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

        def matches(quote: StoredQuote) -> None:
            if quote.total_atomic != amount_atomic:
                raise PaymentInvalid(
                    "quote_mismatch",
                    f"quote {quote.id} is for {pricing.format_usdc(quote.total_atomic)} USDC, "
                    f"not {pricing.format_usdc(amount_atomic)}",
                )

        return await self._collect(
            presented,
            _Purchase(
                purpose=TOPUP,
                project_id=project_id,
                body_sha256=offers.topup_sha256(project_id, amount_atomic),
                order=orders.topup_order(project_id, amount_atomic),
                matches=matches,
            ),
        )

    async def topup_offer(
        self, project_id: str, amount_atomic: int, resource_url: str
    ) -> X402PaymentRequired:
        return await offers.topup_offer(
            self.db, self.settings, self.network, project_id, amount_atomic, resource_url
        )

    # -------------------------------------------------------------- collecting payment

    async def _collect(self, presented: PresentedPayment, purchase: _Purchase) -> PaidResult:
        version = presented.header_version if presented.header else 0
        network_name = (
            self.network.v1_name if version == 1 and self.network.v1_name else self.network.network
        )
        try:
            if presented.header:
                return await self._collect_authorization(presented.header, presented, purchase)
            return await self._collect_transfer(presented, purchase)
        except (PaymentInvalid, SettlementFailed, ChainUnavailable) as exc:
            log.info("x402_refused", reason=exc.reason, purpose=purchase.purpose)
            raise failure_from(exc, version, network_name) from exc

    async def _collect_authorization(
        self, header: str, presented: PresentedPayment, purchase: _Purchase
    ) -> PaidResult:
        payment = wire.decode_payment(header)
        network = self.network.network
        payer = payment.from_address.lower()
        identifier = payment_identifier_of(header)
        prior: Payment | None = None
        async with self.db.sessions() as session:
            repo = PaymentRepository(session)
            held = await repo.find_authorization(network, payer, payment.nonce)
            if held is None and identifier is not None:
                prior = await repo.find_identifier(network, payer, identifier)
            if held is None and prior is None:
                quote = await find_quote(
                    session,
                    quote_id_of(payment) or presented.quote_id,
                    purpose=purchase.purpose,
                    project_id=purchase.project_id,
                    network=network,
                    body_sha256=purchase.body_sha256,
                    amount_atomic=payment.value,
                    payer=payer,
                )
        if held is not None:
            return await self._answer_again(held, header, payment, purchase)
        if prior is not None:
            return await self._answer_identified(prior, payment, purchase)
        if purchase.screen is not None:  # a new payment: refused before it is taken
            await purchase.screen(payer)
        purchase.matches(quote)
        check_quote_usable(quote, utcnow())
        requirement = self.settlements.requirement(quote.total_atomic - quote.credit_atomic)
        await asyncio.to_thread(verify_authorization, payment, requirement, int(self._now()))
        check_payer(quote, payer)
        chain = self.runtime.chain
        _, from_block = await asyncio.gather(chain.check_payable(payment), chain.block_number())
        row = Payment(
            id=new_id("pay"),
            network=network,
            payer=payer,
            nonce=payment.nonce,
            amount_atomic=payment.value,
            quote_id=quote.id,
            purpose=purchase.purpose,
            status=RESERVED,
            project_id=purchase.project_id,
            header=header,
            header_version=payment.x402_version,
            valid_before=payment.valid_before,
            from_block=from_block,
            request_id=purchase.order.get("request_id"),
            order=purchase.order,
            created_at=utcnow(),
            payment_identifier=identifier,
        )
        try:
            await self.settlements.reserve(row, quote)
        except IntegrityError as exc:
            async with self.db.sessions() as session:
                repo = PaymentRepository(session)
                held = await repo.find_authorization(network, payer, payment.nonce)
                if held is None and identifier is not None:
                    prior = await repo.find_identifier(network, payer, identifier)
            if held is not None:
                return await self._answer_again(held, header, payment, purchase)
            if prior is not None:
                return await self._answer_identified(prior, payment, purchase)
            raise PaymentInvalid(
                "authorization_used", "this authorization is already being settled"
            ) from exc
        outcome = await self.settlements.settle(row, payment)
        return paid_result(row, outcome, self.network)

    async def _answer_again(
        self, held: Payment, header: str, payment: wire.DecodedPayment, purchase: _Purchase
    ) -> PaidResult:
        """A payment we already hold, presented again (a retry after a lost answer or a
        crash): the outcome it had, or the one it now comes to. Only the very header that
        was reserved, for the very request it paid, and — once settled — only one that names
        its quote: a v1 header can be rebuilt from the settled transaction by anyone, so it
        proves nothing then."""
        names_quote = quote_id_of(payment) is not None
        if held.header != header or (held.status == SETTLED and not names_quote):
            raise PaymentInvalid("authorization_used", "this authorization already paid")
        if not await self._paid_for(held, purchase):
            raise PaymentInvalid(
                "authorization_used", "this authorization already paid for another request"
            )
        outcome = await self.settlements.answer_again(held, payment, may_read_outcome=names_quote)
        return paid_result(held, outcome, self.network)

    async def _answer_identified(
        self, prior: Payment, payment: wire.DecodedPayment, purchase: _Purchase
    ) -> PaidResult:
        """A new authorization carrying the payment identifier of a payment we hold: a retry
        of that paid call, so it gets that call's outcome and this authorization is neither
        reserved nor settled. It must be a valid authorization from the same payer for the same
        amount (that proves the wallet), for the same request."""
        requirement = self.settlements.requirement(prior.amount_atomic)
        await asyncio.to_thread(verify_authorization, payment, requirement, int(self._now()))
        if prior.header is None or not await self._paid_for(prior, purchase):
            raise PaymentInvalid(
                "payment_identifier_reused",
                "this payment identifier already paid for another request; use a new one",
            )
        first = wire.decode_payment(prior.header)
        outcome = await self.settlements.answer_again(prior, first, may_read_outcome=True)
        log.info("x402_identified_retry", payment_id=prior.id, purpose=purchase.purpose)
        return paid_result(prior, outcome, self.network)

    async def _paid_for(self, held: Payment, purchase: _Purchase) -> bool:
        """Whether `held` paid a quote for the same thing `purchase` asks for."""
        if held.purpose != purchase.purpose:
            return False
        async with self.db.sessions() as session:
            quote = await get_quote(session, held.quote_id)
        return quote.body_sha256 == purchase.body_sha256 and quote.project_id == purchase.project_id

    async def _collect_transfer(
        self, presented: PresentedPayment, purchase: _Purchase
    ) -> PaidResult:
        assert presented.tx_hash is not None
        tx_hash = presented.tx_hash.strip().lower()
        if not presented.quote_id:
            raise PaymentInvalid(
                "quote_required",
                f"a plain transfer pays a quote: send its id as {QUOTE_ID_HEADER} or `quote_id`",
            )
        if not presented.tx_signature:
            raise PaymentInvalid(
                "tx_signature_required",
                f"a plain transfer is claimed by its sender: sign the quote id with the sending "
                f"wallet (EIP-191 personal_sign) and send it as {PAYMENT_TX_SIGNATURE_HEADER}",
            )
        network = self.network.network
        async with self.db.sessions() as session:
            if await PaymentRepository(session).tx_recorded(network, tx_hash):
                raise PaymentInvalid("tx_already_used", f"{tx_hash} already paid for something")
            quote = await find_quote(
                session,
                presented.quote_id,
                purpose=purchase.purpose,
                project_id=purchase.project_id,
                network=network,
            )
        purchase.matches(quote)
        check_quote_usable(quote, utcnow())
        signer = recover_text_signer(quote.id, presented.tx_signature)
        proof = await self.runtime.chain.verify_transfer_tx(
            tx_hash, quote.total_atomic - quote.credit_atomic
        )
        if signer != proof.payer:
            raise PaymentInvalid(
                "tx_signature_mismatch",
                f"{PAYMENT_TX_SIGNATURE_HEADER} is not signed by the transfer's sender",
            )
        # Block timestamps and our clock may disagree by a little; an older transfer is not
        # payment for this quote.
        if proof.mined_at < int(quote.created_at.timestamp()) - CLOCK_SKEW_S:
            raise PaymentInvalid(
                "tx_before_quote", f"{tx_hash} was mined before quote {quote.id} was issued"
            )
        check_payer(quote, proof.payer.lower())
        row = Payment(
            id=new_id("pay"),
            network=network,
            payer=proof.payer.lower(),
            tx_hash=proof.tx_hash,
            amount_atomic=proof.amount,
            quote_id=quote.id,
            purpose=purchase.purpose,
            status=SETTLED,
            project_id=purchase.project_id,
            request_id=purchase.order.get("request_id"),
            order=purchase.order,
            created_at=utcnow(),
        )
        try:
            outcome = await self.settlements.accept_transfer(row, quote)
        except IntegrityError as exc:
            raise PaymentInvalid("tx_already_used", f"{tx_hash} already paid") from exc
        log.info("x402_transfer_accepted", payment_id=row.id, purpose=purchase.purpose)
        return paid_result(row, outcome, self.network)
