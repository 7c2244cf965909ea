"""A project's overview (with its live panel), messages, sending, and credits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import segno
from litestar import Request, Response, get, post

from app.api.auth import request_now
from app.api.controllers.messages import parse_drafts, parse_options
from app.api.errors import status_for
from app.dashboard.forms import field, signed_form
from app.dashboard.render import html, redirect
from app.dashboard.session import Viewer, viewer
from app.db.engine import Database
from app.db.models import Device, Sim
from app.domain.errors import Forbidden, SimwireError
from app.hub.hub import Hub
from app.services import credits, devices, reading, sending
from app.services.ids import utcnow
from app.services.reading import MessageFilter
from app.services.x402_runtime import PaymentRuntime
from app.settings import Settings

RECENT = 10
PAGE = 50
DIRECTIONS = ("out", "in")


@dataclass(frozen=True)
class PhoneRow:
    device: Device
    sims: list[Sim]
    online: bool
    connected_here: bool


async def phone_rows(db: Database, settings: Settings, hub: Hub, project_id: str) -> list[PhoneRow]:
    """The project's phones with their SIMs: online by the last time any instance saw them,
    and whether this instance holds the socket."""
    now = utcnow()
    return [
        PhoneRow(
            device,
            sims,
            devices.device_is_online(device, now, settings.phone_idle_timeout_s),
            device.id in hub.connections,
        )
        for device, sims in await devices.list_devices(db, project_id)
    ]


async def _overview_context(
    found: Viewer, db: Database, settings: Settings, hub: Hub, now: datetime
) -> dict[str, Any]:
    """The overview's figures at `now` (the request's clock): the spend windows end there."""
    auth = found.require("messages.read")
    stats = await reading.project_stats(db, auth.project_id, now)
    spend_24h, spend_7d = await credits.spend_since(
        db, auth.project_id, now - timedelta(hours=24), now - timedelta(days=7)
    )
    ledger = await credits.project_ledger(db, auth.project_id, limit=1)
    outbound = await reading.list_messages(
        db, auth.project_id, MessageFilter(direction="out"), limit=RECENT
    )
    inbound = await reading.list_messages(
        db, auth.project_id, MessageFilter(direction="in"), limit=RECENT
    )
    return {
        "stats": stats,
        "spend_24h_atomic": spend_24h,
        "spend_7d_atomic": spend_7d,
        "balance_atomic": ledger.balance_atomic,
        "phones": await phone_rows(db, settings, hub, auth.project_id),
        "outbound": outbound.records,
        "inbound": inbound.records,
        "refreshed_at": utcnow(),
    }


@get("/p/{project_id:str}")
async def overview(
    request: Request[Any, Any, Any], db: Database, settings: Settings, hub: Hub, project_id: str
) -> Response[str]:
    found = await viewer(request, project_id)
    context = await _overview_context(found, db, settings, hub, request_now(request))
    return html(request, "overview.html", viewer=found, **context)


@get("/p/{project_id:str}/live")
async def overview_live(
    request: Request[Any, Any, Any], db: Database, settings: Settings, hub: Hub, project_id: str
) -> Response[str]:
    """The overview's live panel alone, which the page fetches every 2 seconds."""
    found = await viewer(request, project_id)
    context = await _overview_context(found, db, settings, hub, request_now(request))
    return html(request, "_overview_live.html", viewer=found, **context)


def _filters(
    direction: str | None, status: str | None, to: str | None, tag: str | None
) -> MessageFilter:
    return MessageFilter(
        direction=direction if direction in DIRECTIONS else None,
        statuses=reading.parse_statuses(status) if status else (),
        to=to.strip() or None if to else None,
        tag=tag.strip() or None if tag else None,
    )


@get("/p/{project_id:str}/messages")
async def messages_page(
    request: Request[Any, Any, Any],
    db: Database,
    project_id: str,
    direction: str | None = None,
    status: str | None = None,
    to: str | None = None,
    tag: str | None = None,
    cursor: str | None = None,
) -> Response[str]:
    found = await viewer(request, project_id)
    auth = found.require("messages.read")
    chosen = {
        "direction": direction or "",
        "status": status or "",
        "to": to or "",
        "tag": tag or "",
    }
    try:
        page = await reading.list_messages(
            db, auth.project_id, _filters(direction, status, to, tag), PAGE, cursor or None
        )
    except SimwireError as exc:
        return html(
            request,
            "messages.html",
            viewer=found,
            status_code=status_for(exc),
            error=exc.message,
            records=[],
            next_cursor=None,
            chosen=chosen,
            statuses=sorted(reading.LISTABLE_STATUSES),
        )
    return html(
        request,
        "messages.html",
        viewer=found,
        records=page.records,
        next_cursor=page.next_cursor,
        chosen=chosen,
        statuses=sorted(reading.LISTABLE_STATUSES),
    )


@get("/p/{project_id:str}/messages/{message_id:str}")
async def message_page(
    request: Request[Any, Any, Any], db: Database, project_id: str, message_id: str
) -> Response[str]:
    found = await viewer(request, project_id)
    auth = found.require("messages.read")
    record = await reading.get_message(db, auth.project_id, message_id)
    replies = []
    if record.message.direction == "out":
        replies = (
            await reading.list_messages(
                db, auth.project_id, MessageFilter(in_reply_to=record.message.id), limit=20
            )
        ).records
    return html(request, "message.html", viewer=found, record=record, replies=replies)


@get("/p/{project_id:str}/messages/{message_id:str}/live")
async def message_live(
    request: Request[Any, Any, Any], db: Database, project_id: str, message_id: str
) -> Response[str]:
    """A message's status line alone, polled by its page while the message is on its way."""
    found = await viewer(request, project_id)
    auth = found.require("messages.read")
    record = await reading.get_message(db, auth.project_id, message_id)
    return html(request, "_message_status.html", viewer=found, record=record)


def _require_sender(found: Viewer) -> None:
    """Sending from the dashboard is for the project's owners and admins (who could make a
    sending key anyway); members only read."""
    if not found.manages:
        raise Forbidden("only the organization's owners and admins send from the dashboard")


@get("/p/{project_id:str}/send")
async def send_page(request: Request[Any, Any, Any], project_id: str) -> Response[str]:
    found = await viewer(request, project_id)
    return html(request, "send.html", viewer=found)


@post("/p/{project_id:str}/send")
async def send(
    request: Request[Any, Any, Any], db: Database, settings: Settings, hub: Hub, project_id: str
) -> Response[str]:
    found = await viewer(request, project_id)
    form = await signed_form(request, found)
    recipients = [
        to.strip() for to in field(form, "to", 20_000).replace("\n", ",").split(",") if to.strip()
    ]
    payload: dict[str, Any] = {"to": recipients, "message": form.get("message") or ""}
    for optional in ("tag", "sim"):
        if field(form, optional):
            payload[optional] = field(form, optional)
    try:
        _require_sender(found)
        assert found.auth is not None
        drafts = parse_drafts(payload)
        options = parse_options(payload, None)
        body = await sending.send_with_credits(
            db,
            hub,
            settings,
            found.auth.project_id,
            drafts,
            options,
            sending.request_fingerprint(payload),
        )
    except SimwireError as exc:
        return html(
            request,
            "send.html",
            viewer=found,
            status_code=status_for(exc),
            error=exc.message,
            details=exc.details,
            to=field(form, "to", 20_000),
            message=form.get("message") or "",
            tag=field(form, "tag"),
            sim=field(form, "sim"),
        )
    messages = body.get("messages") or []
    if len(messages) == 1:
        return redirect(request, f"/dashboard/p/{project_id}/messages/{messages[0]['id']}")
    return redirect(request, f"/dashboard/p/{project_id}/messages?direction=out")


@get("/p/{project_id:str}/credits")
async def credits_page(
    request: Request[Any, Any, Any],
    db: Database,
    settings: Settings,
    payments: PaymentRuntime,
    project_id: str,
    before: int | None = None,
) -> Response[str]:
    found = await viewer(request, project_id)
    auth = found.require("credits.read")
    ledger = await credits.project_ledger(db, auth.project_id, limit=PAGE, before_seq=before)
    topup: dict[str, Any] | None = None
    if payments.enabled and settings.pay_to:
        topup = {
            "pay_to": settings.pay_to,
            "network": settings.chain_network or f"eip155:{settings.chain_id}",
            "asset": settings.usdc_address,
            "qr": segno.make(settings.pay_to, error="m").png_data_uri(scale=5),
        }
    return html(request, "credits.html", viewer=found, ledger=ledger, topup=topup)
