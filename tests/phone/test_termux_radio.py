"""TermuxRadio against stand-in Termux:API executables placed first on PATH."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from pathlib import Path

import pytest

from app.phone.radios.termux import CURSOR_KEY, TermuxRadio
from app.phone.store import PhoneStore
from tests.support.live import eventually

# Each stand-in counts its calls (a line each), records its arguments (one per line) and stdin,
# then prints its canned answer.
# A file named `<command>.fail` makes it exit 1 with that file's text on stderr.
STAND_IN = """#!/bin/sh
name=$(basename "$0")
echo >> "$TERMUX_STUB_DIR/$name.calls"
printf '%s\\n' "$@" > "$TERMUX_STUB_DIR/$name.args.tmp"
mv "$TERMUX_STUB_DIR/$name.args.tmp" "$TERMUX_STUB_DIR/$name.args"
if [ "$name" = termux-sms-send ]; then cat > "$TERMUX_STUB_DIR/$name.stdin"; fi
if [ -f "$TERMUX_STUB_DIR/$name.fail" ]; then cat "$TERMUX_STUB_DIR/$name.fail" >&2; exit 1; fi
if [ -f "$TERMUX_STUB_DIR/$name.json" ]; then cat "$TERMUX_STUB_DIR/$name.json"; fi
"""
COMMANDS = (
    "termux-sms-send",
    "termux-sms-list",
    "termux-telephony-deviceinfo",
    "termux-battery-status",
    "termux-telephony-cellinfo",
)


class Stubs:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def answer(self, command: str, payload: object) -> None:
        staged = self.dir / f"{command}.json.tmp"
        staged.write_text(json.dumps(payload))
        staged.replace(self.dir / f"{command}.json")  # atomic: a poll never reads half a file

    def fail(self, command: str, stderr: str) -> None:
        (self.dir / f"{command}.fail").write_text(stderr)

    def args(self, command: str) -> list[str]:
        path = self.dir / f"{command}.args"
        return path.read_text().splitlines() if path.exists() else []

    def stdin(self, command: str) -> str:
        return (self.dir / f"{command}.stdin").read_text()

    def calls(self, command: str) -> int:
        """How many times `command` has started."""
        path = self.dir / f"{command}.calls"
        return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def stubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stubs:
    directory = tmp_path / "termux-bin"
    directory.mkdir()
    for command in COMMANDS:
        path = directory / command
        path.write_text(STAND_IN)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TERMUX_STUB_DIR", str(directory))
    return Stubs(directory)


def sms_row(row_id: int, number: str, body: str, received: str = "2026-11-24 10:15:00") -> dict:
    return {
        "threadid": 3,
        "type": "inbox",
        "read": False,
        "number": number,
        "address": number,
        "received": received,
        "body": body,
        "_id": row_id,
    }


async def test_send_passes_number_and_slot_as_arguments_and_body_on_stdin(stubs: Stubs) -> None:
    radio = TermuxRadio()
    body = "-n looks like an option \\c but is text"
    outcome = await radio.send("+15551230000", body, 1, "msg_t1")
    assert outcome.success and outcome.error is None and not outcome.delivered_later
    assert stubs.args("termux-sms-send") == ["-n", "+15551230000", "-s", "1"]
    assert stubs.stdin("termux-sms-send") == body


async def test_send_without_slot_uses_the_default_sim(stubs: Stubs) -> None:
    await TermuxRadio().send("+15551230000", "hi", None, "msg_t2")
    assert stubs.args("termux-sms-send") == ["-n", "+15551230000"]


async def test_send_nonzero_exit_is_a_failure_carrying_stderr(stubs: Stubs) -> None:
    stubs.fail("termux-sms-send", "SEND_SMS permission denied")
    outcome = await TermuxRadio().send("+15551230000", "hi", 0, "msg_t3")
    assert not outcome.success
    assert outcome.error == "SEND_SMS permission denied"


async def test_send_refuses_a_destination_that_would_text_several_people(stubs: Stubs) -> None:
    outcome = await TermuxRadio().send("+15551230000,+15559990000", "hi", 0, "msg_t4")
    assert outcome == outcome.__class__(success=False, error="invalid_destination")
    assert stubs.args("termux-sms-send") == []


async def test_missing_termux_api_is_a_clear_failure(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    outcome = await TermuxRadio().send("+15551230000", "hi", 0, "msg_t5")
    assert not outcome.success and "pkg install termux-api" in (outcome.error or "")


async def test_sims_come_from_deviceinfo_with_configured_numbers(stubs: Stubs) -> None:
    stubs.answer(
        "termux-telephony-deviceinfo",
        {
            "phone_count": 2,
            "sim_state": "ready",
            "sim_operator_name": "T-Mobile",
            "sim_serial_number": None,
            "network_operator_name": "T-Mobile",
        },
    )
    sims = await TermuxRadio().list_sims()
    assert [(s.slot, s.number, s.carrier, s.iccid) for s in sims] == [(0, None, "T-Mobile", None)]

    sims = await TermuxRadio(sim_numbers={0: "+15550001111", 1: "+15550002222"}).list_sims()
    assert [(s.slot, s.number) for s in sims] == [(0, "+15550001111"), (1, "+15550002222")]


async def test_absent_sim_reports_no_sims(stubs: Stubs) -> None:
    stubs.answer("termux-telephony-deviceinfo", {"sim_state": "absent"})
    assert await TermuxRadio().list_sims() == []


async def test_inbound_skips_history_then_yields_new_sms_and_remembers_where_it_stopped(
    stubs: Stubs, phone_store: PhoneStore
) -> None:
    store = phone_store
    stubs.answer("termux-sms-list", [sms_row(1, "+15550000001", "old"), sms_row(2, "BANK", "old")])
    radio = TermuxRadio(poll_s=0.02, list_limit=20)
    messages = radio.inbound(store)
    first = asyncio.ensure_future(anext(messages))
    try:
        # A third listing has started, so the first two (the same inbox) were read and handled.
        await eventually(lambda: stubs.calls("termux-sms-list") >= 3)
        assert not first.done()  # the inbox as found at first start is history
        assert await store.get_meta(CURSOR_KEY) == "2"
        assert stubs.args("termux-sms-list") == ["-t", "inbox", "-l", "20"]

        stubs.answer(
            "termux-sms-list",
            [
                sms_row(2, "BANK", "old"),
                sms_row(4, "AMAZON", "fourth"),
                sms_row(3, "+1555", "third"),
            ],
        )
        third = await asyncio.wait_for(first, 10)
        assert (third.id, third.address, third.body) == ("sms_3", "+1555", "third")
        assert isinstance(third.date_ms, int) and third.sim_slot is None
        fourth = await asyncio.wait_for(anext(messages), 10)
        assert fourth.id == "sms_4"
        assert await store.get_meta(CURSOR_KEY) == "3"  # 4 is not stored by the consumer yet
    finally:
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await first  # cancelled or failed: either way the generator is free to close
        await radio.aclose()
        await messages.aclose()

    # A restart picks up after the last SMS the consumer asked past, not from scratch.
    restarted = TermuxRadio(poll_s=0.02)
    resumed = restarted.inbound(store)
    try:
        again = await asyncio.wait_for(anext(resumed), 10)
        assert again.id == "sms_4"
    finally:
        await restarted.aclose()
        await resumed.aclose()


async def test_device_status_reads_battery_and_registered_cell(stubs: Stubs) -> None:
    stubs.answer(
        "termux-battery-status",
        {"health": "GOOD", "percentage": 81, "plugged": "PLUGGED_AC", "status": "CHARGING"},
    )
    stubs.answer(
        "termux-telephony-cellinfo",
        [
            {"type": "lte", "registered": True, "level": 3},
            {"type": "lte", "registered": False, "level": 4},
        ],
    )
    status = await TermuxRadio().device_status()
    assert (status.battery, status.charging, status.signal) == (81, True, 3)


async def test_phone_client_with_termux_radio_end_to_end(stubs: Stubs, hub, start_client) -> None:
    stubs.answer(
        "termux-telephony-deviceinfo", {"sim_state": "ready", "sim_operator_name": "Vodafone"}
    )
    stubs.answer("termux-sms-list", [])
    start_client(hub, TermuxRadio(poll_s=0.02))
    hello = await hub.wait_frame("hello")
    assert hello["sims"] == [{"slot": 0, "number": None, "carrier": "Vodafone", "iccid": None}]

    await hub.send(
        {"type": "send_sms", "id": "msg_tx", "to": "+15551230000", "body": "hi", "slot": 0}
    )
    assert (await hub.wait_frame("send_result", id="msg_tx"))["success"] is True
    assert stubs.args("termux-sms-send") == ["-n", "+15551230000", "-s", "0"]

    stubs.answer("termux-sms-list", [sms_row(9, "+15557654321", "reply")])
    inbound = await hub.wait_frame("inbound")
    assert inbound["message"]["id"] == "sms_9" and inbound["message"]["body"] == "reply"
