"""What a wallet that paid per call may read, without an account: it signs in with
Sign-In-With-X (CAIP-122 / EIP-4361, the x402 `sign-in-with-x` extension) and sees its own
paid requests, their messages, and the replies to them — nothing of any other wallet.

A reply is an inbound SMS whose sender got a message from this wallet, on the SIM that
received it, where that message is the latest the x402 project sent to the sender on that SIM
within 7 days (DESIGN §9's `in_reply_to` rule, stored with the SMS).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from x402.extensions.sign_in_with_x import (
    SIWxValidationOptions,
    parse_siwx_header,
    validate_siwx_message,
    verify_siwx_signature,
)

from app.db.engine import Database
from app.db.models import Message, MessageRequest, SignInNonce, Sim
from app.domain.errors import InvalidInput, Unauthorized
from app.domain.numbers import same_number
from app.payments.networks import NetworkConfig
from app.services import reading
from app.services.ids import utcnow
from app.services.x402 import discovery

SIGN_IN_HEADER = "SIGN-IN-WITH-X"
# A proof older than this is refused, whatever its own expiry says.
MAX_PROOF_AGE_S = 300
MIN_NONCE_CHARS = 8
MAX_REQUESTS = 100


class WalletSignInRequired(Unauthorized):
    """401: wallet routes need a Sign-In-With-X proof; `sign_in` is a fresh challenge."""

    code = "wallet_sign_in_required"


class SignInRefused(Unauthorized):
    """401: the proof was read but refused (`reason`: the x402 extension's code)."""

    code = "siwx_invalid"


class InvalidSignIn(InvalidInput):
    """400: the `SIGN-IN-WITH-X` header cannot be read."""

    code = "invalid_siwx"


def sign_in_required(network: NetworkConfig, origin: str, path: str) -> WalletSignInRequired:
    return WalletSignInRequired(
        f"sign in with the paying wallet: sign the `sign_in` challenge (Sign-In-With-X, "
        f"EIP-4361) and send it base64-encoded as the {SIGN_IN_HEADER} header",
        sign_in=discovery.siwx_challenge(network, origin, path),
    )


async def sign_in(
    db: Database, network: NetworkConfig, header: str | None, origin: str, path: str
) -> str:
    """The lowercase address `header` proves, for a server at `origin`. Raises
    `WalletSignInRequired` without a header, `InvalidSignIn` for one that cannot be read, and
    `SignInRefused` for a wrong domain or URI, an expired or too old message, another chain,
    a bad signature, or a nonce that signed in before."""
    if not header or not header.strip():
        raise sign_in_required(network, origin, path)
    try:
        payload = parse_siwx_header(header.strip())
    except ValueError as exc:
        raise InvalidSignIn(str(exc)) from exc
    validation = await validate_siwx_message(
        payload, origin.rstrip("/"), SIWxValidationOptions(maxAge=MAX_PROOF_AGE_S * 1000)
    )
    if not validation.is_valid:
        raise _refused(validation.invalid_reason, validation.invalid_message)
    if payload.chain_id != network.network:
        raise _refused(
            "invalid_siwx_unsupported_chain",
            f"sign in on {network.network}, the chain this server is paid on",
        )
    if len(payload.nonce) < MIN_NONCE_CHARS or not payload.nonce.isalnum():
        raise _refused("invalid_siwx_nonce", "the nonce must be at least 8 letters or digits")
    verified = await verify_siwx_signature(payload)
    if not verified.is_valid:
        raise _refused(verified.invalid_reason, verified.invalid_message)
    address = payload.address.lower()
    now = utcnow()
    try:
        async with db.transaction() as session:
            session.add(
                SignInNonce(
                    nonce=payload.nonce,
                    address=address,
                    used_at=now,
                    expires_at=now + timedelta(seconds=MAX_PROOF_AGE_S),
                )
            )
    except IntegrityError:
        raise _refused(
            "invalid_siwx_nonce", "this nonce already signed in; sign a fresh challenge"
        ) from None
    return address


def _refused(reason: str | None, message: str | None) -> SignInRefused:
    return SignInRefused(
        f"Sign-In-With-X refused: {message or reason}", reason=reason or "invalid_siwx"
    )


async def wallet_requests(
    db: Database, payer: str, network: str, limit: int = 50
) -> list[reading.RequestView]:
    """The wallet's paid requests on `network`, newest first, each with its messages."""
    if not 1 <= limit <= MAX_REQUESTS:
        raise InvalidInput(f"`limit` must be from 1 to {MAX_REQUESTS}", param="limit")
    async with db.sessions() as session:
        ids = (
            await session.execute(
                select(col(MessageRequest.id))
                .where(
                    col(MessageRequest.billing) == "x402",
                    col(MessageRequest.payer) == payer,
                    col(MessageRequest.network) == network,
                )
                .order_by(col(MessageRequest.seq).desc())
                .limit(limit)
            )
        ).scalars()
        request_ids = list(ids)
    return [await reading.get_request(db, None, request_id) for request_id in request_ids]


@dataclass(frozen=True)
class WalletMessage:
    record: reading.MessageRecord
    in_reply_to: str | None = None


async def wallet_messages(
    db: Database,
    payer: str,
    network: str,
    *,
    direction: str | None = None,
    since: datetime | None = None,
    sender: str | None = None,
    limit: int = 50,
) -> list[WalletMessage]:
    """The wallet's sent messages (`out`) and the replies to them (`in`), newest first."""
    if direction not in (None, "in", "out"):
        raise InvalidInput("`direction` must be `in` or `out`", param="direction")
    if not 1 <= limit <= reading.MAX_PAGE:
        raise InvalidInput(f"`limit` must be from 1 to {reading.MAX_PAGE}", param="limit")
    since = since or datetime(1970, 1, 1, tzinfo=UTC)
    async with db.sessions() as session:
        sent = [
            reading.MessageRecord(message, number)
            for message, number in (
                await session.execute(
                    select(Message, col(Sim.number))
                    .outerjoin(Sim, col(Sim.id) == col(Message.sim_id))
                    .join(MessageRequest, col(MessageRequest.id) == col(Message.request_id))
                    .where(
                        col(MessageRequest.billing) == "x402",
                        col(MessageRequest.payer) == payer,
                        col(MessageRequest.network) == network,
                        col(Message.direction) == "out",
                    )
                    .order_by(col(Message.seq).desc())
                    .limit(reading.MAX_PAGE)
                )
            ).all()
        ]
        replies = await _replies(session, sent, since) if direction != "out" and sent else []
    found: list[WalletMessage] = []
    if direction != "in":
        found += [WalletMessage(r) for r in sent if r.message.created_at >= since]
    found += replies
    if sender is not None:
        found = [m for m in found if same_number(m.record.sender or "", sender)]
    found.sort(key=lambda m: m.record.message.seq or 0, reverse=True)
    return found[:limit]


async def _replies(
    session: AsyncSession, sent: list[reading.MessageRecord], since: datetime
) -> list[WalletMessage]:
    """The inbound SMS linked, when they were stored, to one of the wallet's messages (their
    `in_reply_to`, app/services/inbound.replied_to): a later send by another payer to the
    same number on that SIM takes the reply."""
    mine = sorted({r.message.id for r in sent})
    project_id = sent[0].message.project_id
    return [
        WalletMessage(reading.MessageRecord(message, number), in_reply_to=message.in_reply_to)
        for message, number in (
            await session.execute(
                select(Message, col(Sim.number))
                .outerjoin(Sim, col(Sim.id) == col(Message.sim_id))
                .where(
                    col(Message.project_id) == project_id,
                    col(Message.direction) == "in",
                    col(Message.in_reply_to).in_(mine),
                    col(Message.created_at) >= since,
                )
                .order_by(col(Message.seq).desc())
                .limit(reading.MAX_PAGE)
            )
        ).all()
    ]
