"""`/v1/wallet/...`: a wallet that paid per call reads its requests, messages and replies,
signed in with Sign-In-With-X (`SIGN-IN-WITH-X` header); no account, no key."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.params import Parameter

from app.api.agent_docs import public_base
from app.api.controllers.reading import (
    Limit,
    Since,
    message_filter,
    parse_limit,
)
from app.api.openapi import WALLET_SECURITY, error_responses
from app.api.schemas_reading import MessageOut, RequestOut, message_out, request_out
from app.db.engine import Database
from app.domain.errors import Unavailable
from app.services import wallets
from app.services.x402_runtime import PaymentRuntime
from app.settings import Settings


class WalletMessageOut(MessageOut):
    """A message of the wallet's, or (`direction: in`) a reply to one: `in_reply_to` names
    the wallet's message it answers."""


class WalletMessageList(msgspec.Struct):
    address: str
    data: list[WalletMessageOut]
    count: int


class WalletRequestList(msgspec.Struct):
    address: str
    data: list[RequestOut]
    count: int


async def _signed_in(
    request: Request[Any, Any, Any],
    db: Database,
    settings: Settings,
    payments: PaymentRuntime,
) -> str:
    if payments.network is None:
        raise Unavailable("x402 is not enabled on this server, so no wallet has paid here")
    origin = public_base(settings, request=request)
    header = request.headers.get(wallets.SIGN_IN_HEADER)
    return await wallets.sign_in(db, payments.network, header, origin, request.url.path)


@get(
    "/v1/wallet/requests",
    tags=["wallet"],
    summary="A paying wallet's requests (Sign-In-With-X)",
    security=WALLET_SECURITY,
    responses=error_responses(400, 401),
)
async def wallet_requests(
    request: Request[Any, Any, Any],
    db: Database,
    settings: Settings,
    payments: PaymentRuntime,
    limit: Limit = None,
) -> WalletRequestList:
    """The requests this wallet paid for with x402, newest first, with their messages."""
    address = await _signed_in(request, db, settings, payments)
    assert payments.network is not None
    views = await wallets.wallet_requests(
        db, address, payments.network.network, parse_limit(limit, 20) if limit else 20
    )
    return WalletRequestList(address, [request_out(view) for view in views], len(views))


@get(
    "/v1/wallet/messages",
    tags=["wallet"],
    summary="A paying wallet's messages and the replies to them (Sign-In-With-X)",
    security=WALLET_SECURITY,
    responses=error_responses(400, 401),
)
async def wallet_messages(
    request: Request[Any, Any, Any],
    db: Database,
    settings: Settings,
    payments: PaymentRuntime,
    direction: Annotated[
        str | None,
        Parameter(
            required=False,
            description="`out`: what the wallet sent; `in`: the replies to it; both if absent",
            schema_extra={"pattern": "^(?:in|out|inbound|outbound)$"},
        ),
    ] = None,
    since: Since = None,
    limit: Limit = None,
) -> WalletMessageList:
    """Newest first. A reply is an inbound SMS from a recipient of the wallet's message, on
    the SIM that sent it, within 7 days, while no later message went to that sender there."""
    filters = message_filter(direction, None, None, None, None, None, since, None, None)
    address = await _signed_in(request, db, settings, payments)
    assert payments.network is not None
    found = await wallets.wallet_messages(
        db,
        address,
        payments.network.network,
        direction=filters.direction,
        since=filters.since,
        limit=parse_limit(limit),
    )
    data = [
        WalletMessageOut(**{f: getattr(out, f) for f in MessageOut.__struct_fields__})
        for m in found
        for out in [message_out(m.record)]
    ]
    return WalletMessageList(address, data, len(data))


WALLET_ROUTES = [wallet_requests, wallet_messages]
