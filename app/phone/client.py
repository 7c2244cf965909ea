"""The phone side of the hub protocol: holds the WebSocket, sends what it is told, reports back.

Guarantees, whatever the network or the process does:
- a `send_sms` id reaches the radio only once the server has confirmed that this phone holds it
  (`accept_ack` answering the phone's `accepted`), so a message the server gave to another phone
  meanwhile (`stale_command`) is never sent by this one too;
- a `send_sms` id reaches the radio at most once (the outbox row is written before `accepted`
  and moved to `sending` before the radio call; a row left in `sending` by a crash is reported
  as failed `unknown_after_restart`, never retried);
- results, delivery reports and inbound SMS stay in the store until the server acknowledges them,
  and are offered again after every (re)connect; one the server refuses as invalid
  (`invalid_frame` naming it) `max_refusals` times is dropped and logged, so it never blocks the
  items behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from app.json_limits import MAX_JSON_DEPTH, json_too_deep, restore_recursion_limit
from app.phone.radios import Radio, SendOutcome, SimInfo
from app.phone.store import (
    ACCEPTED,
    FAILED,
    HELD,
    REASSIGNED,
    SENDING,
    OutboundRecord,
    PhoneStore,
)

log = logging.getLogger("simwire.phone")
# websockets logs the request line, token included, at DEBUG: keep its logger above that.
_ws_log = logging.getLogger("simwire.phone.websocket")
_ws_log.setLevel(logging.INFO)

WS_PATH = "/v1/phone/ws"
# Close codes the server uses for a token it will never accept: invalid and revoked.
AUTH_CLOSE_CODES = frozenset({4401, 4403})
RESULT_KINDS = ("send_result", "delivery_report")
# Items the phone keeps until the server acknowledges them; one the server refuses as invalid
# this many times is dropped, so it can never hold up what is queued behind it.
REFUSABLE_KINDS = frozenset({"inbound", *RESULT_KINDS})
MAX_REFUSALS = 3


class DeviceTokenRejected(Exception):
    """The server refused the device token (close 4401/4403, or HTTP 401/403 at the handshake)."""

    def __init__(self, code: int, reason: str = "") -> None:
        what = "revoked" if code in (4403, 403) else "invalid"
        super().__init__(
            f"the server rejected the device token as {what} (code {code}"
            + (f": {reason}" if reason else "")
            + "); pair the phone again to get a new token"
        )
        self.code = code
        self.reason = reason


@dataclass
class ClientStats:
    """Counters for tests and logs."""

    connect_attempts: int = 0
    connections: int = 0  # sessions that got as far as the server's `connected` frame
    radio_sends: int = 0  # calls to `radio.send`
    duplicate_commands: int = 0  # `send_sms` frames for an id already in the outbox
    confirmed: int = 0  # held commands the server confirmed with `accept_ack`
    reassigned: int = 0  # held commands the server refused with `stale_command` (never sent)
    refused: int = 0  # `invalid_frame` errors naming one of this phone's queued items
    dropped: int = 0  # items given up after `max_refusals` refusals
    frames_sent: Counter[str] = field(default_factory=Counter)
    frames_received: Counter[str] = field(default_factory=Counter)


def phone_ws_url(server_url: str, token: str) -> str:
    """The hub URL for `server_url` (http(s):// or ws(s)://, with or without the path)."""
    parts = urlsplit(server_url.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(
            f"server URL must be http(s):// or ws(s)://host[:port], got {server_url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(WS_PATH):
        path += WS_PATH
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", token)]
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def redact_token(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, "***" if k == "token" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe="*"), ""))


def default_device_info() -> dict[str, str]:
    try:
        from importlib.metadata import version

        app_version = version("simwire")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        app_version = "0.0.0"
    return {
        "model": platform.node() or platform.machine() or "unknown",
        "os": f"{platform.system()} {platform.release()}".strip(),
        "app_version": app_version,
    }


def is_expired(expires_at: Any, now: datetime | None = None) -> bool:
    """True when `expires_at` (ISO 8601, naive = UTC, or Unix ms) is in the past."""
    if expires_at is None or expires_at == "":
        return False
    now = now or datetime.now(UTC)
    if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
        return expires_at / 1000 <= now.timestamp()
    try:
        moment = datetime.fromisoformat(str(expires_at))
    except ValueError:
        log.warning("unreadable expires_at %r; treating the command as not expired", expires_at)
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment <= now


class PhoneClient:
    """A phone connected to a Simwire hub.

    `await run()` connects and keeps reconnecting (exponential backoff with full jitter, capped at
    `backoff_max_s`, reset after a connection stayed up `healthy_after_s`) until `await stop()`.
    It raises `DeviceTokenRejected` when the server refuses the token and `stop_on_auth_failure`
    is true. Hooks for tests and supervisors: `connected` (an event set while a session is
    ready, after `hello` and the replay of unacknowledged reports), `server_info` (the last
    `connected` frame), `last_error` (the last `error` frame) and `stats`.
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        radio: Radio,
        store_path: str | Path,
        *,
        heartbeat_s: float = 30.0,
        device_info: Mapping[str, str] | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        healthy_after_s: float = 10.0,
        stop_on_auth_failure: bool = True,
        connected_timeout_s: float = 10.0,
        radio_timeout_s: float = 120.0,
        sims_refresh_s: float = 300.0,
        retention_s: float = 30 * 24 * 3600,
        shutdown_grace_s: float = 10.0,
        max_refusals: int = MAX_REFUSALS,
        rng: random.Random | None = None,
    ) -> None:
        if not token:
            raise ValueError("a device token is required")
        self._url = phone_ws_url(server_url, token)
        self.radio = radio
        self.store_path = store_path
        self.heartbeat_s = heartbeat_s
        self.device_info = dict(device_info) if device_info else default_device_info()
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self.stop_on_auth_failure = stop_on_auth_failure
        self.connected_timeout_s = connected_timeout_s
        self.radio_timeout_s = radio_timeout_s
        self.sims_refresh_s = sims_refresh_s
        self.retention_s = retention_s
        self.shutdown_grace_s = shutdown_grace_s
        self.max_refusals = max_refusals
        self._rng = rng or random.Random()

        self.connected = asyncio.Event()
        self.server_info: dict[str, Any] | None = None
        self.last_error: dict[str, Any] | None = None
        self.stats = ClientStats()

        self._store: PhoneStore | None = None
        self._ws: ClientConnection | None = None
        self._ready = False  # True once `hello` went out on the current connection
        self._report_lock = asyncio.Lock()
        self._radio_queue: asyncio.Queue[str] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._radio_idle = asyncio.Event()
        self._radio_idle.set()
        self._sims_sent: list[SimInfo] | None = None
        self._session_started: float | None = None  # monotonic time of the last `connected`

    @property
    def url(self) -> str:
        """The hub URL with the token masked, safe to log or show."""
        return redact_token(self._url)

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until `stop()`; raises `DeviceTokenRejected` on a refused token (see class doc).

        A client runs once: make a new one to run again.
        """
        restore_recursion_limit()  # a radio backend or its caller may have imported py_ecc
        self._store = await PhoneStore.open(self.store_path)
        background: list[asyncio.Task[None]] = []
        try:
            await self._recover()
            background = [
                asyncio.create_task(self._radio_worker(), name="phone-radio-worker"),
                asyncio.create_task(
                    self._supervise("inbound", self._pump_inbound), name="phone-inbound"
                ),
                asyncio.create_task(
                    self._supervise("delivery", self._pump_deliveries), name="phone-delivery"
                ),
            ]
            connection = asyncio.create_task(self._connection_loop(), name="phone-connection")
            stop_wait = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({connection, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not connection.done():
                # stop(): the socket is being closed; give the loop a moment to finish cleanly.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(connection), 2.0)
            for task in (connection, stop_wait):
                task.cancel()
            results = await asyncio.gather(connection, stop_wait, return_exceptions=True)
            if isinstance(results[0], Exception):
                raise results[0]
        finally:
            self._stopping.set()
            self.connected.clear()
            # Let a radio call in progress finish, so its outcome is stored rather than unknown.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._radio_idle.wait(), self.shutdown_grace_s)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.radio.aclose()
            await self._store.close()
            self._store = None

    async def stop(self) -> None:
        """Ask `run()` to return: close the socket politely and stop the background work."""
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _recover(self) -> None:
        store = self._require_store()
        lost = await store.fail_interrupted("unknown_after_restart")
        for message_id in lost:
            log.warning(
                "%s: radio outcome unknown after restart; reporting it as failed", message_id
            )
        # Only confirmed commands go to the radio; `held` ones are asked about again on connect.
        for record in await store.outbound_in_state(ACCEPTED):
            self._radio_queue.put_nowait(record.id)
        cutoff = int((time.time() - self.retention_s) * 1000)
        await store.prune(older_than_ms=cutoff)

    def _require_store(self) -> PhoneStore:
        if self._store is None:
            raise RuntimeError("the phone store is not open; call run()")
        return self._store

    # --- connection -----------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            self.stats.connect_attempts += 1
            self._session_started = None
            try:
                async with connect(
                    self._url, open_timeout=self.connected_timeout_s, logger=_ws_log
                ) as ws:
                    self._ws = ws
                    await self._session(ws)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                reason = exc.rcvd.reason if exc.rcvd else ""
                if code in AUTH_CLOSE_CODES:
                    self._on_token_rejected(code, reason)
                elif not self._stopping.is_set():
                    log.info("connection closed (code %s%s)", code, f": {reason}" if reason else "")
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    self._on_token_rejected(status, "handshake refused")
                else:
                    log.warning("hub refused the connection: HTTP %s", status)
            except InvalidURI:
                log.error("invalid hub URL %s", self.url)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                log.info("cannot reach %s: %s", self.url, exc or type(exc).__name__)
            except Exception:
                # A bug or a store hiccup in one session must not end a phone's service for good.
                log.exception("connection failed unexpectedly")
            finally:
                self._ws = None
                self._ready = False
                self.connected.clear()
            if self._stopping.is_set():
                return
            started = self._session_started
            if started is not None and time.monotonic() - started >= self.healthy_after_s:
                attempt = 0  # that connection was healthy: start the backoff over
            delay = self._rng.uniform(
                0, min(self.backoff_max_s, self.backoff_initial_s * 2**attempt)
            )
            attempt += 1
            log.info("reconnecting in %.1f s", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _on_token_rejected(self, code: int, reason: str) -> None:
        error = DeviceTokenRejected(code, reason)
        if self.stop_on_auth_failure:
            raise error
        log.error("%s; retrying anyway", error)

    async def _session(self, ws: ClientConnection) -> None:
        """Run one connection from the server's `connected` frame until it closes."""
        self.server_info = await asyncio.wait_for(
            self._await_connected(ws), self.connected_timeout_s
        )
        self.stats.connections += 1
        log.info(
            "connected as device %s of project %s",
            self.server_info.get("device_id"),
            self.server_info.get("project_id"),
        )
        self._session_started = time.monotonic()
        sims = await self._list_sims()
        await ws.send(
            _dump(
                {"type": "hello", "device": self.device_info, "sims": [s.to_wire() for s in sims]}
            )
        )
        self.stats.frames_sent["hello"] += 1
        self._sims_sent = sims
        await self._replay()
        self.connected.set()
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="phone-heartbeat")
        try:
            async for raw in ws:
                await self._on_frame(raw)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await heartbeat
            self.connected.clear()

    async def _await_connected(self, ws: ClientConnection) -> dict[str, Any]:
        while True:
            frame = _parse(await ws.recv())
            if frame is None:
                continue
            self.stats.frames_received[frame["type"]] += 1
            if frame["type"] == "connected":
                return frame
            if frame["type"] == "error":
                self._on_error(frame)
            else:
                log.warning("ignoring %r frame before `connected`", frame["type"])

    async def _replay(self) -> None:
        """Offer again everything the server has not acknowledged, oldest first."""
        store = self._require_store()
        async with self._report_lock:
            self._ready = True
            # `held`: ask again (the server answers `accept_ack` or `stale_command`); confirmed
            # ones without a result: remind the server that this phone still holds them.
            for record in await store.outbound_in_state(HELD, ACCEPTED, SENDING):
                await self._send({"type": "accepted", "id": record.id})
            for record in await store.unacked_results():
                await self._send(_result_frame(record))
            for record in await store.unacked_deliveries():
                await self._send(_delivery_frame(record))
            for sms in await store.unacked_inbound():
                await self._send({"type": "inbound", "message": sms.to_wire()})

    async def _send(self, frame: dict[str, Any]) -> bool:
        """Send a frame if a session is ready; False when it could not go out (kept for replay)."""
        ws = self._ws
        if ws is None or not self._ready:
            return False
        try:
            await ws.send(_dump(frame))
        except ConnectionClosed:
            return False
        self.stats.frames_sent[frame["type"]] += 1
        return True

    async def _heartbeat_loop(self) -> None:
        last_sims_check = time.monotonic()
        while True:
            await self._send_heartbeat()
            await asyncio.sleep(self.heartbeat_s)
            if time.monotonic() - last_sims_check >= self.sims_refresh_s:
                last_sims_check = time.monotonic()
                sims = await self._list_sims()
                if sims != self._sims_sent:
                    self._sims_sent = sims
                    await self._send({"type": "sims", "sims": [s.to_wire() for s in sims]})

    async def _send_heartbeat(self) -> None:
        try:
            status = await asyncio.wait_for(self.radio.device_status(), 15)
            figures = {
                "battery": status.battery,
                "charging": status.charging,
                "signal": status.signal,
            }
        except Exception as exc:
            log.debug("device status unavailable: %s", exc)
            figures = {"battery": None, "charging": None, "signal": None}
        await self._send({"type": "heartbeat", **figures})

    async def _list_sims(self) -> list[SimInfo]:
        try:
            return await asyncio.wait_for(self.radio.list_sims(), 15)
        except Exception as exc:
            log.warning("cannot list SIMs: %s", exc)
            return []

    # --- frames from the server -------------------------------------------------------------

    async def _on_frame(self, raw: str | bytes) -> None:
        frame = _parse(raw)
        if frame is None:
            return
        kind = frame["type"]
        self.stats.frames_received[kind] += 1
        store = self._require_store()
        if kind == "send_sms":
            await self._on_send_sms(frame)
        elif kind == "accept_ack":
            await self._on_accept_ack(frame)
        elif kind == "result_ack":
            await self._on_result_ack(frame)
        elif kind == "inbound_ack":
            if isinstance(frame.get("id"), str):
                await store.ack_inbound(frame["id"])
        elif kind == "ping":
            await self._send_heartbeat()
        elif kind == "error":
            self._on_error(frame)
            if frame.get("code") == "stale_command" and isinstance(frame.get("id"), str):
                await self._on_stale_command(frame["id"])
            elif (
                frame.get("code") == "invalid_frame"
                and frame.get("frame") in REFUSABLE_KINDS
                and isinstance(frame.get("id"), str)
            ):
                await self._on_refused(frame["frame"], frame["id"], frame.get("message"))
        elif kind == "connected":
            self.server_info = frame
        else:
            log.debug("ignoring unknown frame type %r", kind)

    def _on_error(self, frame: dict[str, Any]) -> None:
        self.last_error = frame
        log.warning("server error %s: %s", frame.get("code"), frame.get("message"))

    async def _on_accept_ack(self, frame: dict[str, Any]) -> None:
        """The server confirmed this phone holds the command: from now on it may be sent."""
        message_id = frame.get("id")
        if not isinstance(message_id, str):
            return
        if await self._require_store().confirm(message_id):
            self.stats.confirmed += 1
            self._radio_queue.put_nowait(message_id)
        # Otherwise it was confirmed before (a replayed `accepted`), or it is not held: nothing.

    async def _on_stale_command(self, message_id: str) -> None:
        """Another phone holds the message (or it is finished): never send it, report nothing."""
        if await self._require_store().mark_reassigned(message_id):
            self.stats.reassigned += 1
            log.info("%s: held by another phone; not sent", message_id)
        # A confirmed command is never taken back: a `stale_command` for one (the server answers
        # so to a replayed `accepted` once the result is in) changes nothing.

    async def _on_refused(self, kind: str, item_id: str, reason: Any) -> None:
        """The server refused a queued item as invalid. It is offered again on the next
        connection (the server may be fixed meanwhile) until refused `max_refusals` times in
        all; then it is dropped with an error in the log."""
        store = self._require_store()
        self.stats.refused += 1
        refusals = await store.note_refusal(kind, item_id)
        if refusals < self.max_refusals:
            log.warning(
                "%s %s refused by the server (%d of %d): %s",
                kind,
                item_id,
                refusals,
                self.max_refusals,
                reason,
            )
            return
        await store.drop_refused(kind, item_id)
        self.stats.dropped += 1
        log.error(
            "dropping %s %s: the server refused it %d times as invalid (%s)",
            kind,
            item_id,
            refusals,
            reason,
        )

    async def _on_result_ack(self, frame: dict[str, Any]) -> None:
        store = self._require_store()
        message_id, kind = frame.get("id"), frame.get("kind", "send_result")
        if not isinstance(message_id, str):
            return
        if kind == "send_result":
            await store.ack_result(message_id)
        elif kind == "delivery_report":
            await store.ack_delivery(message_id)
        else:
            log.warning("result_ack with unknown kind %r for %s", kind, message_id)

    async def _on_send_sms(self, frame: dict[str, Any]) -> None:
        store = self._require_store()
        message_id = frame.get("id")
        if not isinstance(message_id, str) or not message_id:
            log.warning("send_sms without an id; ignored")
            return
        to, body = frame.get("to"), frame.get("body")
        expires_at = frame.get("expires_at")
        sim = frame.get("sim")
        existing = await store.get_outbound(message_id)
        if existing is not None:
            self.stats.duplicate_commands += 1
            if existing.state in (HELD, REASSIGNED):
                # Never handed to the radio: hold it under the newer offer and ask again.
                await store.reoffer(
                    message_id,
                    slot=await self._choose_slot(frame.get("slot"), sim),
                    sim=None if sim is None else str(sim),
                    expires_at=None if expires_at is None else str(expires_at),
                )
                async with self._report_lock:
                    await self._send({"type": "accepted", "id": message_id})
                return
            await self._answer_known(existing)
            return
        error: str | None = None
        if not isinstance(to, str) or not to or not isinstance(body, str) or not body:
            error = "invalid_command"
        elif is_expired(expires_at):
            error = "expired"
        added = await store.add_outbound(
            id=message_id,
            to=to if isinstance(to, str) else "",
            body=body if isinstance(body, str) else "",
            slot=await self._choose_slot(frame.get("slot"), sim),
            sim=None if sim is None else str(sim),
            expires_at=None if expires_at is None else str(expires_at),
            state=FAILED if error else HELD,
            error=error,
        )
        if not added:  # the same id raced in; answer as for a duplicate
            record = await store.get_outbound(message_id)
            if record is not None:
                self.stats.duplicate_commands += 1
                await self._answer_known(record)
            return
        # Not queued for the radio: a held command waits for the server's `accept_ack`. If this
        # frame cannot be written (socket down), the replay on reconnect asks again.
        async with self._report_lock:
            await self._send({"type": "accepted", "id": message_id})
        if error:
            log.info("%s: not sent (%s)", message_id, error)
            await self._report_result(message_id)

    async def _answer_known(self, record: OutboundRecord) -> None:
        async with self._report_lock:
            await self._send({"type": "accepted", "id": record.id})
            if record.has_result:
                await self._send(_result_frame(record))
            if record.delivered is not None:
                await self._send(_delivery_frame(record))

    async def _choose_slot(self, slot: Any, sim: Any) -> int | None:
        """The SIM slot for a command: `slot` if given, else the slot whose number is `sim`."""
        if isinstance(slot, int) and not isinstance(slot, bool):
            return slot
        if isinstance(sim, int) and not isinstance(sim, bool):
            return sim
        if isinstance(sim, str) and sim:
            for info in await self._list_sims():
                if info.number and info.number == sim:
                    return info.slot
        return None

    # --- radio side -------------------------------------------------------------------------

    async def _radio_worker(self) -> None:
        store = self._require_store()
        while True:
            message_id = await self._radio_queue.get()
            if self._stopping.is_set():
                return  # still `accepted` in the store: sent after the next start
            record = await store.get_outbound(message_id)
            if record is None or record.state != ACCEPTED:
                continue
            if is_expired(record.expires_at):
                await store.record_result(message_id, success=False, error="expired")
                await self._report_result(message_id)
                continue
            if not await store.mark_sending(message_id):
                continue
            self._radio_idle.clear()
            try:
                self.stats.radio_sends += 1
                outcome = await self._radio_send(record)
                await store.record_result(message_id, success=outcome.success, error=outcome.error)
            finally:
                self._radio_idle.set()
            log.info(
                "%s: %s", message_id, "sent" if outcome.success else f"failed ({outcome.error})"
            )
            await self._report_result(message_id)

    async def _radio_send(self, record: OutboundRecord) -> SendOutcome:
        try:
            return await asyncio.wait_for(
                self.radio.send(record.to, record.body, record.slot, record.id),
                self.radio_timeout_s,
            )
        except TimeoutError:
            return SendOutcome(success=False, error="radio_timeout")
        except Exception as exc:
            log.exception("%s: radio raised", record.id)
            return SendOutcome(success=False, error=f"radio_error: {exc}"[:200])

    async def _report_result(self, message_id: str) -> None:
        store = self._require_store()
        async with self._report_lock:
            record = await store.get_outbound(message_id)
            if record is None or not record.has_result:
                return
            if not record.result_acked:
                await self._send(_result_frame(record))
            if record.delivered is not None and not record.delivery_acked:
                await self._send(_delivery_frame(record))

    async def _supervise(self, name: str, pump: Callable[[], Awaitable[None]]) -> None:
        """Keep a radio pump alive: a backend hiccup is logged and retried, never fatal."""
        while True:
            try:
                await pump()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s pump failed; restarting in 5 s", name)
                await asyncio.sleep(5)

    async def _pump_inbound(self) -> None:
        store = self._require_store()
        messages: AsyncIterator = self.radio.inbound(store)
        async for sms in messages:
            added = await store.add_inbound(sms)
            if not added and await store.is_inbound_acked(sms.id):
                continue
            async with self._report_lock:
                await self._send({"type": "inbound", "message": sms.to_wire()})

    async def _pump_deliveries(self) -> None:
        store = self._require_store()
        async for report in self.radio.delivery_reports():
            async with self._report_lock:
                stored = await store.record_delivery(
                    report.message_id, delivered=report.delivered, at_ms=report.at_ms
                )
                record = await store.get_outbound(report.message_id)
                if record is None:
                    log.warning("delivery report for unknown message %s", report.message_id)
                    continue
                # Before the result is stored the radio worker sends the report after the result.
                if stored and record.has_result:
                    await self._send(_delivery_frame(record))


def _result_frame(record: OutboundRecord) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "send_result",
        "id": record.id,
        "success": record.state != FAILED,
    }
    if record.state == FAILED:
        frame["error"] = record.error or "unknown"
    return frame


def _delivery_frame(record: OutboundRecord) -> dict[str, Any]:
    return {
        "type": "delivery_report",
        "id": record.id,
        "delivered": bool(record.delivered),
        "at": record.delivered_at_ms,
    }


def _dump(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _parse(raw: str | bytes) -> dict[str, Any] | None:
    if json_too_deep(raw):
        log.warning("ignoring a frame nested more than %d levels deep", MAX_JSON_DEPTH)
        return None
    try:
        frame = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        log.warning("ignoring a frame that is not JSON")
        return None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        log.warning("ignoring a frame without a type")
        return None
    return frame
