"""What the instance holding a phone's socket keeps of it in memory: its live SIMs, each SIM's
send windows (parts per minute, hour, day), the messages in flight, and when it was last heard
from; and the choice, in one pass, of which queued messages go to which SIM now. The database
stays the record: all of it is rebuilt from there when the phone connects."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from app.services import outbound


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """Who a socket is: the device and its project."""

    id: str
    project_id: str


@dataclass(frozen=True, slots=True)
class LiveSim:
    """A SIM the phone reports now. `locked` is as of the last claim pass."""

    id: str
    slot: int
    number: str | None
    locked: bool = False


class SendWindow:
    """Parts given to one SIM within a rolling span: (when, parts, message id), oldest first."""

    __slots__ = ("entries", "limit", "span_s", "used")

    def __init__(self, limit: int, span_s: float) -> None:
        self.limit = limit
        self.span_s = span_s
        self.entries: list[tuple[float, int, str]] = []
        self.used = 0

    def room(self, now: float) -> int:
        cutoff = now - self.span_s
        entries = self.entries
        if entries and entries[0][0] < cutoff:
            keep = 0
            while keep < len(entries) and entries[keep][0] < cutoff:
                self.used -= entries[keep][1]
                keep += 1
            del entries[:keep]
        return self.limit - self.used

    def add(self, at: float, parts: int, message_id: str) -> None:
        if self.entries and self.entries[-1][0] > at:  # rebuilt out of order: keep it sorted
            self.entries.append((at, parts, message_id))
            self.entries.sort()
        else:
            self.entries.append((at, parts, message_id))
        self.used += parts

    def give_back(self, message_id: str) -> None:
        for index, (_, parts, held) in enumerate(self.entries):
            if held == message_id:
                del self.entries[index]
                self.used -= parts
                return

    def holds(self, message_id: str) -> bool:
        return any(held == message_id for _, _, held in self.entries)


def _windows(limits: outbound.RateLimits) -> list[tuple[int, float]]:
    spans = [
        (limits.parts_per_minute, 60.0),
        (limits.parts_per_hour, 3_600.0),
        (limits.parts_per_day, 86_400.0),
    ]
    return [(limit, span) for limit, span in spans if limit is not None]


def longest_span_s(limits: outbound.RateLimits) -> float:
    return max(span for _, span in _windows(limits))


@dataclass(slots=True, eq=False)
class PhoneState:
    """A connected phone's live state, owned by the instance holding its socket."""

    device: DeviceRef
    sims: list[LiveSim] = field(default_factory=list)
    ready: bool = False
    rotation: int = 0
    # SIM id → its windows; made on first use.
    windows: dict[str, list[SendWindow]] = field(default_factory=dict)
    # Message id → the SIM it was given to (None if it came to this phone without a dispatch).
    in_flight: dict[str, str | None] = field(default_factory=dict)

    def sim_windows(self, sim_id: str, limits: outbound.RateLimits) -> list[SendWindow]:
        windows = self.windows.get(sim_id)
        if windows is None:
            windows = self.windows[sim_id] = [SendWindow(n, s) for n, s in _windows(limits)]
        return windows

    def room(self, sim_id: str, limits: outbound.RateLimits, now: float) -> int:
        windows = self.windows.get(sim_id)
        if windows is None:
            return limits.smallest_window
        return min(window.room(now) for window in windows)

    def dispatched(
        self, message_id: str, sim_id: str, parts: int, at: float, limits: outbound.RateLimits
    ) -> None:
        self.in_flight[message_id] = sim_id
        for window in self.sim_windows(sim_id, limits):
            window.add(at, parts, message_id)

    def requeued(self, message_id: str) -> None:
        """The message went back to the queue: not in flight, and its parts are given back."""
        sim_id = self.in_flight.pop(message_id, None)
        if sim_id is not None:
            for window in self.windows.get(sim_id, ()):
                window.give_back(message_id)

    def rebuild(
        self,
        sims: list[LiveSim],
        in_flight: dict[str, str | None],
        dispatched: list[outbound.Dispatched],
        limits: outbound.RateLimits,
    ) -> None:
        """Takes the database's view (as `outbound.live_state` read it) and keeps anything this
        instance did meanwhile: a claim committed after that read is counted once, not lost."""
        self.sims = sims
        for message_id, sim_id in in_flight.items():
            self.in_flight.setdefault(message_id, sim_id)
        for row in dispatched:
            windows = self.sim_windows(row.sim_id, limits)
            if not windows[0].holds(row.message_id):
                for window in windows:
                    window.add(_epoch(row.dispatched_at), row.segment_count, row.message_id)
        self.ready = True


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


@dataclass(slots=True)
class _Slot:
    phone: PhoneState
    sim: LiveSim


class ClaimPlan:
    """One claim pass over a project's ready phones (in the order given): how many candidates
    to read, and `plan`, which gives them out round-robin over phones and their SIMs within
    each SIM's window room and each phone's in-flight cap, pinned messages only to their SIM,
    unpinned ones only to unlocked SIMs. Phones are looked at lazily, in turn, so a pass that
    gives out a few messages costs a few phones' look, not all of them. `plan` changes no
    phone: the hub records the claims after they are committed."""

    def __init__(
        self, phones: Sequence[PhoneState], limits: outbound.RateLimits, now: float
    ) -> None:
        self.phones = phones
        self.limits = limits
        self.now = now
        cap = limits.device_max_in_flight
        self.free = sum(cap - len(p.in_flight) for p in phones if len(p.in_flight) < cap)

    @property
    def max_candidates(self) -> int:
        return 0 if self.free <= 0 else min(max(self.free * 2, 20), 5_000)

    def plan(
        self, candidates: list[outbound.Candidate], locked: frozenset[str]
    ) -> list[outbound.Claim]:
        limits, now = self.limits, self.now
        capacity: dict[str, int] = {}
        room: dict[tuple[str, str], int] = {}
        seen: list[_Slot] = []  # every slot looked at so far, in turn order
        unused: deque[_Slot] = deque()  # looked at (by a pinned search) but not yet offered
        offered: deque[_Slot] = deque()  # offered one message already, in turn order

        def slots() -> Iterator[_Slot]:
            for phone in self.phones:
                free = limits.device_max_in_flight - len(phone.in_flight)
                if free <= 0 or not phone.sims:
                    continue
                capacity[phone.device.id] = free
                sims = phone.sims
                start = phone.rotation % len(sims)
                for sim in sims[start:] + sims[:start]:
                    left = phone.room(sim.id, limits, now)
                    if left > 0:
                        room[(phone.device.id, sim.id)] = left
                        slot = _Slot(phone, sim)
                        seen.append(slot)
                        yield slot

        fresh = slots()

        def usable(slot: _Slot, need: int) -> bool:
            key = (slot.phone.device.id, slot.sim.id)
            return capacity[key[0]] > 0 and room[key] >= need

        def unpinned(need: int) -> _Slot | None:
            # First every phone once, in turn; then again those with room left.
            while True:
                slot = unused.popleft() if unused else next(fresh, None)
                if slot is None:
                    break
                if slot.sim.id in locked:
                    continue
                offered.append(slot)
                if usable(slot, need):
                    return slot
            for _ in range(len(offered)):
                slot = offered.popleft()
                key = (slot.phone.device.id, slot.sim.id)
                if capacity[key[0]] <= 0 or room[key] <= 0:
                    continue  # used up for this pass: dropped
                offered.append(slot)
                if room[key] >= need:
                    return slot
            return None

        def pinned(selector: str, need: int) -> _Slot | None:
            for slot in seen:
                if usable(slot, need) and outbound.sim_matches(selector, slot.sim):
                    return slot
            for slot in fresh:
                unused.append(slot)
                if usable(slot, need) and outbound.sim_matches(selector, slot.sim):
                    return slot
            return None

        smallest = limits.smallest_window
        claims: list[outbound.Claim] = []
        given = 0
        for message in candidates:
            # A message longer than the smallest window still goes out, alone in a fresh window.
            need = min(message.segment_count, smallest)
            selector = message.sim_selector
            chosen = pinned(selector, need) if selector else unpinned(need)
            if chosen is None:
                continue
            key = (chosen.phone.device.id, chosen.sim.id)
            capacity[key[0]] -= 1
            room[key] -= need
            claims.append(outbound.Claim(message, key[0], key[1]))
            given += 1
            if given >= self.free:
                break
        return claims
