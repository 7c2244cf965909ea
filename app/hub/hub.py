"""The hub of one server process: the phones connected here, the protocol loop of each socket,
the dispatcher that hands queued messages to them, and the clock that sweeps stale states.
Instances sharing PostgreSQL wake each other through the channels backend (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from litestar import WebSocket
from litestar.channels import ChannelsPlugin
from litestar.exceptions import WebSocketDisconnect
from litestar.types import ReceiveMessage
from uvicorn.protocols.utils import ClientDisconnected

from app.db.engine import Database
from app.db.models import Device, Sim
from app.domain.errors import Unauthorized
from app.hub import protocol
from app.hub.limits import PhoneLimits
from app.logs import get_logger
from app.services import devices, outbound
from app.services.inbound import ReceivedSms, store_inbound
from app.settings import Settings

log = get_logger("simwire.hub")

# What sending to a socket the phone already closed raises (Litestar's, then the server's).
_GONE = (WebSocketDisconnect, ClientDisconnected)

DISPATCH_CHANNEL = "simwire_dispatch"
DEVICE_CHANNEL = "simwire_devices"
CLAIM_BATCH = 5
LAST_SEEN_WRITE_INTERVAL_S = 5.0
# Frames a socket's reader may take off the socket ahead of their handling.
READ_AHEAD_FRAMES = 256


def _frame_data(event: ReceiveMessage) -> str | bytes:
    """The text or bytes a `websocket.receive` event carries; empty for any other event."""
    if event["type"] == "websocket.receive":
        return event.get("text") or event.get("bytes") or b""
    return b""


@dataclass(frozen=True)
class _SocketEnded:
    """The last item of a socket's inbox: the phone is gone (`error`: why, if it failed)."""

    error: Exception | None = None


_Inboxed = protocol.PhoneFrame | protocol.FrameError | _SocketEnded


@dataclass(eq=False)
class PhoneConnection:
    device: Device
    socket: WebSocket[Any, Any, Any]
    sims: list[Sim] = field(default_factory=list)
    ready: bool = False
    rotation: int = 0
    last_seen_written: float = 0.0
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, text: str) -> None:
        async with self.send_lock:
            await self.socket.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.socket.close(code=code, reason=reason)


class Hub:
    def __init__(self, db: Database, settings: Settings, channels: ChannelsPlugin) -> None:
        self.db = db
        self.settings = settings
        self.channels = channels
        self.instance_id = settings.instance_id or f"inst_{secrets.token_hex(6)}"
        self.connections: dict[str, PhoneConnection] = {}
        self.limits = outbound.RateLimits(
            parts_per_minute=settings.sim_parts_per_minute,
            parts_per_hour=settings.sim_parts_per_hour,
            parts_per_day=settings.sim_parts_per_day,
            device_max_in_flight=settings.device_max_in_flight,
        )
        self.phone_limits = PhoneLimits(settings)
        self._dirty: set[str] = set()
        # Commands whose `accepted` has arrived on a socket here but is not handled yet: the
        # ack-timeout sweep must not take them back.
        self.accepts_in_hand: set[str] = set()
        self._wake = asyncio.Event()
        self._rotation: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="hub-dispatch"),
            asyncio.create_task(self._sweep_loop(), name="hub-sweep"),
            asyncio.create_task(self._listen_loop(), name="hub-listen"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for connection in list(self.connections.values()):
            await connection.close(1012, "server restarting")

    # Waking ------------------------------------------------------------------------------

    def has_eligible_sim(self, project_id: str, sim_selector: str | None) -> bool:
        """Whether a phone connected here holds a SIM that can take the project's message now
        (the one `sim_selector` names, else any unlocked one)."""
        for connection in self.connections.values():
            if connection.ready and connection.device.project_id == project_id:
                for sim in connection.sims:
                    if outbound.sim_matches(sim_selector, sim) if sim_selector else not sim.locked:
                        return True
        return False

    def wake_local(self, project_id: str) -> None:
        self._dirty.add(project_id)
        self._wake.set()

    async def notify_queued(self, project_id: str) -> None:
        """Called after a commit that queued messages: wakes this instance and every other."""
        self.wake_local(project_id)
        self._publish({"project_id": project_id}, DISPATCH_CHANNEL)

    async def disconnect_device(self, device_id: str) -> None:
        """Closes a revoked device's socket wherever it is connected."""
        await self._close_local(device_id)
        self._publish({"revoked": device_id}, DEVICE_CHANNEL)

    def _publish(self, payload: dict[str, str], channel: str) -> None:
        # Before start (e.g. an app used without its lifespan) there is no one to tell; other
        # instances still find queued work on their next sweep.
        if self._tasks:
            self.channels.publish(json.dumps(payload), channel)

    async def _close_local(self, device_id: str) -> None:
        connection = self.connections.get(device_id)
        if connection is not None:
            await connection.close(protocol.CLOSE_REVOKED, "device revoked")

    async def _listen_loop(self) -> None:
        subscriber = await self.channels.subscribe([DISPATCH_CHANNEL, DEVICE_CHANNEL])
        try:
            async for event in subscriber.iter_events():
                try:
                    payload = json.loads(event)
                except ValueError:
                    continue
                if "project_id" in payload:
                    self.wake_local(str(payload["project_id"]))
                elif "revoked" in payload:
                    await self._close_local(str(payload["revoked"]))
        finally:
            with contextlib.suppress(Exception):
                await self.channels.unsubscribe(subscriber)

    # Dispatching -------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            projects, self._dirty = self._dirty, set()
            for project_id in projects:
                try:
                    await self._dispatch_project(project_id)
                except Exception as exc:  # keep dispatching other projects; the sweep retries
                    log.error("dispatch_failed", project_id=project_id, error=repr(exc))

    async def _dispatch_project(self, project_id: str) -> None:
        if not any(c.device.project_id == project_id for c in self.connections.values()):
            return
        if not await outbound.has_queued(self.db, project_id):
            return
        while True:
            connections = [
                c
                for c in self.connections.values()
                if c.ready and c.device.project_id == project_id and c.sims
            ]
            if not connections:
                return
            # Each round starts one phone further on, so phones take turns being first.
            start = self._rotation.get(project_id, 0)
            ordered = (
                connections[start % len(connections) :] + connections[: start % len(connections)]
            )
            progressed = False
            for connection in ordered:
                claimed = await outbound.claim_for_device(
                    self.db,
                    project_id,
                    connection.device.id,
                    connection.sims,
                    self.limits,
                    CLAIM_BATCH,
                    rotation=connection.rotation,
                )
                connection.rotation += len(claimed)
                for message, sim in claimed:
                    progressed = True
                    try:
                        await connection.send(
                            protocol.send_sms_frame(
                                message.id,
                                message.to_number,
                                message.body,
                                sim.number,
                                sim.slot,
                                message.expires_at,
                            )
                        )
                    except Exception:
                        # The socket is gone; its disconnect returns unaccepted messages.
                        break
            if not progressed:
                return
            self._rotation[project_id] = start + 1

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                result = await outbound.sweep(
                    self.db,
                    self.settings.ack_timeout_s,
                    self.settings.result_timeout_s,
                    instance_id=self.instance_id,
                    accepts_in_hand=frozenset(self.accepts_in_hand),
                )
            except Exception as exc:
                log.error("sweep_failed", error=repr(exc))
                continue
            for project_id in result.requeued_projects | {
                c.device.project_id for c in self.connections.values()
            }:
                self.wake_local(project_id)

    # One phone socket --------------------------------------------------------------------

    async def serve(self, socket: WebSocket[Any, Any, Any]) -> None:
        await socket.accept()
        device = await self._authenticate(socket)
        if device is None:
            return
        connection = PhoneConnection(device=device, socket=socket)
        previous = self.connections.get(device.id)
        self.connections[device.id] = connection
        if previous is not None:
            await previous.close(protocol.CLOSE_REPLACED, "replaced by a newer connection")
        await devices.device_connected(self.db, device.id, self.instance_id)
        await connection.send(
            protocol.frame(
                "connected",
                project_id=device.project_id,
                device_id=device.id,
                limits={
                    "parts_per_minute": self.limits.parts_per_minute,
                    "parts_per_hour": self.limits.parts_per_hour,
                    "parts_per_day": self.limits.parts_per_day,
                    "max_in_flight": self.limits.device_max_in_flight,
                    "max_frame_bytes": self.settings.phone_max_frame_bytes,
                    "ping_interval_s": self.settings.phone_ping_interval_s,
                },
            )
        )
        log.info("phone_connected", device_id=device.id, project_id=device.project_id)
        pinger = asyncio.create_task(self._ping(connection))
        try:
            await self._receive_loop(connection)
        except _GONE:
            pass  # the phone went away while we were answering it: an ordinary disconnect
        except Exception as exc:
            log.error("phone_socket_failed", device_id=device.id, error=repr(exc), exc_info=exc)
            await connection.close(1011, "server error")
        finally:
            pinger.cancel()
            if self.connections.get(device.id) is connection:
                del self.connections[device.id]
                requeued = await devices.device_disconnected(self.db, device.id, self.instance_id)
                if requeued:
                    await self.notify_queued(device.project_id)
            log.info("phone_disconnected", device_id=device.id)

    async def _authenticate(self, socket: WebSocket[Any, Any, Any]) -> Device | None:
        token = socket.query_params.get("token")
        if not token:
            try:
                first = await asyncio.wait_for(socket.receive(), timeout=5)
                auth = protocol.decode_frame(_frame_data(first))
                token = auth.token if isinstance(auth, protocol.Auth) else None
            except (TimeoutError, protocol.FrameError):
                token = None
            if not token:
                await socket.close(protocol.CLOSE_AUTH_TIMEOUT, "send ?token= or an auth frame")
                return None
        try:
            return await devices.authenticate_device(self.db, token)
        except devices.DeviceRevoked:
            await socket.close(protocol.CLOSE_REVOKED, "device revoked")
        except Unauthorized:
            await socket.close(protocol.CLOSE_INVALID_TOKEN, "invalid device token")
        return None

    async def _ping(self, connection: PhoneConnection) -> None:
        while True:
            await asyncio.sleep(self.settings.phone_ping_interval_s)
            try:
                await connection.send(protocol.frame("ping"))
            except Exception:
                return

    async def _receive_loop(self, connection: PhoneConnection) -> None:
        """Handles the socket's frames in order while a reader takes them off the socket as
        they arrive, so an `accepted` counts from its arrival: a command whose acceptance has
        arrived is never sent back to the queue as unaccepted, however long the frames before
        it take to store."""
        inbox: asyncio.Queue[_Inboxed] = asyncio.Queue(READ_AHEAD_FRAMES)
        reader = asyncio.create_task(self._read_frames(connection, inbox))
        try:
            while not isinstance(item := await inbox.get(), _SocketEnded):
                try:
                    if isinstance(item, protocol.FrameError):
                        raise item
                    await self._handle(connection, item)
                except protocol.FrameError as exc:
                    await connection.send(exc.as_frame())
                finally:
                    if isinstance(item, protocol.Accepted):
                        self.accepts_in_hand.discard(item.id)
                await self._note_seen(connection, None)
            if item.error is not None:
                raise item.error
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read_frames(
        self, connection: PhoneConnection, inbox: asyncio.Queue[_Inboxed]
    ) -> None:
        """The socket's reader: decodes each frame as it arrives and notes acceptances in hand;
        ends the inbox with `_SocketEnded` (closed, idle, or the error that ended it)."""
        ended = _SocketEnded()
        try:
            while True:
                try:
                    message = await asyncio.wait_for(
                        connection.socket.receive(), timeout=self.settings.phone_idle_timeout_s
                    )
                except TimeoutError:
                    await connection.close(protocol.CLOSE_IDLE, "no frames within the idle timeout")
                    break
                if message["type"] == "websocket.disconnect":
                    break
                await self.phone_limits.frame(connection.device.id)
                try:
                    parsed = protocol.decode_frame(_frame_data(message))
                except protocol.FrameError as exc:
                    await inbox.put(exc)
                    continue
                if isinstance(parsed, protocol.Accepted):
                    self.accepts_in_hand.add(parsed.id)
                await inbox.put(parsed)
        except Exception as exc:
            ended = _SocketEnded(exc)
        await inbox.put(ended)

    async def _note_seen(
        self, connection: PhoneConnection, heartbeat: dict[str, Any] | None
    ) -> None:
        now = time.monotonic()
        if heartbeat is None and now - connection.last_seen_written < LAST_SEEN_WRITE_INTERVAL_S:
            return
        connection.last_seen_written = now
        await devices.device_seen(self.db, connection.device.id, heartbeat)

    async def _handle(self, connection: PhoneConnection, parsed: protocol.PhoneFrame) -> None:
        device = connection.device
        if isinstance(parsed, protocol.Hello):
            info = {
                "model": parsed.device.model if parsed.device else None,
                "os": parsed.device.os if parsed.device else None,
                "app_version": parsed.device.app_version if parsed.device else None,
            }
            await devices.device_connected(self.db, device.id, self.instance_id, info)
            await self._set_sims(connection, parsed.sims)
        elif isinstance(parsed, protocol.Sims):
            await self._set_sims(connection, parsed.sims)
        elif isinstance(parsed, protocol.Inbound):
            sms = parsed.message
            await self.phone_limits.inbound_sms(device.id)
            await store_inbound(
                self.db,
                device,
                ReceivedSms(
                    phone_message_id=sms.id,
                    sender=sms.address,
                    body=sms.body,
                    device_time=protocol.ms_to_datetime(sms.date),
                    sim_slot=sms.sim_slot,
                ),
            )
            await connection.send(protocol.frame("inbound_ack", id=sms.id))
        elif isinstance(parsed, protocol.Accepted):
            outcome = await outbound.mark_accepted(self.db, device.project_id, device.id, parsed.id)
            if outcome.stored:
                await connection.send(protocol.frame("accept_ack", id=parsed.id))
            else:
                await connection.send(
                    protocol.frame(
                        "error",
                        code="stale_command",
                        message=f"{parsed.id} is held by another phone or finished: do not send it",
                        id=parsed.id,
                    )
                )
        elif isinstance(parsed, protocol.SendResult):
            outcome = await outbound.record_send_result(
                self.db, device.project_id, device.id, parsed.id, parsed.success, parsed.error
            )
            await self._ack_result(connection, parsed.id, "send_result", outcome.stored)
            self.wake_local(device.project_id)  # a slot in flight is free again
        elif isinstance(parsed, protocol.DeliveryReport):
            outcome = await outbound.record_delivery(
                self.db,
                device.project_id,
                device.id,
                parsed.id,
                parsed.delivered,
                protocol.ms_to_datetime(parsed.at),
            )
            await self._ack_result(connection, parsed.id, "delivery_report", outcome.stored)
        elif isinstance(parsed, protocol.Heartbeat):
            await self._note_seen(
                connection,
                {"battery": parsed.battery, "charging": parsed.charging, "signal": parsed.signal},
            )
        elif isinstance(parsed, protocol.Auth):
            raise protocol.FrameError("already_authenticated", "this socket is authenticated")

    async def _ack_result(
        self, connection: PhoneConnection, message_id: str, kind: str, stored: bool
    ) -> None:
        if not stored:  # nothing to record, but acknowledge so the phone stops repeating it
            await connection.send(
                protocol.frame(
                    "error",
                    code="unknown_message",
                    message=f"{message_id} is not this device's",
                    id=message_id,
                )
            )
        await connection.send(protocol.frame("result_ack", id=message_id, kind=kind))

    async def _set_sims(self, connection: PhoneConnection, sims: list[protocol.SimReport]) -> None:
        connection.sims = await devices.report_sims(
            self.db,
            connection.device,
            [devices.ReportedSim(s.slot, s.number, s.carrier, s.iccid) for s in sims],
        )
        connection.ready = True
        self.wake_local(connection.device.project_id)
