"""The hub of one server process: the phones connected here, the protocol loop of each socket,
the writer that stores their reports in group commits, the dispatcher that hands queued
messages to them, and the clocks (pings, idle sockets, last-seen, stale states). Instances
sharing PostgreSQL wake each other through the channels backend (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from litestar.channels import ChannelsPlugin
from litestar.types import ReceiveMessage
from sqlalchemy.ext.asyncio import AsyncSession
from uvicorn.protocols.utils import ClientDisconnected

from app.db.engine import Database
from app.domain import statuses
from app.domain.errors import Unauthorized
from app.faults import crash_point
from app.hub import protocol
from app.hub.inbound_signal import InboundSignal
from app.hub.limits import PhoneLimits
from app.hub.live import ClaimPlan, DeviceRef, LiveSim, PhoneState, longest_span_s
from app.hub.socket import PhoneSocket, SocketGone
from app.hub.ws_protocol import TextHook
from app.logs import get_logger
from app.services import devices, outbound
from app.services.inbound import DeviceSms, ReceivedSms, store_inbound_many
from app.settings import Settings

log = get_logger("simwire.hub")

# What sending to a socket the phone already closed raises (ours, then the server's).
_GONE = (SocketGone, ClientDisconnected)

DISPATCH_CHANNEL = "simwire_dispatch"
DEVICE_CHANNEL = "simwire_devices"
# Frames of one socket taken off it ahead of their commit; past this the socket is read no
# further until the writer catches up (the phone's frames wait in its own socket).
READ_AHEAD_FRAMES = 256
# At most this many frames in one group commit.
MAX_BATCH_FRAMES = 1_000
# `last_seen_at`, battery and signal are written at most this often (and on disconnect).
SEEN_FLUSH_INTERVAL_S = 30.0
# Crash point (app/faults.py): a batch of phone reports (accepted, send_result,
# delivery_report, inbound) is written, not yet committed.
CRASH_BEFORE_REPORTS_COMMIT = "hub_reports_before_commit"

_Frame = (
    protocol.Hello
    | protocol.Sims
    | protocol.Inbound
    | protocol.Accepted
    | protocol.SendResult
    | protocol.DeliveryReport
)


def _frame_data(event: ReceiveMessage) -> str | bytes:
    """The text or bytes a `websocket.receive` event carries; empty for any other event."""
    if event["type"] == "websocket.receive":
        return event.get("text") or event.get("bytes") or b""
    return b""


@dataclass(slots=True, eq=False)
class PhoneConnection(PhoneState):
    """One phone socket and its live state (see app/hub/live.py). Plain values only: no
    database object is held for the life of a connection."""

    socket: Any = None  # a PhoneSocket (app/hub/socket.py)
    heard_at: float = 0.0  # loop time of the last frame
    pinged_at: float = 0.0
    # What to write down at the next last-seen flush (wall clock), and the phone's last state.
    seen_at: float | None = None
    battery: int | None = None
    charging: bool | None = None
    signal: int | None = None
    # Frames handed to the writer and not yet answered; the reader waits on `resume` when full.
    pending: int = 0
    resume: asyncio.Future[None] | None = None

    async def send(self, text: str) -> None:
        # Each frame is written whole by the server's protocol, so sends need no lock.
        await self.socket.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.socket.close(code=code, reason=reason)

    def heartbeat(self, frame: protocol.Heartbeat) -> None:
        if frame.battery is not None:
            self.battery = frame.battery
        if frame.charging is not None:
            self.charging = frame.charging
        if frame.signal is not None:
            self.signal = frame.signal

    def seen_state(self) -> devices.SeenState | None:
        if self.seen_at is None:
            return None
        return devices.SeenState(
            self.device.id,
            datetime.fromtimestamp(self.seen_at, UTC),
            self.battery,
            self.charging,
            self.signal,
        )


class Hub:
    def __init__(self, db: Database, settings: Settings, channels: ChannelsPlugin) -> None:
        self.db = db
        self.settings = settings
        self.channels = channels
        self.instance_id = settings.instance_id or f"inst_{secrets.token_hex(6)}"
        # Marks what this process publishes, so that it skips its own messages (a wake-up of
        # its own after every send batch was a look at the queue); random, not the instance
        # id, so two processes given the same id still hear each other.
        self._sender = secrets.token_hex(8)
        self.connections: dict[str, PhoneConnection] = {}
        # Project id → its phones connected here (device id → connection).
        self._projects: dict[str, dict[str, PhoneConnection]] = {}
        self.limits = outbound.RateLimits(
            parts_per_minute=settings.sim_parts_per_minute,
            parts_per_hour=settings.sim_parts_per_hour,
            parts_per_day=settings.sim_parts_per_day,
            device_max_in_flight=settings.device_max_in_flight,
        )
        self.phone_limits = PhoneLimits(settings)
        self._dirty: set[str] = set()
        # Of those, the projects woken because messages were just queued: their claim pass
        # needs no look first.
        self._freshly_queued: set[str] = set()
        # The projects whose queue may hold messages for this instance's phones: all but those
        # whose last dispatch round here found it empty. A slot freed in flight wakes only
        # these; anything queued later comes with a wake-up of its own, which marks it again.
        self._maybe_queued: set[str] = set()
        # Commands whose `accepted` has arrived on a socket here but is not committed yet: the
        # ack-timeout sweep must not take them back.
        self.accepts_in_hand: set[str] = set()
        self._wake = asyncio.Event()
        self._rotation: dict[str, int] = {}
        self._inbox: list[tuple[PhoneConnection, _Frame]] = []
        self._inbox_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Waiters for a project's next inbound SMS (app/services/agents.py).
        self.inbound = InboundSignal()

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="hub-dispatch"),
            asyncio.create_task(self._write_loop(), name="hub-writer"),
            asyncio.create_task(self._sweep_loop(), name="hub-sweep"),
            asyncio.create_task(self._socket_clock(), name="hub-socket-clock"),
            asyncio.create_task(self._listen_loop(), name="hub-listen"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Frames that arrived are still stored (and answered) before the sockets close.
        with contextlib.suppress(Exception):
            while self._inbox:
                batch, self._inbox = self._inbox[:MAX_BATCH_FRAMES], self._inbox[MAX_BATCH_FRAMES:]
                await self._write(batch)
        with contextlib.suppress(Exception):
            await self._flush_seen()
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

    def wake_local(self, project_id: str, queued: bool = False, freed: bool = False) -> None:
        """Asks for a dispatch round for the project: `queued` when messages were just queued,
        `freed` when all that changed is a phone's slot in flight (nothing to do then if the
        last round found the queue empty)."""
        if freed and project_id not in self._maybe_queued:
            return
        self._maybe_queued.add(project_id)
        self._dirty.add(project_id)
        if queued:
            self._freshly_queued.add(project_id)
        self._wake.set()

    async def notify_queued(self, project_id: str) -> None:
        """Called after a commit that queued messages: wakes this instance and every other."""
        self.wake_local(project_id, queued=True)
        self._publish({"project_id": project_id}, DISPATCH_CHANNEL)

    def notify_inbound(self, project_id: str) -> None:
        """Called after a commit that stored inbound SMS: wakes their waiters everywhere."""
        self.inbound.fire(project_id)
        self._publish({"inbound": project_id}, DISPATCH_CHANNEL)

    async def disconnect_device(self, device_id: str) -> None:
        """Closes a revoked device's socket wherever it is connected."""
        await self._close_local(device_id)
        self._publish({"revoked": device_id}, DEVICE_CHANNEL)

    def _publish(self, payload: dict[str, str], channel: str) -> None:
        # Before start (e.g. an app used without its lifespan) there is no one to tell; other
        # instances still find queued work on their next sweep.
        if self._tasks:
            self.channels.publish(json.dumps({**payload, "from": self._sender}), channel)

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
                if not isinstance(payload, dict) or payload.get("from") == self._sender:
                    continue  # this process's own, acted on when it was sent
                if "project_id" in payload:
                    self.wake_local(str(payload["project_id"]))
                elif "revoked" in payload:
                    await self._close_local(str(payload["revoked"]))
                elif "inbound" in payload:
                    self.inbound.fire(str(payload["inbound"]))
        finally:
            with contextlib.suppress(Exception):
                await self.channels.unsubscribe(subscriber)

    # Dispatching -------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            projects, self._dirty = self._dirty, set()
            queued, self._freshly_queued = self._freshly_queued, set()
            for project_id in projects:
                try:
                    await self._dispatch_project(project_id, look_first=project_id not in queued)
                except Exception as exc:  # keep dispatching other projects; the sweep retries
                    log.error("dispatch_failed", project_id=project_id, error=repr(exc))

    async def _dispatch_project(self, project_id: str, look_first: bool = True) -> None:
        if not self._projects.get(project_id):
            return
        emptied = await self._claim_passes(project_id, look_first)
        # Found empty, and nothing woke the project meanwhile (a wake-up then is in the next
        # round's set): until something marks it again, a freed slot has nothing to claim.
        if emptied and project_id not in self._dirty:
            self._maybe_queued.discard(project_id)

    async def _claim_passes(self, project_id: str, look_first: bool) -> bool:
        """Claim passes for the project's phones connected here, one transaction each for all
        of them, until the queue or their room runs out; whether they found the queue empty
        (all of it given out). With `look_first` (a wake-up that queued nothing: a freed
        slot, a phone back) a read-only look comes first, so an empty queue costs no claim
        transaction."""
        if look_first and not await outbound.has_queued(self.db, project_id):
            return True
        while True:
            phones = [c for c in self._projects.get(project_id, {}).values() if c.ready and c.sims]
            if not phones:
                return False
            # Each pass starts one phone further on, so phones take turns being first.
            start = self._rotation.get(project_id, 0) % len(phones)
            self._rotation[project_id] = start + 1
            now = time.time()
            plan = ClaimPlan(phones[start:] + phones[:start], self.limits, now)
            done = await outbound.claim_queued(self.db, project_id, plan.max_candidates, plan.plan)
            for claim in done.claims:
                connection = self.connections.get(claim.device_id)
                if connection is None:  # gone meanwhile: the ack timeout takes it back
                    continue
                message = claim.message
                connection.dispatched(
                    message.id, claim.sim_id, message.segment_count, now, self.limits
                )
                connection.rotation += 1
                sim = next(s for s in connection.sims if s.id == claim.sim_id)
                # If the socket is gone, its disconnect returns the unaccepted messages.
                with contextlib.suppress(Exception):
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
            # A pass that read the whole queue leaves only what it could not give out; what is
            # queued after it wakes this loop again. So no empty pass follows a busy one.
            if not done.claims or done.read_all:
                return done.read_all and done.left == 0

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
            if result.requeued_ids or result.no_result_ids:
                for connection in self.connections.values():
                    if connection.in_flight:
                        for message_id in result.requeued_ids & connection.in_flight.keys():
                            connection.requeued(message_id)
                        for message_id in result.no_result_ids & connection.in_flight.keys():
                            connection.in_flight.pop(message_id, None)
            for project_id in result.requeued_projects | self._projects.keys():
                self.wake_local(project_id)

    # Clocks of the sockets ---------------------------------------------------------------

    async def _socket_clock(self) -> None:
        """One timer for every socket here: a `ping` to each phone silent for the ping
        interval, a close (4000) for each silent for the idle timeout, and every
        `SEEN_FLUSH_INTERVAL_S` (at most half the idle timeout) one write of what was last heard
        from each phone."""
        ping_s = self.settings.phone_ping_interval_s
        idle_s = self.settings.phone_idle_timeout_s
        # A ping or a close may come up to an eighth of its interval late: one look at every
        # socket costs about 0.3 ms per 1,000 phones, so it is not taken every second.
        tick_s = max(0.05, min(5.0, ping_s / 8, idle_s / 8))
        flush_s = min(SEEN_FLUSH_INTERVAL_S, idle_s / 2)
        loop = asyncio.get_running_loop()
        flushed = loop.time()
        ping = protocol.frame("ping")
        while True:
            await asyncio.sleep(tick_s)
            now = loop.time()
            for connection in list(self.connections.values()):
                if now - connection.heard_at >= idle_s:
                    connection.heard_at = now  # one close is enough
                    await connection.close(protocol.CLOSE_IDLE, "no frames within the idle timeout")
                elif now - max(connection.heard_at, connection.pinged_at) >= ping_s:
                    connection.pinged_at = now
                    with contextlib.suppress(Exception):
                        await connection.send(ping)
            if now - flushed >= flush_s:
                flushed = now
                try:
                    await self._flush_seen()
                except Exception as exc:
                    log.error("seen_flush_failed", error=repr(exc))

    async def _flush_seen(self) -> None:
        states = []
        for connection in self.connections.values():
            state = connection.seen_state()
            if state is not None:
                states.append(state)
                connection.seen_at = None
        await devices.flush_seen(self.db, states)

    # One phone socket --------------------------------------------------------------------

    async def serve(self, socket: PhoneSocket) -> None:
        try:
            await socket.accept()
            device = await self._authenticate(socket)
        except _GONE:
            return  # the phone left during the handshake
        except Exception as exc:
            log.error("phone_socket_failed", error=repr(exc), exc_info=exc)
            await socket.close(1011, "server error")
            return
        if device is None:
            return
        connection = PhoneConnection(device=device, socket=socket)
        connection.heard_at = connection.pinged_at = asyncio.get_running_loop().time()
        previous = self.connections.get(device.id)
        self._register(connection)
        try:
            if previous is not None:
                await previous.close(protocol.CLOSE_REPLACED, "replaced by a newer connection")
            await devices.device_connected(self.db, device.id, self.instance_id)
            await connection.send(self._connected_frame(device))
            log.info("phone_connected", device_id=device.id, project_id=device.project_id)
            socket.take_text(self._heartbeat_taker(connection))
            await self._receive_loop(connection)
        except _GONE:
            pass  # the phone went away while we were answering it: an ordinary disconnect
        except Exception as exc:
            log.error("phone_socket_failed", device_id=device.id, error=repr(exc), exc_info=exc)
            await connection.close(1011, "server error")
        finally:
            if self.connections.get(device.id) is connection:
                self._unregister(connection)
                await self._let_go(connection)
            log.info("phone_disconnected", device_id=device.id)

    def _connected_frame(self, device: DeviceRef) -> str:
        return protocol.frame(
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

    async def _let_go(self, connection: PhoneConnection) -> None:
        """Records the phone offline and requeues what it had not accepted. If that write
        fails it is logged; the sweep requeues the messages once their ack timeout passes."""
        device = connection.device
        try:
            requeued = await devices.device_disconnected(
                self.db, device.id, self.instance_id, connection.seen_state()
            )
        except Exception as exc:
            log.error("phone_disconnect_failed", device_id=device.id, error=repr(exc), exc_info=exc)
            return
        if requeued:
            await self.notify_queued(device.project_id)

    def _register(self, connection: PhoneConnection) -> None:
        device = connection.device
        self.connections[device.id] = connection
        self._projects.setdefault(device.project_id, {})[device.id] = connection

    def _unregister(self, connection: PhoneConnection) -> None:
        device = connection.device
        del self.connections[device.id]
        phones = self._projects.get(device.project_id)
        if phones is not None:
            phones.pop(device.id, None)
            if not phones:
                del self._projects[device.project_id]

    async def _authenticate(self, socket: PhoneSocket) -> DeviceRef | None:
        token = socket.query_param("token")
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
            device = await devices.authenticate_device(self.db, token)
        except devices.DeviceRevoked:
            await socket.close(protocol.CLOSE_REVOKED, "device revoked")
        except Unauthorized:
            await socket.close(protocol.CLOSE_INVALID_TOKEN, "invalid device token")
        else:
            return DeviceRef(device.id, device.project_id)
        return None

    def _heartbeat_taker(self, connection: PhoneConnection) -> TextHook:
        """Takes the phone's heartbeats as the socket's protocol parses them, ahead of
        `_receive_loop` (see app/hub/ws_protocol.py): at 10,000 phones they are most of what
        the server reads. A heartbeat only sets a few fields in memory, so its order among
        the other frames does not matter. Anything else, a malformed heartbeat, or one past
        the phone's frame budget goes to `_receive_loop`, which answers or waits as usual."""
        loop = asyncio.get_running_loop()
        device_id = connection.device.id
        limits = self.phone_limits

        def take(data: bytes) -> bool:
            if b'"heartbeat"' not in data:
                return False
            try:
                parsed = protocol.decode_frame(data.decode())
            except (UnicodeDecodeError, protocol.FrameError):
                return False
            if not isinstance(parsed, protocol.Heartbeat) or not limits.try_frame(device_id):
                return False
            connection.heard_at = loop.time()
            connection.seen_at = time.time()
            connection.heartbeat(parsed)
            return True

        return take

    async def _receive_loop(self, connection: PhoneConnection) -> None:
        """Reads the socket's frames as they arrive and hands each to the writer, which stores
        and answers them in order. An `accepted` counts from its arrival: a command whose
        acceptance has arrived is never sent back to the queue as unaccepted, however long its
        commit takes. Heartbeats are noted in memory."""
        receive = connection.socket.receive
        loop = asyncio.get_running_loop()
        device_id = connection.device.id
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            connection.heard_at = loop.time()
            connection.seen_at = time.time()
            await self.phone_limits.frame(device_id)
            try:
                parsed = protocol.decode_frame(_frame_data(message))
            except protocol.FrameError as exc:
                await connection.send(exc.as_frame())
                continue
            if isinstance(parsed, protocol.Heartbeat):
                connection.heartbeat(parsed)
                continue
            if isinstance(parsed, protocol.Auth):
                await connection.send(
                    protocol.FrameError(
                        "already_authenticated", "this socket is authenticated"
                    ).as_frame()
                )
                continue
            if isinstance(parsed, protocol.Inbound):
                await self.phone_limits.inbound_sms(device_id)
            elif isinstance(parsed, protocol.Accepted):
                self.accepts_in_hand.add(parsed.id)
            self._inbox.append((connection, parsed))
            self._inbox_ready.set()
            connection.pending += 1
            if connection.pending >= READ_AHEAD_FRAMES:
                connection.resume = loop.create_future()
                await connection.resume

    # The writer: group commits of what phones report --------------------------------------

    async def _write_loop(self) -> None:
        """Takes every frame that arrived meanwhile and writes them in one transaction; each
        is answered only after that commit. While one batch commits the next one gathers."""
        while True:
            await self._inbox_ready.wait()
            self._inbox_ready.clear()
            while self._inbox:
                batch, self._inbox = self._inbox[:MAX_BATCH_FRAMES], self._inbox[MAX_BATCH_FRAMES:]
                try:
                    await self._write(batch)
                except Exception as exc:  # _write answers for its frames; keep writing
                    log.error("phone_batch_failed", error=repr(exc), exc_info=exc)

    async def _write(self, batch: list[tuple[PhoneConnection, _Frame]]) -> None:
        try:
            answers = await self._commit(batch)
        except Exception as exc:
            if len(batch) > 1:
                # One frame spoiled the batch: each alone now, so only its own socket fails.
                for item in batch:
                    await self._write([item])
                return
            connection, frame = batch[0]
            self._handled(connection, frame)
            log.error(
                "phone_frame_failed", device_id=connection.device.id, error=repr(exc), exc_info=exc
            )
            await connection.close(1011, "server error")
            return
        for (connection, frame), texts in zip(batch, answers, strict=True):
            self._handled(connection, frame)
            for text in texts:
                try:
                    await connection.send(text)
                except Exception:
                    break  # gone: the phone offers it again on reconnect

    def _handled(self, connection: PhoneConnection, frame: _Frame) -> None:
        if isinstance(frame, protocol.Accepted):
            self.accepts_in_hand.discard(frame.id)
        connection.pending -= 1
        resume = connection.resume
        if resume is not None and connection.pending < READ_AHEAD_FRAMES // 2:
            connection.resume = None
            if not resume.done():
                resume.set_result(None)

    async def _commit(self, batch: list[tuple[PhoneConnection, _Frame]]) -> list[list[str]]:
        """Writes a batch in one transaction and applies it to the phones' live state after
        the commit; returns each frame's answers, in order."""
        if not any(
            isinstance(f, protocol.Hello | protocol.Sims | protocol.Inbound) for _, f in batch
        ):
            return await self._commit_reports(batch)
        reports: list[outbound.Report] = []
        report_index: list[int] = []
        inbound: list[DeviceSms] = []
        hellos: list[tuple[PhoneConnection, list[LiveSim], Any]] = []
        since = datetime.fromtimestamp(time.time() - longest_span_s(self.limits), UTC)

        async def write(session: AsyncSession) -> tuple[list[outbound.Outcome], set[str]]:
            for index, (connection, frame) in enumerate(batch):
                device = connection.device
                if isinstance(frame, protocol.Hello | protocol.Sims):
                    if isinstance(frame, protocol.Hello):
                        info = frame.device
                        await devices.note_connected(
                            session,
                            device.id,
                            self.instance_id,
                            {
                                "model": info.model if info else None,
                                "os": info.os if info else None,
                                "app_version": info.app_version if info else None,
                            },
                        )
                    sims = frame.sims
                    stored = await devices.replace_sims(
                        session,
                        device.id,
                        device.project_id,
                        [devices.ReportedSim(s.slot, s.number, s.carrier, s.iccid) for s in sims],
                    )
                    live = [LiveSim(s.id, s.slot, s.number, s.locked) for s in stored]
                    state = await outbound.live_state(
                        session, device.id, [s.id for s in live], since
                    )
                    hellos.append((connection, live, state))
                elif isinstance(frame, protocol.Inbound):
                    sms = frame.message
                    inbound.append(
                        DeviceSms(
                            device.id,
                            device.project_id,
                            ReceivedSms(
                                phone_message_id=sms.id,
                                sender=sms.address,
                                body=sms.body,
                                device_time=protocol.ms_to_datetime(sms.date),
                                sim_slot=sms.sim_slot,
                            ),
                        )
                    )
                else:
                    report_index.append(index)
                    reports.append(_report(device, frame))
            outcomes = await outbound.apply_reports(session, reports)
            replied = await store_inbound_many(
                session,
                inbound,
                dialect="sqlite" if self.db.is_sqlite else "postgresql",
                settings=self.settings,
            )
            if reports or inbound:
                crash_point(CRASH_BEFORE_REPORTS_COMMIT)
            return outcomes, replied

        outcomes, replied = await self.db.run_unit(write)
        # Committed: now the live state, and the answers.
        answers: list[list[str]] = [[] for _ in batch]
        for connection, live, (in_flight, dispatched) in hellos:
            connection.rebuild(live, in_flight, dispatched, self.limits)
            self.wake_local(connection.device.project_id)
        for index, (_, frame) in enumerate(batch):
            if isinstance(frame, protocol.Inbound):
                answers[index].append(protocol.frame("inbound_ack", id=frame.message.id))
        for project_id in {item.project_id for item in inbound}:
            self.notify_inbound(project_id)
        for project_id in replied:  # automatic consent replies were queued
            await self.notify_queued(project_id)
        for index, report, outcome in zip(report_index, reports, outcomes, strict=True):
            connection = batch[index][0]
            answers[index] = self._answer(connection, report, outcome)
        return answers

    async def _commit_reports(self, batch: list[tuple[PhoneConnection, _Frame]]) -> list[list[str]]:
        """A batch of reports only (the common one), as one unit of work: at once on the
        loop's thread on SQLite (`Database.run_unit`)."""
        reports = [_report(connection.device, frame) for connection, frame in batch]

        async def write(session: AsyncSession) -> list[outbound.Outcome]:
            outcomes = await outbound.apply_reports(session, reports)
            crash_point(CRASH_BEFORE_REPORTS_COMMIT)
            return outcomes

        outcomes = await self.db.run_unit(write)
        return [
            self._answer(connection, report, outcome)
            for (connection, _), report, outcome in zip(batch, reports, outcomes, strict=True)
        ]

    def _answer(
        self, connection: PhoneConnection, report: outbound.Report, outcome: outbound.Outcome
    ) -> list[str]:
        message_id = report.message_id
        if outcome.taken_from is not None:
            previous = self.connections.get(outcome.taken_from)
            if previous is not None:
                previous.in_flight.pop(message_id, None)
        if report.kind == outbound.ACCEPTED_REPORT:
            if outcome.stored:
                connection.in_flight.setdefault(message_id, None)
                return [protocol.frame("accept_ack", id=message_id)]
            connection.in_flight.pop(message_id, None)
            return [
                protocol.frame(
                    "error",
                    code="stale_command",
                    message=f"{message_id} is held by another phone or finished: do not send it",
                    id=message_id,
                )
            ]
        if outcome.stored and outcome.status not in _IN_FLIGHT:
            connection.in_flight.pop(message_id, None)
        self.wake_local(connection.device.project_id, freed=True)  # a slot may be free again
        answers = []
        if not outcome.stored:  # nothing to record, but acknowledge so the phone stops repeating
            answers.append(
                protocol.frame(
                    "error",
                    code="unknown_message",
                    message=f"{message_id} is not this device's",
                    id=message_id,
                )
            )
        answers.append(protocol.frame("result_ack", id=message_id, kind=report.kind))
        return answers


_IN_FLIGHT = frozenset({statuses.SENDING, statuses.ACCEPTED})


def _report(device: DeviceRef, frame: _Frame) -> outbound.Report:
    if isinstance(frame, protocol.Accepted):
        return outbound.Report(outbound.ACCEPTED_REPORT, device.project_id, device.id, frame.id)
    if isinstance(frame, protocol.SendResult):
        return outbound.Report(
            outbound.SEND_RESULT_REPORT,
            device.project_id,
            device.id,
            frame.id,
            frame.success,
            frame.error,
        )
    assert isinstance(frame, protocol.DeliveryReport)
    return outbound.Report(
        outbound.DELIVERY_REPORT,
        device.project_id,
        device.id,
        frame.id,
        frame.delivered,
        at=protocol.ms_to_datetime(frame.at),
    )
