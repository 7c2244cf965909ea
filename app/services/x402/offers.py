"""The 402 side: store a quote and write the x402 offer that pays it (a send, or a top-up)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from x402.http import encode_payment_required_header

from app.db.engine import Database
from app.db.models import StoredQuote
from app.domain import pricing
from app.domain.errors import InvalidInput, Unavailable
from app.payments import wire
from app.payments.networks import NetworkConfig
from app.payments.requirements import PaymentRequirement
from app.services import credits, quoting
from app.services.ids import iso_utc, new_id, utcnow
from app.services.quote_terms import prepared_terms
from app.services.x402 import discovery
from app.services.x402.common import PAYER_HEADER, SEND, TOPUP
from app.services.x402_errors import PaymentOffer, X402PaymentRequired
from app.settings import Settings

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


async def send_offer(
    db: Database,
    settings: Settings,
    network: NetworkConfig,
    prepared: quoting.PreparedSend,
    payer_hint: str | None,
    resource_url: str,
) -> X402PaymentRequired:
    """A stored send quote and its offer; a known payer's refund credit is applied first."""
    payer = _payer_hint(payer_hint)
    total = prepared.total_atomic
    if total <= 0:
        raise Unavailable("x402 needs a price above zero; this server prices sends at 0")
    async with db.transaction() as session:
        credit = 0
        if payer is not None:
            balance = await credits.payer_balance(session, payer, network.network)
            # At least one atomic unit is paid on chain: its signature is what proves the
            # caller holds the wallet whose credit we spend.
            credit = min(balance, total - 1)
        quote = quoting.new_quote(
            prepared,
            None,
            settings.quote_ttl_s,
            purpose=SEND,
            asset=network.usdc_address,
            network=network.network,
            pay_to=network.pay_to,
        )
        session.add(quote)
        await session.flush()
        if credit > 0:
            quote.payer = payer
            quote.credit_atomic = credit
    first = prepared.items[0]
    details = {
        "quote_id": quote.id,
        "message_length": first.plan.characters,
        "encoding": first.plan.encoding,
        **prepared_terms(prepared),
        "expires_at": iso_utc(quote.expires_at),
    }
    if credit > 0:
        details |= {
            "payer": payer,
            "credit_applied": pricing.format_usdc(credit),
            "credit_applied_atomic": credit,
            "amount_due": pricing.format_usdc(total - credit),
            "amount_due_atomic": total - credit,
        }
    segments = details["segment_count"]
    description = (
        f"{len(prepared.items)} SMS of {segments} segment{'s' * (segments != 1)}: "
        + discovery.SEND_DESCRIPTION
    )
    return X402PaymentRequired(
        _offer(
            settings,
            network,
            total - credit,
            details,
            resource_url,
            description,
            discovery.send_bazaar(),
        ),
        f"pay {pricing.format_usdc(total - credit)} USDC with x402 to send (quote {quote.id})",
    )


async def topup_offer(
    db: Database,
    settings: Settings,
    network: NetworkConfig,
    project_id: str,
    amount_atomic: int,
    resource_url: str,
) -> X402PaymentRequired:
    """A stored top-up quote for `amount_atomic` and the 402 offer that pays it."""
    now = utcnow()
    async with db.transaction() as session:
        quote = StoredQuote(
            id=new_id("quo"),
            project_id=project_id,
            body_sha256=topup_sha256(project_id, amount_atomic),
            recipients=[],
            encoding="",
            segment_count=0,
            per_segment_rate_atomic=0,
            fees_atomic=0,
            total_atomic=amount_atomic,
            purpose=TOPUP,
            asset=network.usdc_address,
            network=network.network,
            pay_to=network.pay_to,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.quote_ttl_s),
        )
        session.add(quote)
    details = {
        "quote_id": quote.id,
        "purpose": TOPUP,
        "project_id": project_id,
        "total": pricing.format_usdc(amount_atomic),
        "total_atomic": amount_atomic,
        "expires_at": iso_utc(quote.expires_at),
    }
    description = (
        f"{pricing.format_usdc(amount_atomic)} USDC of Simwire credits. "
        + discovery.TOPUP_DESCRIPTION
    )
    return X402PaymentRequired(
        _offer(
            settings,
            network,
            amount_atomic,
            details,
            resource_url,
            description,
            discovery.topup_bazaar(),
        ),
        f"pay {pricing.format_usdc(amount_atomic)} USDC with x402 to top up (quote {quote.id})",
    )


def topup_sha256(project_id: str, amount_atomic: int) -> str:
    return pricing.body_sha256(f"topup\x1f{project_id}\x1f{amount_atomic}")


def _offer(
    settings: Settings,
    network: NetworkConfig,
    amount_atomic: int,
    quote: dict[str, Any],
    resource_url: str,
    description: str,
    bazaar: dict[str, Any],
) -> PaymentOffer:
    """The 402 in every form a client may read: the v2 `PaymentRequired` (header, MCP), the
    v1 body, and the pay-per-call reference API's `context` and `payment_request`."""
    requirement = PaymentRequirement(network, amount_atomic, settings.payment_timeout_s)
    extensions = discovery.offer_extensions(network, resource_url, bazaar)
    kwargs: dict[str, Any] = {
        "resource_url": resource_url,
        "description": description,
        "mime_type": discovery.MIME_TYPE,
        "error": "payment_required",
        "extra": {"quote": quote},
    }
    required = wire.payment_required([requirement], extensions=extensions, **kwargs)
    header = encode_payment_required_header(required)
    body = wire.payment_required_body_v1([requirement], **kwargs)
    body["message"] = f"payment required: {description}"
    body["quote"] = quote
    body["context"] = {**quote, "tool": "sms"}
    body["payment_request"] = {
        "chain_id": network.chain_id,
        "network": network.network,
        "token_address": network.usdc_address,
        "amount": pricing.format_usdc(amount_atomic),
        "amount_atomic": amount_atomic,
        "recipient": network.pay_to,
    }
    body["resource"] = {
        "url": resource_url,
        "description": description,
        "mimeType": discovery.MIME_TYPE,
    }
    body["extensions"] = extensions
    return PaymentOffer(
        header_v2=header,
        body_v1=body,
        quote=quote,
        payment_required=required.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def _payer_hint(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not _ADDRESS.match(value):
        raise InvalidInput(f"{PAYER_HEADER} must be a 0x-prefixed 20-byte address")
    return value.lower()
