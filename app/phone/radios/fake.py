"""An in-memory radio for tests, demos and load runs: set latency, failures and delivery."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from app.phone.radios import (
    DeliveryReport,
    DeviceStatus,
    InboundSms,
    RadioState,
    SendOutcome,
    SimInfo,
)


@dataclass(frozen=True, slots=True)
class FakeSend:
    """One call to `FakeRadio.send`, as recorded in `FakeRadio.sent`."""

    message_id: str
    to: str
    body: str
    slot: int | None
    success: bool
    at_ms: int


def fake_sims(count: int) -> list[SimInfo]:
    """`count` made-up SIMs in slots 0..count-1 with reserved-for-fiction US numbers."""
    return [
        SimInfo(
            slot=slot,
            number=f"+1555010{slot:04d}",
            carrier="Fake Mobile",
            iccid=f"8901000000000000{slot:04d}",
        )
        for slot in range(count)
    ]


class FakeRadio:
    """A radio that sends nowhere.

    `failure_rate` is the share of sends that fail with `generic_failure`; `delivery_rate` the
    share of successful sends that later get a positive delivery report, `delivery_delay_ms` after
    the send (the others get none). `seed` makes those draws repeatable. Every send is appended to
    `sent`; `receive()` injects an inbound SMS as if the network had delivered it.
    """

    def __init__(
        self,
        *,
        latency_ms: float = 0,
        failure_rate: float = 0.0,
        delivery_rate: float = 1.0,
        delivery_delay_ms: float = 0,
        sims: Sequence[SimInfo] | None = None,
        seed: int | None = None,
        battery: int = 100,
        charging: bool = True,
        signal: int = 4,
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0 or not 0.0 <= delivery_rate <= 1.0:
            raise ValueError("failure_rate and delivery_rate are shares between 0 and 1")
        self.latency_ms = latency_ms
        self.failure_rate = failure_rate
        self.delivery_rate = delivery_rate
        self.delivery_delay_ms = delivery_delay_ms
        self.sims: list[SimInfo] = list(sims) if sims is not None else fake_sims(1)
        self.status = DeviceStatus(battery=battery, charging=charging, signal=signal)
        self.sent: list[FakeSend] = []
        self._rng = random.Random(seed)
        self._inbound: asyncio.Queue[InboundSms] = asyncio.Queue()
        self._reports: asyncio.Queue[DeliveryReport] = asyncio.Queue()
        self._timers: set[asyncio.TimerHandle] = set()

    async def list_sims(self) -> list[SimInfo]:
        return list(self.sims)

    async def send(self, to: str, body: str, slot: int | None, message_id: str) -> SendOutcome:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        success = self._rng.random() >= self.failure_rate
        self.sent.append(FakeSend(message_id, to, body, slot, success, _now_ms()))
        if not success:
            return SendOutcome(success=False, error="generic_failure")
        if self._rng.random() >= self.delivery_rate:
            return SendOutcome(success=True)
        self._schedule_delivery(message_id)
        return SendOutcome(success=True, delivered_later=True)

    async def receive(
        self, address: str, body: str, slot: int | None = 0, *, date_ms: int | None = None
    ) -> str:
        """Inject an inbound SMS; returns its phone-side id."""
        sms = InboundSms(
            id=f"fake_{uuid.uuid4().hex[:20]}",
            address=address,
            body=body,
            date_ms=date_ms if date_ms is not None else _now_ms(),
            sim_slot=slot,
        )
        await self._inbound.put(sms)
        return sms.id

    async def inbound(self, state: RadioState) -> AsyncIterator[InboundSms]:
        while True:
            yield await self._inbound.get()

    async def delivery_reports(self) -> AsyncIterator[DeliveryReport]:
        while True:
            yield await self._reports.get()

    async def device_status(self) -> DeviceStatus:
        return self.status

    async def aclose(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _schedule_delivery(self, message_id: str) -> None:
        loop = asyncio.get_running_loop()

        def report() -> None:
            self._timers.discard(timer)
            self._reports.put_nowait(DeliveryReport(message_id, True, _now_ms()))

        timer = loop.call_later(self.delivery_delay_ms / 1000, report)
        self._timers.add(timer)


def _now_ms() -> int:
    return int(time.time() * 1000)
