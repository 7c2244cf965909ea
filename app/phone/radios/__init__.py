"""The radio a phone client sends through: the contract every backend (fake, termux) fulfils."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class SimInfo:
    """One SIM as the phone reports it; `number` may be empty or national (carriers hide it)."""

    slot: int
    number: str | None = None
    carrier: str | None = None
    iccid: str | None = None

    def to_wire(self) -> dict[str, object]:
        return {
            "slot": self.slot,
            "number": self.number,
            "carrier": self.carrier,
            "iccid": self.iccid,
        }


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the radio said about one send.

    `error` is a snake_case reason when `success` is false. `delivered_later` is true when a
    delivery report for this message will follow on `delivery_reports()`.
    """

    success: bool
    error: str | None = None
    delivered_later: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The network's word on a sent message; `at_ms` is Unix time in milliseconds."""

    message_id: str
    delivered: bool
    at_ms: int


@dataclass(frozen=True, slots=True)
class InboundSms:
    """A received SMS. `id` is the phone-side id, stable across restarts (the server dedups on it).

    `address` is the sender as the network gave it: a number, a short code or an alphanumeric id.
    """

    id: str
    address: str
    body: str
    date_ms: int
    sim_slot: int | None

    def to_wire(self) -> dict[str, object]:
        return {
            "id": self.id,
            "address": self.address,
            "body": self.body,
            "date": self.date_ms,
            "sim_slot": self.sim_slot,
        }


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """Health figures for a heartbeat: battery in percent, signal as Android's 0–4 level."""

    battery: int | None = None
    charging: bool | None = None
    signal: int | None = None


class RadioState(Protocol):
    """Durable key/value space where a radio remembers where it stopped (e.g. last SMS id)."""

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...


@runtime_checkable
class Radio(Protocol):
    """A way to send and receive SMS.

    `send` is called at most once per message id by the client; `message_id` is passed so that a
    backend able to report delivery can tag its report with it. `inbound(state)` and
    `delivery_reports()` are each consumed by one task for the life of the client; `inbound`
    should advance any cursor in `state` only when the consumer asks for the next item, which
    happens after the previous one was stored.
    """

    async def list_sims(self) -> list[SimInfo]: ...

    async def send(self, to: str, body: str, slot: int | None, message_id: str) -> SendOutcome: ...

    def inbound(self, state: RadioState) -> AsyncIterator[InboundSms]: ...

    def delivery_reports(self) -> AsyncIterator[DeliveryReport]: ...

    async def device_status(self) -> DeviceStatus: ...

    async def aclose(self) -> None: ...


__all__ = [
    "DeliveryReport",
    "DeviceStatus",
    "InboundSms",
    "Radio",
    "RadioState",
    "SendOutcome",
    "SimInfo",
]
