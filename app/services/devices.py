"""Phones: pairing, token authentication, connection state, SIM inventory and SIM locks.

`device.online` and `device.offline` are recorded with the change of the stored connection
state itself: online when a device with no instance holding it connects, offline when the
instance that held it lets go (or it is revoked while connected). A reconnect while the
stored state still says connected (a newer socket replacing an older one, or a phone coming
back before its old instance noticed it gone) is no change and records nothing, so the two
always alternate."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Boolean, Integer, String, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db import bulk
from app.db.engine import Database
from app.db.models import Device, Message, Sim
from app.db.types import UTCDateTime
from app.domain import credentials, statuses
from app.domain.errors import NotFound, Unauthorized
from app.domain.text import storable
from app.services import outbound, outbox
from app.services.ids import new_id, new_secret, utcnow
from app.services.views import as_data, device_out


class DeviceRevoked(Unauthorized):
    code = "device_revoked"


@dataclass(frozen=True)
class PairedDevice:
    device: Device
    token: str = field(repr=False)


@dataclass(frozen=True)
class ReportedSim:
    """A SIM as the phone reports it; stored as given."""

    slot: int
    number: str | None = None
    carrier: str | None = None
    iccid: str | None = None


_DEVICE_INFO_LENGTHS = {"model": 200, "os": 200, "app_version": 64}

# The statements of a phone connecting and reporting its SIMs, built once (Core, no ORM
# objects loaded or flushed): a reconnect storm of thousands of phones runs them all.
_DEVICES = Device.metadata.tables["devices"]
_SIMS = Sim.metadata.tables["sims"]
_DEVICE_BY_TOKEN = select(_DEVICES).where(_DEVICES.c.token_hash == bindparam("token_hash"))


def _kept(name: str, kind: Any, column: Any) -> Any:
    """The new value of `column` if one was given, else the stored one."""
    return func.coalesce(bindparam(name, type_=kind()), column)


_CONNECTION_VALUES = {
    "instance_id": bindparam("holder"),
    "connected_at": bindparam("now", type_=UTCDateTime()),
    "last_seen_at": bindparam("now", type_=UTCDateTime()),
    **{name: _kept(f"info_{name}", String, _DEVICES.c[name]) for name in _DEVICE_INFO_LENGTHS},
}
_CLAIM_CONNECTION = (
    update(_DEVICES)
    .where(
        _DEVICES.c.id == bindparam("device_id"),
        _DEVICES.c.instance_id.is_(None),
        _DEVICES.c.revoked_at.is_(None),
    )
    .values(_CONNECTION_VALUES)
    .returning(_DEVICES.c.id)
)
_TAKE_CONNECTION = (
    update(_DEVICES).where(_DEVICES.c.id == bindparam("device_id")).values(_CONNECTION_VALUES)
)
_DEVICE_WITH_SIMS = (
    select(_DEVICES, _SIMS)
    .select_from(_DEVICES.outerjoin(_SIMS, _SIMS.c.device_id == _DEVICES.c.id))
    .where(_DEVICES.c.id == bindparam("device_id"))
    .order_by(_SIMS.c.slot)
)
_SIMS_OF_DEVICE = select(_SIMS).where(_SIMS.c.device_id == bindparam("device_id"))
_UPDATE_SIM = (
    update(_SIMS)
    .where(_SIMS.c.id == bindparam("sim_id"))
    .values(
        number=bindparam("new_number"),
        carrier=bindparam("new_carrier"),
        iccid=bindparam("new_iccid"),
        live=bindparam("new_live"),
        last_seen_at=bindparam("seen_at", type_=UTCDateTime()),
    )
)


# What was last heard from a phone (None: not reported, the stored value stays).
_SEEN_VALUES = {
    "last_seen_at": _kept("seen_at", UTCDateTime, _DEVICES.c.last_seen_at),
    "battery": _kept("seen_battery", Integer, _DEVICES.c.battery),
    "charging": _kept("seen_charging", Boolean, _DEVICES.c.charging),
    "signal": _kept("seen_signal", Integer, _DEVICES.c.signal),
}
_FLUSH_SEEN = update(_DEVICES).where(_DEVICES.c.id == bindparam("device_id")).values(_SEEN_VALUES)
_LET_GO = (
    update(_DEVICES)
    .where(
        _DEVICES.c.id == bindparam("device_id"),
        _DEVICES.c.instance_id == bindparam("holder"),
    )
    .values({"instance_id": None, **_SEEN_VALUES})
    .returning(_DEVICES.c.id)
)

_SIMS_NOT_LIVE = update(_SIMS).where(_SIMS.c.device_id == bindparam("of_device")).values(live=False)
_MESSAGES = Message.metadata.tables["messages"]
_REQUEUE_UNACCEPTED = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.device_id == bindparam("held_by"),
        _MESSAGES.c.status == statuses.SENDING,
    )
    .values(status=statuses.QUEUED, device_id=None, sim_id=None)
    .returning(_MESSAGES.c.id)
)


def device_is_online(device: Device, now: datetime, idle_timeout_s: float) -> bool:
    return (
        device.instance_id is not None
        and device.revoked_at is None
        and device.last_seen_at is not None
        and device.last_seen_at >= now - timedelta(seconds=idle_timeout_s)
    )


async def pair_device(
    db: Database,
    project_id: str,
    name: str = "",
    *,
    model: str | None = None,
    os: str | None = None,
) -> PairedDevice:
    """A new device and its token (returned once). `model` and `os` are what the pairing
    caller says of the phone; its `hello` updates them."""
    token = new_secret(credentials.DEVICE_TOKEN_PREFIX)
    device = Device(
        id=new_id("dev"),
        project_id=project_id,
        name=name,
        model=model or None,
        os=os or None,
        token_hash=credentials.hash_secret(token),
        token_prefix=credentials.display_prefix(token),
        created_at=utcnow(),
    )
    async with db.transaction() as session:
        session.add(device)
    return PairedDevice(device=device, token=token)


async def authenticate_device(db: Database, token: str) -> Device:
    """The device behind a token; Unauthorized if unknown, DeviceRevoked if revoked."""
    if not credentials.is_device_token(token):
        raise Unauthorized("the device token is malformed")
    token_hash = credentials.hash_secret(token)
    row = await db.run(
        lambda conn: conn.execute(_DEVICE_BY_TOKEN, {"token_hash": token_hash}).one_or_none(),
        read_only=True,
    )
    if row is None or not credentials.secret_matches(token, row.token_hash):
        raise Unauthorized("the device token is not valid")
    if row.revoked_at is not None:
        raise DeviceRevoked("this device was removed from its project")
    return Device(**row._mapping)


async def list_devices(db: Database, project_id: str) -> list[tuple[Device, list[Sim]]]:
    """The project's devices with their SIMs, read in one statement, so a phone going offline
    while it runs is seen either whole or not at all (two reads could straddle that commit)."""
    async with db.sessions() as session:
        rows = (
            await session.execute(
                select(Device, Sim)
                .outerjoin(Sim, col(Sim.device_id) == col(Device.id))
                .where(col(Device.project_id) == project_id, col(Device.revoked_at).is_(None))
                .order_by(col(Device.seq), col(Sim.slot))
            )
        ).all()
    listed: dict[str, tuple[Device, list[Sim]]] = {}
    for device, sim in rows:
        _, sims = listed.setdefault(device.id, (device, []))
        if sim is not None:
            sims.append(sim)
    return list(listed.values())


async def revoke_device(db: Database, project_id: str, device_id: str) -> Device:
    """Revokes the token at once; the caller closes the socket. Messages the phone had not
    yet accepted go back to the queue."""
    now = utcnow()
    async with db.transaction() as session:
        device = (
            await session.execute(
                select(Device).where(
                    col(Device.id) == device_id, col(Device.project_id) == project_id
                )
            )
        ).scalar_one_or_none()
        if device is None or device.revoked_at is not None:
            raise NotFound(f"device {device_id!r} not found")
        was_connected = device.instance_id is not None
        device.revoked_at = now
        device.instance_id = None
        await session.execute(update(Sim).where(col(Sim.device_id) == device_id).values(live=False))
        await _requeue_unaccepted(session, device_id)
        if was_connected:
            await _record_device_event(session, device_id, "device.offline", online=False)
    return device


async def device_connected(
    db: Database, device_id: str, instance_id: str, info: dict[str, Any] | None = None
) -> None:
    await db.run_unit(lambda session: note_connected(session, device_id, instance_id, info))


async def note_connected(
    session: AsyncSession, device_id: str, instance_id: str, info: dict[str, Any] | None = None
) -> None:
    """In the caller's transaction: the device is connected to `instance_id` (and seen now),
    with what it says of itself (`info`: model, os, app_version); `device.online` if no
    instance held it."""
    values: dict[str, Any] = {"device_id": device_id, "holder": instance_id, "now": utcnow()}
    # Descriptive only, so stored cut to the column's size with NUL replaced, never refused.
    for name, max_length in _DEVICE_INFO_LENGTHS.items():
        given = info.get(name) if info else None
        values[f"info_{name}"] = storable(given)[:max_length] if isinstance(given, str) else None
    # Conditional, so of two instances racing to connect it only one sees it come online.
    came_online = (await session.execute(_CLAIM_CONNECTION, values)).first() is not None
    if came_online:
        await _record_device_event(session, device_id, "device.online", online=True)
    else:
        await session.execute(_TAKE_CONNECTION, values)


async def _record_device_event(
    session: AsyncSession, device_id: str, type: str, *, online: bool
) -> None:
    """The device as `GET /v1/devices` lists it, read in this transaction (one statement).
    `online` is what the change just made it (just seen, or let go)."""
    rows = (await session.execute(_DEVICE_WITH_SIMS, {"device_id": device_id})).all()
    if not rows:
        return
    width = len(_DEVICES.c)
    device = Device(**dict(zip(_DEVICES.c.keys(), rows[0][:width], strict=True)))
    sims = [
        Sim(**dict(zip(_SIMS.c.keys(), row[width:], strict=True)))
        for row in rows
        if row[width] is not None
    ]
    data = as_data(device_out(device, sims, online))
    await outbox.insert_events(session, [outbox.event_row(device.project_id, type, data)])


async def report_sims(db: Database, device: Device, sims: list[ReportedSim]) -> list[Sim]:
    """Replaces the device's live SIM set with what it reports; SIMs keep their ids by slot."""
    async with db.transaction() as session:
        return await replace_sims(session, device.id, device.project_id, sims)


async def replace_sims(
    session: AsyncSession, device_id: str, project_id: str, sims: list[ReportedSim]
) -> list[Sim]:
    """`report_sims` in the caller's transaction: SIMs of known slots are updated, new slots
    inserted, slots no longer reported made not live; the reported ones are returned by slot."""
    now = utcnow()
    known = {
        row.slot: Sim(**row._mapping)
        for row in await session.execute(_SIMS_OF_DEVICE, {"device_id": device_id})
    }
    reported: dict[int, Sim] = {}
    inserts: list[dict[str, Any]] = []
    for given in sims:
        sim = known.get(given.slot)
        if sim is None:
            sim = Sim(
                id=new_id("sim"),
                project_id=project_id,
                device_id=device_id,
                slot=given.slot,
                created_at=now,
            )
        sim.number = given.number or None
        sim.carrier = given.carrier
        sim.iccid = given.iccid
        sim.live = True
        sim.last_seen_at = now
        if given.slot not in known:
            inserts.append(sim.model_dump(exclude={"seq"}))
        reported[given.slot] = sim
    updates = [
        {
            "sim_id": sim.id,
            "new_number": sim.number,
            "new_carrier": sim.carrier,
            "new_iccid": sim.iccid,
            "new_live": slot in reported,
            "seen_at": now if slot in reported else sim.last_seen_at,
        }
        for slot, sim in known.items()
        if slot in reported or sim.live
    ]
    if updates:
        await session.execute(_UPDATE_SIM, updates)
    if inserts:
        await session.execute(insert(_SIMS), inserts)
    return [reported[slot] for slot in sorted(reported)]


async def device_seen(
    db: Database, device_id: str, heartbeat: dict[str, Any] | None = None
) -> None:
    values: dict[str, Any] = {"last_seen_at": utcnow()}
    if heartbeat:
        for name, kind in (("battery", int), ("charging", bool), ("signal", int)):
            value = heartbeat.get(name)
            if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
                values[name] = value
    async with db.transaction() as session:
        await session.execute(update(Device).where(col(Device.id) == device_id).values(**values))


@dataclass(frozen=True, slots=True)
class SeenState:
    """What the hub heard from a connected phone since it last wrote it down: when (`seen_at`)
    and its last battery, charging and signal (None: not reported, the stored value stays)."""

    device_id: str
    seen_at: datetime
    battery: int | None = None
    charging: bool | None = None
    signal: int | None = None


async def flush_seen(db: Database, states: list[SeenState]) -> None:
    """Writes many phones' `last_seen_at`, battery, charging and signal in one statement."""
    rows = [
        {
            "device_id": state.device_id,
            "seen_at": state.seen_at,
            "seen_battery": state.battery,
            "seen_charging": state.charging,
            "seen_signal": state.signal,
        }
        for state in states
    ]
    if rows:
        # One row per connected phone (10,000 in one process): beside the loop.
        await db.run(lambda conn: bulk.execute_many(conn, _FLUSH_SEEN, rows), beside_loop=True)


async def device_disconnected(
    db: Database, device_id: str, instance_id: str, seen: SeenState | None = None
) -> list[str]:
    """Marks the device offline (if this instance still holds it), with what was last heard
    from it (`seen`) and `device.offline`, and returns to the queue what it had not accepted.
    Returns the ids of requeued messages."""
    values: dict[str, Any] = {
        "device_id": device_id,
        "holder": instance_id,
        "seen_at": seen.seen_at if seen is not None else None,
        "seen_battery": seen.battery if seen is not None else None,
        "seen_charging": seen.charging if seen is not None else None,
        "seen_signal": seen.signal if seen is not None else None,
    }

    async def let_go(session: AsyncSession) -> list[str]:
        if (await session.execute(_LET_GO, values)).first() is None:
            return []  # it already reconnected elsewhere
        await session.execute(_SIMS_NOT_LIVE, {"of_device": device_id})
        requeued = await _requeue_unaccepted(session, device_id)
        await _record_device_event(session, device_id, "device.offline", online=False)
        return requeued

    return await db.run_unit(let_go)


async def _requeue_unaccepted(session: AsyncSession, device_id: str) -> list[str]:
    result = await session.execute(_REQUEUE_UNACCEPTED, {"held_by": device_id})
    return list(result.scalars())


@dataclass(frozen=True)
class SimInventory:
    online_devices: int
    live_sims: list[Sim]
    known_sims: list[Sim]


async def sim_inventory(db: Database, project_id: str, idle_timeout_s: float) -> SimInventory:
    now = utcnow()
    pairs = await list_devices(db, project_id)
    online = {device.id for device, _ in pairs if device_is_online(device, now, idle_timeout_s)}
    known = [sim for _, sims in pairs for sim in sims]
    live = [sim for sim in known if sim.live and sim.device_id in online]
    return SimInventory(online_devices=len(online), live_sims=live, known_sims=known)


async def set_sim_lock(db: Database, project_id: str, sim_id: str, locked: bool) -> Sim:
    async with db.transaction() as session:
        sim = (
            await session.execute(
                select(Sim).where(col(Sim.id) == sim_id, col(Sim.project_id) == project_id)
            )
        ).scalar_one_or_none()
        if sim is None:
            raise NotFound(f"SIM {sim_id!r} not found")
        sim.locked = locked
    return sim


class LocalPhones(Protocol):
    def has_eligible_sim(self, project_id: str, sim_selector: str | None) -> bool: ...


async def phone_warnings(
    db: Database,
    local: LocalPhones,
    project_id: str,
    sim_selector: str | None,
    ttl_s: int,
) -> list[dict[str, str]]:
    """`[no_phone_online]` when no eligible SIM is online for the project, else `[]`. The
    phones connected to this process answer first; the database only when none of them can."""
    if local.has_eligible_sim(project_id, sim_selector):
        return []
    if await eligible_sim_online(db, project_id, sim_selector):
        return []
    return [no_phone_online_warning(ttl_s)]


async def eligible_sim_online(db: Database, project_id: str, sim_selector: str | None) -> bool:
    """Whether a live SIM of the project can take a message now: one it names (`sim_selector`,
    as sending pins it), else any unlocked one. One read, no lock: every quote and send of a
    project whose phones are on another instance (or not connected) asks it."""
    sims = await db.run(
        lambda conn: conn.execute(_LIVE_SIMS_OF_PROJECT, {"project_id": project_id}).all(),
        read_only=True,
    )
    return any(_takes(sim, sim_selector) for sim in sims)


_LIVE_SIMS_OF_PROJECT = select(_SIMS.c.id, _SIMS.c.slot, _SIMS.c.number, _SIMS.c.locked).where(
    _SIMS.c.project_id == bindparam("project_id"), _SIMS.c.live.is_(True)
)


def _takes(sim: Any, sim_selector: str | None) -> bool:
    """`sim`: a row of `_LIVE_SIMS_OF_PROJECT`."""
    if sim_selector is None:
        return not sim.locked
    return outbound.sim_matches(sim_selector, sim)


def no_phone_online_warning(ttl_s: int) -> dict[str, str]:
    """What a 202 or a quote says when no eligible SIM is online: the messages wait."""
    return {
        "code": "no_phone_online",
        "message": (
            "no phone with an eligible SIM is connected to this project right now: the "
            f"messages wait in the queue for one, for up to {ttl_s} s (`ttl_s`), then expire "
            "and are refunded. Pair a phone with POST /v1/devices"
        ),
    }
