"""Which stored quote a payment pays, and whether it still may."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from x402.extensions.payment_identifier import extract_payment_identifier
from x402.http.utils import safe_base64_decode
from x402.schemas import PaymentPayload

from app.db.models import StoredQuote
from app.payments import wire
from app.payments.errors import PaymentInvalid
from app.services import quoting
from app.services.ids import utcnow
from app.services.x402.common import QUOTE_ID_HEADER


async def find_quote(
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


async def get_quote(session: AsyncSession, quote_id: str) -> StoredQuote:
    result = await session.execute(select(StoredQuote).where(col(StoredQuote.id) == quote_id))
    return result.scalar_one()


def quote_id_of(payment: wire.DecodedPayment) -> str | None:
    """The quote id a v2 client echoes back in `accepted.extra.quote`."""
    if payment.accepted is None or not isinstance(payment.accepted.extra, dict):
        return None
    quote = payment.accepted.extra.get("quote")
    if isinstance(quote, dict) and isinstance(quote.get("quote_id"), str):
        return str(quote["quote_id"])
    return None


def payment_identifier_of(header: str) -> str | None:
    """The x402 payment-identifier extension's `id` a v2 payment carries (None for v1, or
    when absent or not a valid identifier)."""
    try:
        payload = PaymentPayload.model_validate_json(safe_base64_decode(header))
    except (ValueError, TypeError):
        return None
    return extract_payment_identifier(payload)


def check_send_quote(quote: StoredQuote, prepared: quoting.PreparedSend) -> None:
    if quote.body_sha256 != quoting.content_sha256(prepared.items) or list(quote.recipients) != [
        item.to for item in prepared.items
    ]:
        raise PaymentInvalid(
            "quote_mismatch", f"the request's recipients or body differ from quote {quote.id}"
        )


def check_quote_usable(quote: StoredQuote, now: datetime) -> None:
    if quote.used_at is not None:
        raise PaymentInvalid("quote_used", f"quote {quote.id} was already paid")
    if quote.expires_at <= now:
        raise PaymentInvalid("quote_expired", f"quote {quote.id} expired; ask for a new one")


def check_payer(quote: StoredQuote, payer: str) -> None:
    if quote.payer is not None and quote.credit_atomic > 0 and payer != quote.payer:
        raise PaymentInvalid(
            "payer_mismatch",
            f"quote {quote.id} spends the credit of {quote.payer}; only that wallet can pay it",
        )


async def use_quote(session: AsyncSession, quote: StoredQuote) -> None:
    taken = await session.execute(
        update(StoredQuote)
        .where(col(StoredQuote.id) == quote.id, col(StoredQuote.used_at).is_(None))
        .values(used_at=utcnow())
        .returning(col(StoredQuote.id))
    )
    if taken.scalar_one_or_none() is None:
        raise PaymentInvalid("quote_used", f"quote {quote.id} was already paid")


async def unuse_quote(session: AsyncSession, quote_id: str) -> None:
    await session.execute(
        update(StoredQuote).where(col(StoredQuote.id) == quote_id).values(used_at=None)
    )
