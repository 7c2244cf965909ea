"""The phone client against a real WebSocket hub: handshake, sends, acks, replay, reconnects."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.phone.client import DeviceTokenRejected, phone_ws_url, redact_token
from app.phone.radios.fake import FakeRadio, fake_sims
from app.phone.store import ACCEPTED, FAILED, HELD, REASSIGNED, SENT, PhoneStore


def send_sms(message_id: str, **overrides: object) -> dict[str, object]:
    frame: dict[str, object] = {
        "type": "send_sms",
        "id": message_id,
        "to": "+15551230000",
        "body": "Your code is 1234",
        "sim": None,
        "slot": None,
        "expires_at": None,
    }
    frame.update(overrides)
    return frame


async def test_hello_follows_connected_and_reports_sims(
    hub, start_client, device_token: str
) -> None:
    radio = FakeRadio(sims=fake_sims(2))
    phone = start_client(hub, radio)
    hello = await hub.wait_frame("hello")
    await asyncio.wait_for(phone.client.connected.wait(), 5)

    assert hub.tokens == [device_token]
    assert hello["device"] == {"model": "Test Phone", "os": "Android 14", "app_version": "test"}
    assert [sim["slot"] for sim in hello["sims"]] == [0, 1]
    assert set(hello["sims"][0]) == {"slot", "number", "carrier", "iccid"}
    assert phone.client.server_info is not None
    assert phone.client.server_info["device_id"] == "dev_test"
    assert hub.received[0].type == "hello"  # nothing goes before hello


async def test_send_sms_is_accepted_sent_acked_then_delivered(
    hub, start_client, tmp_path: Path
) -> None:
    radio = FakeRadio(sims=fake_sims(2), delivery_delay_ms=50)
    phone = start_client(hub, radio)
    await hub.wait_frame("hello")
    await hub.send(send_sms("msg_one", slot=1))

    await hub.wait_frame("delivery_report", id="msg_one")
    kinds = [f.type for f in hub.received if f.frame.get("id") == "msg_one"]
    assert kinds == ["accepted", "send_result", "delivery_report"]
    assert hub.frames("send_result", id="msg_one") == [
        {"type": "send_result", "id": "msg_one", "success": True}
    ]
    report = hub.frames("delivery_report", id="msg_one")[0]
    assert report["delivered"] is True and isinstance(report["at"], int)
    assert [(s.message_id, s.to, s.slot) for s in radio.sent] == [("msg_one", "+15551230000", 1)]
    assert phone.client.stats.radio_sends == 1

    await phone.stop()
    store = await PhoneStore.open(tmp_path / "phone.db")
    record = await store.get_outbound("msg_one")
    await store.close()
    assert record is not None and record.state == SENT
    assert record.result_acked and record.delivered and record.delivery_acked


async def test_sim_number_picks_the_slot(hub, start_client) -> None:
    sims = fake_sims(3)
    radio = FakeRadio(sims=sims)
    start_client(hub, radio)
    await hub.wait_frame("hello")
    await hub.send(send_sms("msg_pinned", sim=sims[2].number))
    await hub.wait_frame("send_result", id="msg_pinned")
    assert radio.sent[0].slot == 2


async def test_duplicate_send_sms_never_reaches_the_radio_twice(
    hub, start_client, tmp_path: Path
) -> None:
    store = tmp_path / "phone.db"
    radio = FakeRadio(delivery_rate=0)
    phone = start_client(hub, radio, store)
    await hub.wait_frame("hello")
    await hub.send(send_sms("msg_dup"))
    await hub.send(send_sms("msg_dup"))
    await hub.wait_frame("send_result", id="msg_dup")
    await hub.send(send_sms("msg_dup"))
    await hub.wait_frame("send_result", id="msg_dup", count=2)
    await hub.wait_frame("accepted", id="msg_dup", count=3)
    assert len(radio.sent) == 1
    assert phone.client.stats.duplicate_commands == 2

    # Same store, fresh process and radio: the id is still known.
    await phone.stop()
    radio_after_restart = FakeRadio()
    start_client(hub, radio_after_restart, store)
    await hub.wait_frame("hello", connection=2)
    await hub.send(send_sms("msg_dup", body="a different body"))
    await hub.wait_frame("send_result", id="msg_dup", connection=2)
    assert hub.frames("accepted", id="msg_dup", connection=2) == [
        {"type": "accepted", "id": "msg_dup"}
    ]
    assert hub.frames("send_result", id="msg_dup", connection=2)[-1]["success"] is True
    assert radio_after_restart.sent == []


async def test_unacked_results_are_resent_after_reconnect_until_acked(hub, start_client) -> None:
    hub.ack_results = False
    radio = FakeRadio()
    start_client(hub, radio)
    await hub.wait_frame("hello")
    await hub.send(send_sms("msg_replay"))
    await hub.wait_frame("delivery_report", id="msg_replay")

    hub.drop()
    await hub.wait_session(2)
    assert hub.frames("send_result", id="msg_replay", connection=2) == [
        {"type": "send_result", "id": "msg_replay", "success": True}
    ]
    assert len(hub.frames("delivery_report", id="msg_replay", connection=2)) == 1
    # Replay order: results before delivery reports, all before the first heartbeat.
    second = [f.type for f in hub.received if f.connection == 2]
    assert second.index("send_result") < second.index("delivery_report") < second.index("heartbeat")

    await hub.send({"type": "result_ack", "id": "msg_replay", "kind": "send_result"})
    await hub.send({"type": "result_ack", "id": "msg_replay", "kind": "delivery_report"})
    await hub.send({"type": "ping"})  # a round trip so the acks are surely processed
    await hub.wait_frame("heartbeat", connection=2, count=2)
    hub.drop()
    await hub.wait_session(3)
    assert hub.frames("send_result", connection=3) == []
    assert hub.frames("delivery_report", connection=3) == []
    assert len(radio.sent) == 1


async def test_inbound_is_resent_until_inbound_ack(hub, start_client) -> None:
    hub.ack_inbound = False
    radio = FakeRadio()
    start_client(hub, radio)
    await hub.wait_session(1)
    sms_id = await radio.receive("AMAZON", "Your parcel is on its way", slot=0)
    inbound = await hub.wait_frame("inbound")
    assert inbound["message"]["id"] == sms_id
    assert inbound["message"]["address"] == "AMAZON"
    assert inbound["message"]["sim_slot"] == 0
    assert isinstance(inbound["message"]["date"], int)

    hub.drop()
    await hub.wait_session(2)
    assert [f["message"]["id"] for f in hub.frames("inbound", connection=2)] == [sms_id]

    await hub.send({"type": "inbound_ack", "id": sms_id})
    await hub.send({"type": "ping"})
    await hub.wait_frame("heartbeat", connection=2, count=2)
    hub.drop()
    await hub.wait_session(3)
    assert hub.frames("inbound", connection=3) == []


async def test_inbound_received_while_offline_is_sent_on_connect(offline_hub, start_client):
    radio = FakeRadio()
    hub = offline_hub  # not listening yet: the phone is offline
    phone = start_client(hub, radio)
    sms_id = await radio.receive("+15557654321", "hello there")
    await hub.until(lambda: phone.client.stats.connect_attempts >= 2)  # failed while offline
    await hub.start()
    try:
        inbound = await hub.wait_frame("inbound")
        assert inbound["message"]["id"] == sms_id
        assert phone.client.stats.connect_attempts > 1
    finally:
        await phone.stop()
        await hub.close()


async def test_expired_command_fails_without_touching_the_radio(hub, start_client) -> None:
    radio = FakeRadio()
    start_client(hub, radio)
    await hub.wait_frame("hello")
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    await hub.send(send_sms("msg_late", expires_at=past))
    result = await hub.wait_frame("send_result", id="msg_late")
    assert result == {"type": "send_result", "id": "msg_late", "success": False, "error": "expired"}
    assert hub.frames("accepted", id="msg_late")
    assert radio.sent == []

    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    await hub.send(send_sms("msg_on_time", expires_at=future))
    assert (await hub.wait_frame("send_result", id="msg_on_time"))["success"] is True


async def test_failure_rate_one_reports_failure(hub, start_client) -> None:
    radio = FakeRadio(failure_rate=1.0, seed=7)
    start_client(hub, radio)
    await hub.wait_frame("hello")
    await hub.send(send_sms("msg_fail"))
    result = await hub.wait_frame("send_result", id="msg_fail")
    assert result["success"] is False and result["error"] == "generic_failure"
    assert len(radio.sent) == 1
    # The next send succeeds and is reported delivered at once; reports go out in the order
    # the radio gives them, so one for the failed send would have come first.
    radio.failure_rate = 0.0
    await hub.send(send_sms("msg_next"))
    await hub.wait_frame("delivery_report", id="msg_next")
    assert hub.frames("delivery_report", id="msg_fail") == []


class LongestWaits(random.Random):
    """Backoff jitter that always draws the longest wait allowed, so waits can be measured."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_reconnects_with_backoff_after_the_server_drops_the_socket(hub, start_client) -> None:
    phone = start_client(
        hub, FakeRadio(), backoff_initial_s=0.1, backoff_max_s=0.4, rng=LongestWaits()
    )
    await hub.wait_session(1)
    hub.drop()
    await hub.wait_session(2)
    assert phone.client.stats.connections == 2

    # The hub goes away entirely: the phone keeps trying, then reconnects when it is back.
    hub.drop()
    await hub.close()
    down_at, attempts_before = time.monotonic(), phone.client.stats.connect_attempts
    await hub.until(lambda: phone.client.stats.connect_attempts >= attempts_before + 3)
    # Retried, but spaced out rather than spinning: three waits of at least backoff_initial_s.
    assert time.monotonic() - down_at >= 0.25
    assert not phone.client.connected.is_set()
    await hub.start()
    await hub.wait_session(3)
    await asyncio.wait_for(phone.client.connected.wait(), 5)


@pytest.mark.parametrize("code", [4401, 4403])
async def test_rejected_token_stops_the_client(
    hub, start_client, device_token: str, code: int
) -> None:
    hub.reject_code = code
    phone = start_client(hub, FakeRadio())
    with pytest.raises(DeviceTokenRejected) as raised:
        await asyncio.wait_for(phone.task, 5)
    assert raised.value.code == code
    assert ("revoked" if code == 4403 else "invalid") in str(raised.value)
    assert device_token not in str(raised.value)
    assert phone.client.stats.connect_attempts == 1


async def test_rejected_token_can_be_retried_when_configured(hub, start_client) -> None:
    hub.reject_code = 4401
    phone = start_client(hub, FakeRadio(), stop_on_auth_failure=False)
    await hub.until(lambda: hub.connection_count >= 3)
    assert not phone.task.done()


async def test_result_unknown_after_a_crash_is_reported_failed_not_resent(
    hub, start_client, tmp_path: Path
) -> None:
    store = tmp_path / "phone.db"
    stuck_radio = FakeRadio(latency_ms=60_000)  # the process dies while the radio is busy
    phone = start_client(hub, stuck_radio, store, shutdown_grace_s=0.05)
    await hub.wait_frame("hello")
    await hub.send(send_sms("msg_crash"))
    await hub.wait_frame("accepted", id="msg_crash")
    await hub.until(lambda: phone.client.stats.radio_sends == 1)
    await phone.stop()

    radio = FakeRadio()
    start_client(hub, radio, store)
    result = await hub.wait_frame("send_result", id="msg_crash")
    assert result == {
        "type": "send_result",
        "id": "msg_crash",
        "success": False,
        "error": "unknown_after_restart",
    }
    await hub.send(send_sms("msg_crash"))
    await hub.wait_frame("send_result", id="msg_crash", count=2)
    assert radio.sent == []


async def test_accepted_but_never_started_is_sent_after_restart(tmp_path: Path, hub, start_client):
    store_path = tmp_path / "phone.db"
    store = await PhoneStore.open(store_path)
    await store.add_outbound(
        id="msg_waiting",
        to="+15551230000",
        body="hi",
        slot=None,
        sim=None,
        expires_at=None,
        state=ACCEPTED,
    )
    await store.close()

    hub.answer_accepted = False  # confirmed before the restart: no new answer is needed
    radio = FakeRadio(delivery_rate=0)
    start_client(hub, radio, store_path)
    result = await hub.wait_frame("send_result", id="msg_waiting")
    assert result["success"] is True
    assert [s.message_id for s in radio.sent] == ["msg_waiting"]


async def test_held_at_restart_is_asked_about_again_and_sent_only_once_confirmed(
    tmp_path: Path, hub, start_client
):
    store_path = tmp_path / "phone.db"
    store = await PhoneStore.open(store_path)
    await store.add_outbound(
        id="msg_held", to="+15551230000", body="hi", slot=None, sim=None, expires_at=None
    )
    await store.close()

    hub.answer_accepted = False
    radio = FakeRadio(delivery_rate=0)
    phone = start_client(hub, radio, store_path)
    await hub.wait_session(1)
    assert hub.frames("accepted", id="msg_held", connection=1) == [
        {"type": "accepted", "id": "msg_held"}
    ]
    await hub.round_trip()
    assert radio.sent == [] and phone.client.stats.radio_sends == 0
    assert phone.client.stats.confirmed == 0  # nothing was handed to the radio

    await hub.send({"type": "accept_ack", "id": "msg_held"})
    assert (await hub.wait_frame("send_result", id="msg_held"))["success"] is True
    assert [s.message_id for s in radio.sent] == ["msg_held"]


async def test_nothing_reaches_the_radio_before_accept_ack(
    hub, start_client, tmp_path: Path
) -> None:
    hub.answer_accepted = False
    radio = FakeRadio(delivery_rate=0)
    phone = start_client(hub, radio)
    await hub.wait_session(1)
    await hub.send(send_sms("msg_wait"))
    await hub.wait_frame("accepted", id="msg_wait")
    await hub.round_trip()  # the phone has handled the command
    assert radio.sent == [] and phone.client.stats.radio_sends == 0
    assert phone.client.stats.confirmed == 0  # nothing was handed to the radio
    assert hub.frames("send_result", id="msg_wait") == []

    await hub.send({"type": "accept_ack", "id": "msg_wait"})
    assert (await hub.wait_frame("send_result", id="msg_wait"))["success"] is True
    assert [s.message_id for s in radio.sent] == ["msg_wait"]
    assert phone.client.stats.confirmed == 1

    # A second `accept_ack` (an answer to a replayed `accepted`) changes nothing.
    await hub.send({"type": "accept_ack", "id": "msg_wait"})
    await hub.round_trip()
    assert phone.client.stats.confirmed == 1  # not handed to the radio again
    assert len(radio.sent) == 1


async def test_stale_command_is_never_sent_even_after_reconnect_and_restart(
    hub, start_client, tmp_path: Path
) -> None:
    store_path = tmp_path / "phone.db"
    hub.stale_ids = {"msg_other"}
    radio = FakeRadio()
    phone = start_client(hub, radio, store_path)
    await hub.wait_session(1)
    await hub.send(send_sms("msg_other"))
    await hub.wait_frame("accepted", id="msg_other")
    await hub.until(lambda: phone.client.stats.reassigned == 1)
    assert phone.client.last_error is not None
    assert phone.client.last_error["code"] == "stale_command"

    store = await PhoneStore.open(store_path)
    record = await store.get_outbound("msg_other")
    await store.close()
    assert record is not None and record.state == REASSIGNED

    # Even a hub that would now confirm it is never asked again: the phone let it go.
    hub.stale_ids = set()
    hub.drop()
    await hub.wait_session(2)
    await phone.stop()
    radio_after_restart = FakeRadio()
    start_client(hub, radio_after_restart, store_path)
    await hub.wait_session(3)
    await hub.round_trip()

    assert [f.connection for f in hub.received if f.frame.get("id") == "msg_other"] == [1]
    assert hub.frames("send_result", id="msg_other") == []
    assert radio.sent == [] and radio_after_restart.sent == []


async def test_dropped_before_accept_ack_asks_again_and_sends_once(hub, start_client) -> None:
    hub.answer_accepted = False
    radio = FakeRadio(delivery_rate=0)
    phone = start_client(hub, radio)
    await hub.wait_session(1)
    await hub.send(send_sms("msg_unsure"))
    await hub.wait_frame("accepted", id="msg_unsure", connection=1)
    hub.drop()  # the answer to `accepted` is lost with the socket

    hub.answer_accepted = True
    await hub.wait_session(2)
    assert hub.frames("accepted", id="msg_unsure", connection=2) == [
        {"type": "accepted", "id": "msg_unsure"}
    ]
    result = await hub.wait_frame("send_result", id="msg_unsure")
    assert result == {"type": "send_result", "id": "msg_unsure", "success": True}
    assert [s.message_id for s in radio.sent] == ["msg_unsure"]
    assert phone.client.stats.radio_sends == 1 and phone.client.stats.confirmed == 1


async def test_accepted_that_could_not_be_written_is_held_until_the_reconnect(
    hub, start_client
) -> None:
    hub.answer_accepted = False
    radio = FakeRadio(delivery_rate=0)
    phone = start_client(hub, radio)
    await hub.wait_session(1)
    # The command arrives as the socket dies: its `accepted` may or may not get out.
    await hub.send(send_sms("msg_cut"))
    hub.drop()
    await hub.wait_session(2)
    await hub.round_trip()
    assert radio.sent == []  # nothing confirmed yet, on either socket
    assert phone.client.stats.confirmed == 0
    assert hub.frames("accepted", id="msg_cut", connection=2) == [
        {"type": "accepted", "id": "msg_cut"}
    ]

    await hub.send({"type": "accept_ack", "id": "msg_cut"})
    assert (await hub.wait_frame("send_result", id="msg_cut"))["success"] is True
    assert [s.message_id for s in radio.sent] == ["msg_cut"]


async def test_duplicate_send_sms_for_a_held_command_asks_again_without_sending(
    hub, start_client, tmp_path: Path
) -> None:
    hub.answer_accepted = False
    radio = FakeRadio(sims=fake_sims(2), delivery_rate=0)
    phone = start_client(hub, radio)
    await hub.wait_session(1)
    await hub.send(send_sms("msg_again", slot=0))
    await hub.wait_frame("accepted", id="msg_again")
    # Offered again (the ack timeout passed), from the other SIM this time.
    await hub.send(send_sms("msg_again", slot=1))
    await hub.wait_frame("accepted", id="msg_again", count=2)
    await hub.round_trip()
    assert len(hub.frames("accepted", id="msg_again")) == 2
    assert hub.frames("send_result", id="msg_again") == []
    assert radio.sent == [] and phone.client.stats.duplicate_commands == 1

    await hub.send({"type": "accept_ack", "id": "msg_again"})
    await hub.send({"type": "accept_ack", "id": "msg_again"})  # the answer to the second ask
    await hub.wait_frame("send_result", id="msg_again")
    await hub.round_trip()
    assert phone.client.stats.confirmed == 1  # the second answer handed nothing more over
    assert [(s.message_id, s.slot) for s in radio.sent] == [("msg_again", 1)]


async def test_stale_command_for_a_confirmed_command_changes_nothing(
    hub, start_client, tmp_path: Path
) -> None:
    radio = FakeRadio(latency_ms=300, delivery_rate=0)
    phone = start_client(hub, radio)
    await hub.wait_session(1)
    await hub.send(send_sms("msg_mine"))
    await hub.until(lambda: phone.client.stats.radio_sends == 1)
    await hub.send(
        {"type": "error", "code": "stale_command", "message": "finished", "id": "msg_mine"}
    )
    assert (await hub.wait_frame("send_result", id="msg_mine"))["success"] is True
    assert phone.client.stats.reassigned == 0


async def test_held_command_expired_when_confirmed_is_reported_not_sent(hub, start_client) -> None:
    hub.answer_accepted = False
    radio = FakeRadio()
    start_client(hub, radio)
    await hub.wait_session(1)
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    await hub.send(send_sms("msg_slow", expires_at=soon.isoformat()))
    await hub.wait_frame("accepted", id="msg_slow")
    await hub.until(lambda: datetime.now(UTC) > soon)  # it expires while held
    await hub.send({"type": "accept_ack", "id": "msg_slow"})
    result = await hub.wait_frame("send_result", id="msg_slow")
    assert result == {"type": "send_result", "id": "msg_slow", "success": False, "error": "expired"}
    assert radio.sent == []


async def test_ping_is_answered_with_a_heartbeat(hub, start_client) -> None:
    start_client(hub, FakeRadio(battery=55, charging=False, signal=2))
    first = await hub.wait_frame("heartbeat")
    assert first == {"type": "heartbeat", "battery": 55, "charging": False, "signal": 2}
    await hub.send({"type": "ping"})
    await hub.wait_frame("heartbeat", count=2)


async def test_heartbeat_repeats_every_interval(hub, start_client) -> None:
    start_client(hub, FakeRadio(), heartbeat_s=0.05)
    await hub.wait_frame("heartbeat", count=4, connection=1)


async def test_error_frame_is_logged_and_the_connection_stays(hub, start_client, caplog) -> None:
    phone = start_client(hub, FakeRadio())
    await hub.wait_session(1)
    await hub.send({"type": "error", "code": "rate_limited", "message": "slow down"})
    await hub.send(send_sms("msg_after_error"))
    await hub.wait_frame("send_result", id="msg_after_error")
    assert phone.client.last_error == {
        "type": "error",
        "code": "rate_limited",
        "message": "slow down",
    }
    assert phone.client.stats.connections == 1
    assert "rate_limited" in caplog.text


async def test_invalid_command_is_failed_not_sent(hub, start_client) -> None:
    radio = FakeRadio()
    start_client(hub, radio)
    await hub.wait_frame("hello")
    await hub.send({"type": "send_sms", "id": "msg_bad", "to": "", "body": "x"})
    result = await hub.wait_frame("send_result", id="msg_bad")
    assert result["success"] is False and result["error"] == "invalid_command"
    assert radio.sent == []


async def test_store_keeps_final_state(phone_store: PhoneStore) -> None:
    store = phone_store
    await store.add_outbound(id="m", to="+1", body="b", slot=None, sim=None, expires_at=None)
    assert not await store.mark_sending("m")  # held: not confirmed yet
    assert await store.confirm("m")
    assert not await store.confirm("m")
    assert not await store.mark_reassigned("m")  # a confirmed command is never taken back
    assert await store.mark_sending("m")
    assert not await store.mark_sending("m")
    await store.record_result("m", success=False, error="generic_failure")
    await store.record_result("m", success=True)  # a final state is never overwritten
    record = await store.get_outbound("m")
    assert record is not None and record.state == FAILED and record.error == "generic_failure"


async def test_store_held_commands_are_confirmed_or_let_go(phone_store: PhoneStore) -> None:
    store = phone_store
    for id in ("a", "b"):
        await store.add_outbound(id=id, to="+1", body="b", slot=0, sim=None, expires_at=None)
    assert [r.id for r in await store.outbound_in_state(HELD)] == ["a", "b"]
    assert await store.mark_reassigned("a")
    assert not await store.confirm("a")
    assert not await store.mark_sending("a")
    assert await store.unacked_results() == []  # nothing to report for a reassigned command
    # A new offer for a command never sent holds it again, under the new SIM.
    assert await store.reoffer("a", slot=1, sim=None, expires_at=None)
    record = await store.get_outbound("a")
    assert record is not None and record.state == HELD and record.slot == 1
    assert await store.confirm("a")
    assert not await store.reoffer("a", slot=0, sim=None, expires_at=None)  # confirmed: kept
    assert (await store.get_outbound("a")).state == ACCEPTED  # type: ignore[union-attr]
    # Old unconfirmed commands are pruned; a confirmed one without a result is kept.
    assert await store.prune(older_than_ms=2**62) == 1
    assert await store.get_outbound("b") is None
    assert await store.get_outbound("a") is not None


def test_server_url_becomes_the_hub_url() -> None:
    assert phone_ws_url("http://h:8000", "t") == "ws://h:8000/v1/phone/ws?token=t"
    assert phone_ws_url("https://h/", "t") == "wss://h/v1/phone/ws?token=t"
    assert phone_ws_url("wss://h/v1/phone/ws", "t") == "wss://h/v1/phone/ws?token=t"
    assert phone_ws_url("http://h/base", "t") == "ws://h/base/v1/phone/ws?token=t"
    token = "sw_dev_" + "ab" * 16
    assert redact_token(phone_ws_url("http://h", token)) == "ws://h/v1/phone/ws?token=***"
    with pytest.raises(ValueError):
        phone_ws_url("h:8000", "t")


async def test_stop_lets_a_radio_call_in_progress_finish(hub, start_client, tmp_path: Path):
    store_path = tmp_path / "phone.db"
    radio = FakeRadio(latency_ms=300, delivery_rate=0)
    phone = start_client(hub, radio, store_path)
    await hub.wait_frame("hello")
    await hub.send(send_sms("msg_in_flight"))
    await hub.until(lambda: phone.client.stats.radio_sends == 1)
    await phone.stop()

    store = await PhoneStore.open(store_path)
    record = await store.get_outbound("msg_in_flight")
    await store.close()
    assert record is not None and record.state == SENT
