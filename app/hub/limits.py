"""Per-device budgets on the phone channel: frames of any kind, and inbound SMS. Over a budget
the server waits before it reads on, so a flooding phone is slowed to the budget while its
frames wait in its own socket: nothing is dropped, nothing is lost, no protocol change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from app.domain.ratelimit import Buckets, Rate
from app.logs import get_logger
from app.settings import Settings

log = get_logger("simwire.hub")

_LOG_EVERY_S = 60.0


class PhoneLimits:
    """The frame and inbound budgets of every device connected to this process."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.enabled = settings.rate_limits
        self.clock = clock
        self.sleep = sleep
        self.frames = Buckets(
            Rate(settings.rate_limit_phone_frames_per_s, settings.rate_limit_phone_frames_burst)
        )
        self.inbound = Buckets(
            Rate.per_minute(
                settings.rate_limit_inbound_per_minute, settings.rate_limit_inbound_burst
            )
        )
        self.waited_s = 0.0  # in total, for tests and for the curious
        self._logged: dict[str, float] = {}

    async def frame(self, device_id: str) -> None:
        """Returns once the device may have one more frame handled."""
        await self._wait(self.frames, device_id, "frames")

    def try_frame(self, device_id: str) -> bool:
        """Takes one frame from the device's budget if it has one now; never waits."""
        return not self.enabled or self.frames.take(device_id, self.clock()).allowed

    async def inbound_sms(self, device_id: str) -> None:
        """Returns once the device may have one more inbound SMS stored."""
        await self._wait(self.inbound, device_id, "inbound")

    def inbound_allowance(self, device_id: str, wanted: int) -> tuple[int, float]:
        """For a batch: how many of `wanted` inbound SMS may be stored now (taken from the
        budget), and when there is room for one more if that is none."""
        if not self.enabled:
            return wanted, 0.0
        allowed, retry_after_s = 0, 0.0
        now = self.clock()
        while allowed < wanted:
            decision = self.inbound.take(device_id, now)
            if not decision.allowed:
                retry_after_s = decision.retry_after_s
                break
            allowed += 1
        return allowed, retry_after_s

    async def _wait(self, buckets: Buckets, device_id: str, budget: str) -> None:
        if not self.enabled:
            return
        while True:
            decision = buckets.take(device_id, self.clock())
            if decision.allowed:
                return
            self._note(device_id, budget)
            self.waited_s += decision.retry_after_s
            await self.sleep(decision.retry_after_s)

    def _note(self, device_id: str, budget: str) -> None:
        now = self.clock()
        if now - self._logged.get(device_id, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            if len(self._logged) > 10_000:
                self._logged.clear()
            self._logged[device_id] = now
            log.warning("phone_throttled", device_id=device_id, budget=budget)
