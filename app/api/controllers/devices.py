"""Phones: pairing (token + QR code), inventory, revocation, SIM locks, the phone socket, and
the batch inbound endpoint for phones without a socket."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import segno
from litestar import Controller, Request, delete, get, post
from litestar.di import Provide

from app.api.auth import require_scope
from app.api.openapi import (
    DEVICE_SECURITY,
    KEY_SECURITY,
    body_schema,
    error_responses,
    typed_body,
)
from app.api.schemas import Name
from app.db.engine import Database
from app.db.models import Device, Sim
from app.domain.consent import consent_keyword
from app.domain.errors import InvalidInput, RateLimited, Unauthorized
from app.hub.hub import Hub
from app.hub.protocol import InboundSms, ms_to_datetime
from app.services import devices
from app.services.ids import utcnow
from app.services.inbound import ReceivedSms, store_inbound
from app.services.projects import AuthContext
from app.services.views import DeviceOut, SimOut, device_fields, sim_out
from app.settings import Settings


class PairDeviceIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name = ""
    model: Name | None = None
    """The phone's model, until its `hello` says otherwise."""
    os_version: Name | None = None
    """Its operating system and version (stored as `os`)."""


class PairedDeviceOut(DeviceOut):
    token: str
    """Shown this once; only its hash is stored."""
    ws_url: str
    pairing_qr: str
    """PNG data URL of a QR code holding {"ws_url", "token"}."""


class DeviceList(msgspec.Struct):
    data: list[DeviceOut]
    count: int


class SimInventoryOut(msgspec.Struct):
    online_devices: int
    live_sims: list[SimOut]
    known_sims: list[SimOut]


class InboundBatchIn(msgspec.Struct):
    messages: list[InboundSms]


class InboundBatchOut(msgspec.Struct):
    acked: list[str]
    stored: int


def device_out(device: Device, sims: list[Sim], settings: Settings) -> dict[str, Any]:
    online = devices.device_is_online(device, utcnow(), settings.phone_idle_timeout_s)
    return device_fields(device, sims, online)


def phone_socket_url(request: Request[Any, Any, Any], settings: Settings) -> str:
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/v1/phone/ws"


class DeviceController(Controller):
    path = "/v1/devices"
    tags = ["devices"]
    security = KEY_SECURITY
    dependencies = {"auth": Provide(require_scope("devices.manage"))}

    @post(
        "/",
        summary="Pair a phone: its token (shown once), socket URL and a pairing QR code",
        operation_class=typed_body(body_schema(PairDeviceIn)),
        responses=error_responses(400, 401, 403, 413),
    )
    async def pair(
        self,
        request: Request[Any, Any, Any],
        db: Database,
        auth: AuthContext,
        settings: Settings,
        data: PairDeviceIn,
    ) -> PairedDeviceOut:
        paired = await devices.pair_device(
            db, auth.project_id, data.name, model=data.model, os=data.os_version
        )
        ws_url = phone_socket_url(request, settings)
        qr = segno.make(json.dumps({"ws_url": ws_url, "token": paired.token}), error="m")
        return PairedDeviceOut(
            **device_out(paired.device, [], settings),
            token=paired.token,
            ws_url=ws_url,
            pairing_qr=qr.png_data_uri(scale=4),
        )

    @get(
        "/",
        summary="This project's phones, online state and SIMs",
        responses=error_responses(401, 403),
    )
    async def list_devices(self, db: Database, auth: AuthContext, settings: Settings) -> DeviceList:
        pairs = await devices.list_devices(db, auth.project_id)
        return DeviceList(
            data=[DeviceOut(**device_out(d, sims, settings)) for d, sims in pairs], count=len(pairs)
        )

    @delete(
        "/{device_id:str}",
        status_code=200,
        summary="Revoke a phone; its socket closes now",
        responses=error_responses(400, 401, 403, 404),
    )
    async def revoke(
        self, db: Database, auth: AuthContext, hub: Hub, settings: Settings, device_id: str
    ) -> DeviceOut:
        device = await devices.revoke_device(db, auth.project_id, device_id)
        await hub.disconnect_device(device.id)
        await hub.notify_queued(auth.project_id)
        return DeviceOut(**device_out(device, [], settings))


@get(
    "/v1/sims",
    tags=["devices"],
    summary="Online phones, their live SIMs, and every SIM ever seen",
    dependencies={"auth": Provide(require_scope("numbers.read"))},
    security=KEY_SECURITY,
    responses=error_responses(401, 403),
)
async def list_sims(db: Database, auth: AuthContext, settings: Settings) -> SimInventoryOut:
    inventory = await devices.sim_inventory(db, auth.project_id, settings.phone_idle_timeout_s)
    return SimInventoryOut(
        online_devices=inventory.online_devices,
        live_sims=[sim_out(s) for s in inventory.live_sims],
        known_sims=[sim_out(s) for s in inventory.known_sims],
    )


@post(
    "/v1/sims/{sim_id:str}/lock",
    tags=["devices"],
    status_code=200,
    summary="Reserve a SIM for messages that name it",
    dependencies={"auth": Provide(require_scope("numbers.lock"))},
    security=KEY_SECURITY,
    responses=error_responses(400, 401, 403, 404),
)
async def lock_sim(db: Database, auth: AuthContext, sim_id: str) -> SimOut:
    return sim_out(await devices.set_sim_lock(db, auth.project_id, sim_id, True))


@delete(
    "/v1/sims/{sim_id:str}/lock",
    tags=["devices"],
    status_code=200,
    summary="Release a SIM lock",
    dependencies={"auth": Provide(require_scope("numbers.lock"))},
    security=KEY_SECURITY,
    responses=error_responses(400, 401, 403, 404),
)
async def unlock_sim(db: Database, auth: AuthContext, hub: Hub, sim_id: str) -> SimOut:
    sim = await devices.set_sim_lock(db, auth.project_id, sim_id, False)
    await hub.notify_queued(auth.project_id)
    return sim_out(sim)


def _device_token(request: Request[Any, Any, Any]) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    token = value.strip() if scheme.lower() == "bearer" else request.query_params.get("token")
    if not token:
        raise Unauthorized("send the device token as 'Authorization: Bearer sw_dev_…'")
    return token


@post(
    "/v1/phone/inbound",
    tags=["phones"],
    status_code=200,
    summary="Inbound SMS in a batch",
    security=DEVICE_SECURITY,
    responses=error_responses(400, 401, 413),
)
async def inbound_batch(
    request: Request[Any, Any, Any],
    db: Database,
    hub: Hub,
    settings: Settings,
    data: InboundBatchIn,
) -> InboundBatchOut:
    """For phones without a socket: store each SMS once; `acked` lists the ids the phone may
    now forget. Past the device's inbound budget only the first ones are stored and acked (the
    phone sends the others again later); with no room at all, 429 `rate_limited`."""
    device = await devices.authenticate_device(db, _device_token(request))
    if len(data.messages) > 500:
        raise InvalidInput("at most 500 messages per batch")
    room, retry_after_s = hub.phone_limits.inbound_allowance(device.id, len(data.messages))
    if data.messages and room == 0:
        raise RateLimited(
            "this phone's inbound budget is used up; send these again later",
            retry_after_s=max(1, math.ceil(retry_after_s)),
        )
    acked, stored = [], 0
    for sms in data.messages[:room]:
        _, new = await store_inbound(
            db,
            device,
            ReceivedSms(sms.id, sms.address, sms.body, ms_to_datetime(sms.date), sms.sim_slot),
            settings,
        )
        stored += int(new)
        if new:
            hub.notify_inbound(device.project_id)
            if settings.opt_out_reply and consent_keyword(sms.body) is not None:
                await hub.notify_queued(device.project_id)  # its automatic reply may wait
        acked.append(sms.id)
    return InboundBatchOut(acked=acked, stored=stored)
