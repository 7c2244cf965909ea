"""What a payment buys, written on the payment before it is settled, so that whoever sees
the settlement first (the paying request, a retry, the reconciliation sweep) fulfils it, once:
queue a paid request's messages, or credit a project's top-up."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import MessageRequest, Payment, StoredQuote
from app.domain import ledger, pricing
from app.payments.networks import NetworkConfig
from app.services import callbacks, credits, outbound, quoting, sending
from app.services.ids import utcnow
from app.services.quote_terms import prepared_terms
from app.services.x402.common import SEND, TOPUP, Outcome, payment_out


def send_order(
    project_id: str,
    request_id: str,
    prepared: quoting.PreparedSend,
    ttl_s: int,
    callback: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`callback` is app/services/callbacks.callback_order's, for a send with `callback_url`."""
    return {
        "purpose": SEND,
        "project_id": project_id,
        "request_id": request_id,
        "ttl_s": ttl_s,
        "segment_count": prepared.segment_count,
        "terms": prepared_terms(prepared),
        "items": [
            {
                "to": item.to,
                "body": item.body,
                "encoding": item.plan.encoding,
                "segment_count": item.plan.segment_count,
                "price_atomic": item.price_atomic,
                "tag": item.tag,
            }
            for item in prepared.items
        ],
        "callback": callback,
    }


def topup_order(project_id: str, amount_atomic: int) -> dict[str, Any]:
    return {"purpose": TOPUP, "project_id": project_id, "amount_atomic": amount_atomic}


async def fulfil(
    session: AsyncSession,
    payment: Payment,
    quote: StoredQuote,
    network: NetworkConfig,
    *,
    late: bool,
) -> Outcome:
    """Carry out `payment.order` in the caller's transaction (the one that marks the payment
    settled). A send settled `late` (found by reconciliation) after its quote expired is not
    queued: the whole price becomes the payer's credit for a next call."""
    order = payment.order or {}
    if order.get("purpose") == TOPUP:
        return await _credit_topup(session, payment, quote, network, order)
    if late and quote.expires_at <= utcnow():
        return await _credit_payer_instead(session, payment, quote, network, order)
    return await _queue_send(session, payment, quote, network, order)


async def _queue_send(
    session: AsyncSession,
    payment: Payment,
    quote: StoredQuote,
    network: NetworkConfig,
    order: dict[str, Any],
) -> Outcome:
    request = MessageRequest(
        id=order["request_id"],
        project_id=order["project_id"],
        billing="x402",
        payer=payment.payer,
        network=network.network,
        payment_id=payment.id,
        total_atomic=quote.total_atomic,
        segment_count=order["segment_count"],
        created_at=utcnow(),
    )
    session.add(request)
    callback = order.get("callback")
    if callback:
        callbacks.add_callback_endpoint(session, order["project_id"], request.id, callback)
    await session.flush()
    messages = await outbound.enqueue(
        session,
        order["project_id"],
        [outbound.OutboundItem(**item) for item in order["items"]],
        request_id=request.id,
        ttl_s=order["ttl_s"],
        billing="x402",
    )
    body = sending.accepted_response(request, messages, quote.total_atomic, order.get("terms"))
    body["payment"] = payment_out(payment, quote, network)
    if callback:
        body["callback_url"] = callback["url"]
    request.response = body
    return Outcome(202, body)


async def _credit_payer_instead(
    session: AsyncSession,
    payment: Payment,
    quote: StoredQuote,
    network: NetworkConfig,
    order: dict[str, Any],
) -> Outcome:
    amount = payment.amount_atomic + quote.credit_atomic
    await credits.refund_payer(
        session,
        payment.payer,
        network.network,
        amount,
        order["request_id"],
        note=f"payment {payment.id} settled after quote {quote.id} expired",
    )
    return Outcome(
        409,
        {
            "error": "paid_after_quote_expired",
            "message": (
                f"the payment settled after quote {quote.id} expired, so nothing was sent; "
                f"{pricing.format_usdc(amount)} USDC is credit for this wallet's next call "
                f"(send X-Payer with it)"
            ),
            "credited": pricing.format_usdc(amount),
            "credited_atomic": amount,
            "payment": payment_out(payment, quote, network),
        },
    )


async def _credit_topup(
    session: AsyncSession,
    payment: Payment,
    quote: StoredQuote,
    network: NetworkConfig,
    order: dict[str, Any],
) -> Outcome:
    entry = await credits.credit_project(
        session,
        order["project_id"],
        ledger.TOPUP,
        payment.amount_atomic,
        note=f"x402 payment {payment.id}",
        tx_hash=payment.tx_hash,
    )
    return Outcome(
        200,
        {
            "project_id": order["project_id"],
            "credited": pricing.format_usdc(payment.amount_atomic),
            "credited_atomic": payment.amount_atomic,
            "balance": pricing.format_usdc(entry.balance_after_atomic),
            "balance_atomic": entry.balance_after_atomic,
            "payment": payment_out(payment, quote, network),
        },
    )
