"""A radio backed by Termux:API on an Android phone (`termux-sms-send`, `termux-sms-list`, ...)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from app.phone.radios import (
    DeliveryReport,
    DeviceStatus,
    InboundSms,
    RadioState,
    SendOutcome,
    SimInfo,
)

log = logging.getLogger("simwire.phone.termux")

CURSOR_KEY = "termux.last_sms_id"


class TermuxCommandError(Exception):
    """A Termux:API command failed; the message holds its stderr (or exit status)."""


class TermuxRadio:
    """Sends with `termux-sms-send`, polls `termux-sms-list` for inbound SMS.

    Termux:API gives no delivery reports and no per-message send status, so a send succeeds when
    the command hands the message to Android (exit 0). Android rarely exposes the SIM's own number:
    pass `sim_numbers` ({slot: number}) to report it. `termux-sms-list` does not say which SIM
    received an SMS, so inbound messages carry `inbound_slot` (None = unknown). At most
    `list_limit` new SMS are picked up per poll of `poll_s` seconds.
    """

    def __init__(
        self,
        *,
        poll_s: float = 5.0,
        list_limit: int = 50,
        sim_numbers: Mapping[int, str] | None = None,
        inbound_slot: int | None = None,
        command_timeout_s: float = 60.0,
    ) -> None:
        self.poll_s = poll_s
        self.list_limit = list_limit
        self.sim_numbers = dict(sim_numbers or {})
        self.inbound_slot = inbound_slot
        self.command_timeout_s = command_timeout_s
        self._closed = asyncio.Event()

    async def list_sims(self) -> list[SimInfo]:
        info = await self._json("termux-telephony-deviceinfo")
        sims: dict[int, SimInfo] = {}
        if isinstance(info, dict) and info.get("sim_state") not in ("absent", None):
            sims[0] = SimInfo(
                slot=0,
                number=self.sim_numbers.get(0) or _text(info.get("line_number")),
                carrier=_text(info.get("sim_operator_name")),
                iccid=_text(info.get("sim_serial_number")),
            )
        for slot, number in self.sim_numbers.items():
            if slot not in sims:
                sims[slot] = SimInfo(slot=slot, number=number)
        return [sims[slot] for slot in sorted(sims)]

    async def send(self, to: str, body: str, slot: int | None, message_id: str) -> SendOutcome:
        if not to or to.startswith("-") or "," in to:
            # A comma would make termux-sms-send text several people; a dash reads as an option.
            return SendOutcome(success=False, error="invalid_destination")
        args = ["termux-sms-send", "-n", to]
        if slot is not None:
            args += ["-s", str(slot)]
        # The body goes on stdin: given as arguments, the script would pass it through `echo`,
        # which mangles a body starting with `-n` or holding backslashes.
        try:
            stdout = await self._run(args, stdin=body)
        except TermuxCommandError as exc:
            return SendOutcome(success=False, error=str(exc))
        error = _json_error(stdout)
        if error:
            return SendOutcome(success=False, error=error)
        return SendOutcome(success=True)

    async def inbound(self, state: RadioState) -> AsyncIterator[InboundSms]:
        cursor_text = await state.get_meta(CURSOR_KEY)
        last_id = int(cursor_text) if cursor_text else None
        while not self._closed.is_set():
            try:
                listed = await self._json(
                    "termux-sms-list", "-t", "inbox", "-l", str(self.list_limit)
                )
            except TermuxCommandError as exc:
                log.warning("termux-sms-list failed: %s", exc)
                listed = None
            rows = _inbox_rows(listed)
            if last_id is None and isinstance(listed, list):
                # First run: what is already in the inbox is history, not news. (Only once a
                # listing worked: a failed one must not make the whole inbox look new later.)
                last_id = max((row_id for row_id, _ in rows), default=0)
                await state.set_meta(CURSOR_KEY, str(last_id))
                rows = []
            for row_id, row in rows:
                if last_id is None or row_id <= last_id:
                    continue
                yield InboundSms(
                    id=f"sms_{row_id}",
                    address=str(row.get("number") or row.get("address") or ""),
                    body=str(row.get("body") or ""),
                    date_ms=_received_ms(row.get("received")),
                    sim_slot=self.inbound_slot,
                )
                # Reached only when the consumer asks for more, i.e. after it stored this one.
                last_id = row_id
                await state.set_meta(CURSOR_KEY, str(last_id))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self.poll_s)

    async def delivery_reports(self) -> AsyncIterator[DeliveryReport]:
        await self._closed.wait()
        return
        yield  # an async generator that never yields: Termux:API has no delivery reports

    async def device_status(self) -> DeviceStatus:
        battery: int | None = None
        charging: bool | None = None
        signal: int | None = None
        with contextlib.suppress(TermuxCommandError):
            status = await self._json("termux-battery-status")
            if isinstance(status, dict):
                if isinstance(status.get("percentage"), int | float):
                    battery = int(status["percentage"])
                if isinstance(status.get("status"), str):
                    charging = status["status"].upper() in ("CHARGING", "FULL")
        with contextlib.suppress(TermuxCommandError):
            cells = await self._json("termux-telephony-cellinfo")
            if isinstance(cells, list):
                levels = [
                    c["level"]
                    for c in cells
                    if isinstance(c, dict)
                    and c.get("registered")
                    and isinstance(c.get("level"), int)
                ]
                signal = max(levels) if levels else None
        return DeviceStatus(battery=battery, charging=charging, signal=signal)

    async def aclose(self) -> None:
        self._closed.set()

    async def _json(self, *args: str) -> Any:
        stdout = await self._run(list(args))
        try:
            return json.loads(stdout) if stdout.strip() else None
        except ValueError as exc:
            raise TermuxCommandError(f"{args[0]} printed something that is not JSON") from exc

    async def _run(self, args: Sequence[str], *, stdin: str | None = None) -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise TermuxCommandError(
                f"{args[0]} not found (install it with `pkg install termux-api`)"
            ) from exc
        try:
            stdout, stderr = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None),
                self.command_timeout_s,
            )
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise TermuxCommandError(f"{args[0]} timed out") from exc
        if process.returncode != 0:
            message = stderr.decode(errors="replace").strip() or f"exit status {process.returncode}"
            raise TermuxCommandError(message[:200])
        return stdout.decode(errors="replace")


async def android_device_info(app_version: str) -> dict[str, str]:
    """Model and Android version from `getprop`, for the `hello` frame."""

    async def prop(name: str) -> str:
        try:
            process = await asyncio.create_subprocess_exec(
                "getprop", name, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
            )
            stdout, _ = await asyncio.wait_for(process.communicate(), 5)
        except (OSError, TimeoutError):
            return ""
        return stdout.decode(errors="replace").strip()

    maker, model, release = (
        await prop("ro.product.manufacturer"),
        await prop("ro.product.model"),
        await prop("ro.build.version.release"),
    )
    return {
        "model": " ".join(part for part in (maker, model) if part) or "Android phone",
        "os": f"Android {release}".strip(),
        "app_version": app_version,
    }


def _inbox_rows(listed: Any) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    if not isinstance(listed, list):
        return rows
    for row in listed:
        if not isinstance(row, dict) or row.get("type", "inbox") != "inbox":
            continue
        try:
            rows.append((int(row["_id"]), row))
        except (KeyError, TypeError, ValueError):
            continue  # Termux:API before 0.50 gave no _id; such rows cannot be tracked
    rows.sort(key=lambda item: item[0])
    return rows


def _received_ms(received: Any) -> int:
    """`received` is the phone's local time as `yyyy-MM-dd HH:mm:ss`."""
    try:
        moment = datetime.strptime(str(received), "%Y-%m-%d %H:%M:%S").astimezone()
    except ValueError:
        return int(time.time() * 1000)
    return int(moment.timestamp() * 1000)


def _json_error(stdout: str) -> str | None:
    with contextlib.suppress(ValueError):
        payload = json.loads(stdout) if stdout.strip() else None
        if isinstance(payload, dict) and payload.get("error"):
            return str(payload["error"])[:200]
    return None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
