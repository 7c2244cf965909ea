"""What owners and admins manage in a project: phones (pairing, revoking) and SIM locks, API
keys, agents (pending and claimed), and webhooks. Each form checks the same scope the API route
does."""

from __future__ import annotations

import json
from typing import Any

import segno
from litestar import Request, Response, get, post

from app.api.auth import request_now
from app.api.controllers.devices import phone_socket_url
from app.api.errors import status_for
from app.dashboard.forms import field, signed_form, ticked
from app.dashboard.pages_project import phone_rows
from app.dashboard.render import html, redirect
from app.dashboard.session import Viewer, viewer
from app.db.engine import Database
from app.domain import agent_claims, credentials
from app.domain.errors import SimwireError
from app.domain.events import EVENT_TYPES
from app.hub.hub import Hub
from app.services import agent_onboarding, devices, pending_agents, projects, webhooks
from app.settings import Settings
from app.webhooks.delivery import DeliveryWorker

# Phones and SIMs -------------------------------------------------------------------------


async def _phones_page(
    request: Request[Any, Any, Any],
    found: Viewer,
    db: Database,
    settings: Settings,
    hub: Hub,
    status_code: int = 200,
    **context: Any,
) -> Response[str]:
    found.require("numbers.read")
    rows = await phone_rows(db, settings, hub, found.require("numbers.read").project_id)
    return html(
        request, "phones.html", viewer=found, phones=rows, status_code=status_code, **context
    )


@get("/p/{project_id:str}/phones")
async def phones_page(
    request: Request[Any, Any, Any], db: Database, settings: Settings, hub: Hub, project_id: str
) -> Response[str]:
    return await _phones_page(request, await viewer(request, project_id), db, settings, hub)


@post("/p/{project_id:str}/phones")
async def pair_phone(
    request: Request[Any, Any, Any], db: Database, settings: Settings, hub: Hub, project_id: str
) -> Response[str]:
    """Pairs a phone and shows its token and QR code this once; the page then watches the
    phone come online."""
    found = await viewer(request, project_id)
    form = await signed_form(request, found)
    try:
        auth = found.require("devices.manage")
        paired = await devices.pair_device(db, auth.project_id, field(form, "name", 200))
    except SimwireError as exc:
        return await _phones_page(
            request, found, db, settings, hub, status_for(exc), error=exc.message
        )
    ws_url = phone_socket_url(request, settings)
    qr = segno.make(json.dumps({"ws_url": ws_url, "token": paired.token}), error="m")
    return html(
        request,
        "paired.html",
        viewer=found,
        device=paired.device,
        token=paired.token,
        ws_url=ws_url,
        server_url=ws_url.removesuffix("/v1/phone/ws")
        .replace("wss://", "https://", 1)
        .replace("ws://", "http://", 1),
        qr=qr.png_data_uri(scale=5),
    )


@get("/p/{project_id:str}/phones/{device_id:str}/live")
async def phone_live(
    request: Request[Any, Any, Any],
    db: Database,
    settings: Settings,
    hub: Hub,
    project_id: str,
    device_id: str,
) -> Response[str]:
    """One phone's state alone, polled by the pairing page."""
    found = await viewer(request, project_id)
    auth = found.require("numbers.read")
    rows = [
        r for r in await phone_rows(db, settings, hub, auth.project_id) if r.device.id == device_id
    ]
    return html(request, "_phone_state.html", viewer=found, row=rows[0] if rows else None)


@post("/p/{project_id:str}/phones/{device_id:str}/revoke")
async def revoke_phone(
    request: Request[Any, Any, Any],
    db: Database,
    settings: Settings,
    hub: Hub,
    project_id: str,
    device_id: str,
) -> Response[str]:
    found = await viewer(request, project_id)
    await signed_form(request, found)
    try:
        auth = found.require("devices.manage")
        device = await devices.revoke_device(db, auth.project_id, device_id)
        await hub.disconnect_device(device.id)
        await hub.notify_queued(auth.project_id)
    except SimwireError as exc:
        return await _phones_page(
            request, found, db, settings, hub, status_for(exc), error=exc.message
        )
    return redirect(request, f"/dashboard/p/{project_id}/phones")


@post("/p/{project_id:str}/sims/{sim_id:str}/lock")
async def lock_sim(
    request: Request[Any, Any, Any],
    db: Database,
    settings: Settings,
    hub: Hub,
    project_id: str,
    sim_id: str,
) -> Response[str]:
    """Locks the SIM (form field `locked=1`) or releases it (anything else)."""
    found = await viewer(request, project_id)
    form = await signed_form(request, found)
    locking = field(form, "locked") == "1"
    try:
        auth = found.require("numbers.lock")
        await devices.set_sim_lock(db, auth.project_id, sim_id, locking)
        if not locking:
            await hub.notify_queued(auth.project_id)
    except SimwireError as exc:
        return await _phones_page(
            request, found, db, settings, hub, status_for(exc), error=exc.message
        )
    return redirect(request, f"/dashboard/p/{project_id}/phones")


# Keys ------------------------------------------------------------------------------------


async def _keys_page(
    request: Request[Any, Any, Any],
    found: Viewer,
    db: Database,
    status_code: int = 200,
    **context: Any,
) -> Response[str]:
    auth = found.require("keys.manage")
    keys = await projects.list_keys(db, auth.project_id)
    return html(
        request,
        "keys.html",
        viewer=found,
        keys=keys,
        scopes=credentials.SCOPES,
        status_code=status_code,
        **context,
    )


@get("/p/{project_id:str}/keys")
async def keys_page(
    request: Request[Any, Any, Any], db: Database, project_id: str
) -> Response[str]:
    found = await viewer(request, project_id)
    if not found.manages:
        return html(request, "keys.html", viewer=found, keys=None, scopes=credentials.SCOPES)
    return await _keys_page(request, found, db)


@post("/p/{project_id:str}/keys")
async def create_key(
    request: Request[Any, Any, Any], db: Database, settings: Settings, project_id: str
) -> Response[str]:
    found = await viewer(request, project_id)
    form = await signed_form(request, found)
    auth = found.require("keys.manage")
    try:
        issued = await projects.create_key(
            db,
            auth.project_id,
            field(form, "name", 200),
            ticked(form, "scopes") or None,
            settings.key_mode,
        )
    except SimwireError as exc:
        return await _keys_page(request, found, db, status_for(exc), error=exc.message)
    return await _keys_page(request, found, db, 201, issued=issued)


@post("/p/{project_id:str}/keys/{key_id:str}/revoke")
async def revoke_key(
    request: Request[Any, Any, Any], db: Database, project_id: str, key_id: str
) -> Response[str]:
    found = await viewer(request, project_id)
    await signed_form(request, found)
    auth = found.require("keys.manage")
    try:
        await projects.revoke_key(db, auth.project_id, key_id)
    except SimwireError as exc:
        return await _keys_page(request, found, db, status_for(exc), error=exc.message)
    return redirect(request, f"/dashboard/p/{project_id}/keys")


@post("/p/{project_id:str}/keys/{key_id:str}/rotate")
async def rotate_key(
    request: Request[Any, Any, Any], db: Database, settings: Settings, project_id: str, key_id: str
) -> Response[str]:
    found = await viewer(request, project_id)
    await signed_form(request, found)
    auth = found.require("keys.manage")
    try:
        issued = await projects.rotate_key(db, auth.project_id, key_id, settings.key_mode)
    except SimwireError as exc:
        return await _keys_page(request, found, db, status_for(exc), error=exc.message)
    return await _keys_page(request, found, db, 201, issued=issued)


# Agents ----------------------------------------------------------------------------------


@get("/p/{project_id:str}/agents")
async def agents_page(
    request: Request[Any, Any, Any], db: Database, project_id: str, claimed: str | None = None
) -> Response[str]:
    """The agents claimed into the project, and the organization's pending ones (whose claim
    link one of its owners or admins opened: app/services/pending_agents.py)."""
    found = await viewer(request, project_id)
    now = request_now(request)
    agents = pending = None
    if found.manages:
        auth = found.require("keys.manage")
        agents = await agent_onboarding.list_agents(db, auth.project_id)
        organization_id = found.project.project.organization_id if found.project else ""
        pending = await pending_agents.list_pending(db, organization_id, now)
    return html(
        request,
        "agents.html",
        viewer=found,
        agents=agents,
        pending=pending,
        claimed=claimed,
        now=now,
        grantable=agent_claims.DEFAULT_SCOPES + agent_claims.OPTIONAL_SCOPES,
    )


@post("/p/{project_id:str}/agents/{agent_id:str}/revoke")
async def revoke_agent(
    request: Request[Any, Any, Any], db: Database, project_id: str, agent_id: str
) -> Response[str]:
    found = await viewer(request, project_id)
    await signed_form(request, found)
    auth = found.require("keys.manage")
    await agent_onboarding.revoke_agent(db, auth.project_id, agent_id)
    return redirect(request, f"/dashboard/p/{project_id}/agents")


@post("/p/{project_id:str}/agents/{agent_id:str}/scopes")
async def rescope_agent(
    request: Request[Any, Any, Any], db: Database, project_id: str, agent_id: str
) -> Response[str]:
    found = await viewer(request, project_id)
    form = await signed_form(request, found)
    auth = found.require("keys.manage")
    await agent_onboarding.rescope_agent(db, auth.project_id, agent_id, ticked(form, "scopes"))
    return redirect(request, f"/dashboard/p/{project_id}/agents")


# Webhooks --------------------------------------------------------------------------------


async def _webhooks_page(
    request: Request[Any, Any, Any],
    found: Viewer,
    db: Database,
    status_code: int = 200,
    **context: Any,
) -> Response[str]:
    auth = found.require("webhooks.manage")
    return html(
        request,
        "webhooks.html",
        viewer=found,
        hooks=await webhooks.list_webhooks(db, auth.project_id),
        event_types=EVENT_TYPES,
        status_code=status_code,
        **context,
    )


@get("/p/{project_id:str}/webhooks")
async def webhooks_page(
    request: Request[Any, Any, Any], db: Database, project_id: str
) -> Response[str]:
    found = await viewer(request, project_id)
    if not found.manages:
        return html(request, "webhooks.html", viewer=found, hooks=None, event_types=EVENT_TYPES)
    return await _webhooks_page(request, found, db)


@post("/p/{project_id:str}/webhooks")
async def create_webhook(
    request: Request[Any, Any, Any], db: Database, settings: Settings, project_id: str
) -> Response[str]:
    found = await viewer(request, project_id)
    form = await signed_form(request, found)
    auth = found.require("webhooks.manage")
    try:
        issued = await webhooks.create_webhook(
            db,
            settings,
            auth.project_id,
            field(form, "url", 2048),
            ticked(form, "events") or None,
            field(form, "description", 500) or None,
        )
    except SimwireError as exc:
        return await _webhooks_page(request, found, db, status_for(exc), error=exc.message)
    return await _webhooks_page(request, found, db, 201, issued=issued)


@get("/p/{project_id:str}/webhooks/{webhook_id:str}")
async def webhook_page(
    request: Request[Any, Any, Any],
    db: Database,
    project_id: str,
    webhook_id: str,
    cursor: str | None = None,
) -> Response[str]:
    found = await viewer(request, project_id)
    auth = found.require("webhooks.manage")
    hook = await webhooks.get_webhook(db, auth.project_id, webhook_id)
    page = await webhooks.list_deliveries(db, auth.project_id, webhook_id, 50, cursor or None)
    return html(request, "webhook.html", viewer=found, hook=hook, page=page)


@post("/p/{project_id:str}/webhooks/{webhook_id:str}/test")
async def test_webhook(
    request: Request[Any, Any, Any],
    db: Database,
    webhook_worker: DeliveryWorker,
    project_id: str,
    webhook_id: str,
) -> Response[str]:
    found = await viewer(request, project_id)
    await signed_form(request, found)
    auth = found.require("webhooks.manage")
    delivery_id = await webhooks.create_test_delivery(db, auth.project_id, webhook_id)
    await webhook_worker.deliver_now(delivery_id)
    return redirect(request, f"/dashboard/p/{project_id}/webhooks/{webhook_id}")
