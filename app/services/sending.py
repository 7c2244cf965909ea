"""Sending on prepaid credits: screen → quote → charge the whole request → enqueue, in one
transaction; an Idempotency-Key replays the first answer instead of charging again."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from app.db.engine import Database
from app.db.models import Message, MessageRequest
from app.domain.errors import Conflict
from app.services import credits, outbound, quoting
from app.services.ids import new_id, utcnow
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


def request_fingerprint(payload: Any) -> str:
    """What an Idempotency-Key is bound to: the canonical JSON of the request body."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def accepted_response(
    request: MessageRequest, messages: Sequence[Message], charged_atomic: int
) -> dict[str, Any]:
    return {
        "request_id": request.id,
        "status": "processing",
        "segment_count": request.segment_count,
        "charged_atomic": charged_atomic,
        "messages": [
            {
                "id": m.id,
                "to": m.to_number,
                "status": m.status,
                "segments": m.segment_count,
                "price_atomic": m.price_atomic,
            }
            for m in messages
        ],
    }


async def _replay(
    db: Database, project_id: str, key: str, fingerprint: str
) -> dict[str, Any] | None:
    async with db.sessions() as session:
        previous = (
            await session.execute(
                select(MessageRequest).where(
                    col(MessageRequest.project_id) == project_id,
                    col(MessageRequest.idempotency_key) == key,
                )
            )
        ).scalar_one_or_none()
    if previous is None:
        return None
    if previous.request_sha256 != fingerprint:
        raise Conflict(
            "this Idempotency-Key was used with a different request body",
            idempotency_key=key,
        )
    return previous.response


async def send_with_credits(
    db: Database,
    notifier: QueueNotifier,
    settings: Settings,
    project_id: str,
    drafts: Sequence[quoting.Draft],
    options: SendOptions,
    fingerprint: str,
) -> dict[str, Any]:
    """Returns the 202 body. Raises 400/422 errors before anything is charged, and
    InsufficientCredits (nothing charged) when the balance does not cover the whole request."""
    key = options.idempotency_key
    if key:
        replayed = await _replay(db, project_id, key, fingerprint)
        if replayed is not None:
            return replayed
    policy = await quoting.policy_for(db, settings, project_id)
    prepared = quoting.prepare(drafts, policy, options.region, MAX_CREDIT_RECIPIENTS)
    prepared.raise_if_blocked()
    try:
        async with db.transaction() as session:
            request = MessageRequest(
                id=new_id("req"),
                project_id=project_id,
                billing="credits",
                total_atomic=prepared.total_atomic,
                segment_count=prepared.segment_count,
                idempotency_key=key,
                request_sha256=fingerprint if key else None,
                created_at=utcnow(),
            )
            # Charge first: without enough credit nothing else is written.
            if prepared.total_atomic > 0:
                await credits.charge_project(session, project_id, prepared.total_atomic, request.id)
            messages = await outbound.enqueue(
                session,
                project_id,
                [
                    outbound.OutboundItem(
                        to=item.to,
                        body=item.body,
                        encoding=item.plan.encoding,
                        segment_count=item.plan.segment_count,
                        price_atomic=item.price_atomic,
                        tag=item.tag,
                    )
                    for item in prepared.items
                ],
                request_id=request.id,
                sim_selector=options.sim,
                ttl_s=options.ttl_s or settings.message_ttl_s,
            )
            response = accepted_response(request, messages, prepared.total_atomic)
            request.response = response
            session.add(request)  # a racing duplicate Idempotency-Key fails here, at commit
    except IntegrityError:
        # The same Idempotency-Key raced in from another request: answer as it did.
        if key:
            replayed = await _replay(db, project_id, key, fingerprint)
            if replayed is not None:
                return replayed
        raise
    await notifier.notify_queued(project_id)
    return response
