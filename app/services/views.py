"""What callers see of stored rows: a message with its SIM's number, a request with the counts
callers poll for, a device with its SIMs, and the API objects (msgspec) made from them. One
mapping each, shared by the API, the CLI and the event outbox (an event's `data` is the object
exactly as the API returns it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from app.db.models import Device, Message, MessageRequest, Sim
from app.domain import statuses

SENT_STATUSES = (statuses.SENT, statuses.DELIVERED)
# Not yet out of a radio: waiting for a phone, pushed to one, or held by one.
PENDING_STATUSES = (statuses.QUEUED, statuses.SENDING, statuses.ACCEPTED)


class MessageValues:
    """A `messages` row as plain values (from a Core row's mapping, or the dict a batch
    inserts), read like a Message; a column the mapping lacks reads as None. Far cheaper to
    make and read than a Message, whose ORM instrumentation the batched paths cannot afford
    per row."""

    __slots__ = tuple(column.name for column in Message.metadata.tables["messages"].c)

    def __init__(self, values: Mapping[str, Any]) -> None:
        for name in self.__slots__:
            setattr(self, name, values.get(name))

    def __getattr__(self, name: str) -> Any:  # reached only for a name that is no column
        raise AttributeError(name)


@dataclass(frozen=True)
class MessageRecord:
    """A message with the number of the SIM it went through (an outbound row keeps no sender
    of its own until a phone reports one)."""

    message: Message | MessageValues
    sim_number: str | None = None

    @property
    def sender(self) -> str | None:
        if self.message.from_number or self.message.direction == "in":
            return self.message.from_number
        return self.sim_number


@dataclass(frozen=True)
class RequestView:
    """One request and its messages, oldest first, with the counts callers poll for."""

    request: MessageRequest
    records: list[MessageRecord]
    status: str
    delivered: int
    sent: int
    failed: int
    queued: int


def request_view(request: MessageRequest, records: list[MessageRecord]) -> RequestView:
    """`records` oldest first; the status is `statuses.request_status` of theirs."""
    found = [record.message.status for record in records]
    return RequestView(
        request=request,
        records=records,
        status=statuses.request_status(found),
        delivered=sum(s == statuses.DELIVERED for s in found),
        sent=sum(s in SENT_STATUSES for s in found),
        failed=sum(s in statuses.REFUNDABLE_STATUSES for s in found),
        queued=sum(s in PENDING_STATUSES for s in found),
    )


class MessageOut(msgspec.Struct):
    """One SMS. Outbound: `from` is the SIM it went through (null until one is chosen).
    Inbound: `from` is the sender as the phone reported it, `to` the receiving SIM's number,
    `status` is `received`, and `in_reply_to` names the latest message the project sent to
    that sender on that SIM within the 7 days before (null when none, and for outbound)."""

    id: str
    request_id: str | None
    direction: str
    status: str
    to: str
    from_: str | None = msgspec.field(name="from")
    body: str
    encoding: str
    segments: int
    price_atomic: int
    """Price in USDC atomic units (6 decimals)."""
    tag: str | None
    sim_id: str | None
    device_id: str | None
    attempts: int
    error_code: str | None
    archived: bool
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None
    expires_at: datetime | None
    in_reply_to: str | None


class RequestOut(msgspec.Struct):
    """`failed` counts messages that did not get out (failed, expired or canceled; refunded);
    `sent` those that did (sent or delivered); `queued` those not out yet."""

    request_id: str
    status: str
    billing: str
    total: int
    delivered: int
    sent: int
    failed: int
    queued: int
    total_atomic: int
    created_at: datetime
    messages: list[MessageOut]


class SimOut(msgspec.Struct):
    id: str
    device_id: str
    slot: int
    number: str | None
    carrier: str | None
    live: bool
    locked: bool


class DeviceOut(msgspec.Struct):
    id: str
    name: str
    online: bool
    last_seen_at: datetime | None
    connected_at: datetime | None
    battery: int | None
    charging: bool | None
    signal: int | None
    model: str | None
    os: str | None
    os_version: str | None
    """The same as `os`, under the name other gateways use."""
    app_version: str | None
    sims: list[SimOut]
    created_at: datetime


def message_out(record: MessageRecord) -> MessageOut:
    message = record.message
    return MessageOut(
        id=message.id,
        request_id=message.request_id,
        direction=message.direction,
        status=message.status,
        to=message.to_number,
        from_=record.sender,
        body=message.body,
        encoding=message.encoding,
        segments=message.segment_count,
        price_atomic=message.price_atomic,
        tag=message.tag,
        sim_id=message.sim_id,
        device_id=message.device_id,
        attempts=message.attempts,
        error_code=message.error_code,
        archived=message.archived,
        created_at=message.created_at,
        sent_at=message.sent_at,
        delivered_at=message.delivered_at,
        failed_at=message.failed_at,
        expires_at=message.expires_at,
        in_reply_to=message.in_reply_to if message.direction == "in" else None,
    )


def request_out(view: RequestView) -> RequestOut:
    return RequestOut(
        request_id=view.request.id,
        status=view.status,
        billing=view.request.billing,
        total=len(view.records),
        delivered=view.delivered,
        sent=view.sent,
        failed=view.failed,
        queued=view.queued,
        total_atomic=view.request.total_atomic,
        created_at=view.request.created_at,
        messages=[message_out(record) for record in view.records],
    )


def sim_out(sim: Sim) -> SimOut:
    return SimOut(sim.id, sim.device_id, sim.slot, sim.number, sim.carrier, sim.live, sim.locked)


def device_fields(device: Device, sims: list[Sim], online: bool) -> dict[str, Any]:
    """A device as `GET /v1/devices` lists it; `online` is the caller's to decide (it depends
    on the clock and the idle timeout, see devices.device_is_online)."""
    return {
        "id": device.id,
        "name": device.name,
        "online": online,
        "last_seen_at": device.last_seen_at,
        "connected_at": device.connected_at,
        "battery": device.battery,
        "charging": device.charging,
        "signal": device.signal,
        "model": device.model,
        "os": device.os,
        "os_version": device.os,
        "app_version": device.app_version,
        "sims": [sim_out(s) for s in sims],
        "created_at": device.created_at,
    }


def device_out(device: Device, sims: list[Sim], online: bool) -> DeviceOut:
    return DeviceOut(**device_fields(device, sims, online))


def as_data(obj: msgspec.Struct) -> dict[str, Any]:
    """An API object as the JSON-ready dict an event carries (what the API would send)."""
    data: dict[str, Any] = msgspec.to_builtins(obj)
    return data
