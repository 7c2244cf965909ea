"""Phone protocol frames (JSON text, each with `type`): decoding what phones send, building
what the server sends. docs/phone-protocol.md is the reader's version of this file."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from app.domain.text import NO_NUL_PATTERN, storable
from app.json_limits import MAX_JSON_DEPTH, json_too_deep
from app.services.ids import iso_utc

# Close codes the server uses.
CLOSE_INVALID_TOKEN = 4401
CLOSE_REVOKED = 4403
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_REPLACED = 4409
CLOSE_IDLE = 4000


# What a phone may report, bounded so that every value fits its column on every engine
# (PostgreSQL refuses NUL in text and integers past 2**31 - 1 in integer columns).
MAX_SIMS = 16
MAX_SLOT = 99  # slots are small: a `sim` selector of one or two digits names one
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

# `gt=-1` rather than `ge=0`: the same bound for integers, but Litestar leaves a lower bound of
# 0 out of the OpenAPI document (it skips falsy constraints), and the document must say it.
Slot = Annotated[int, msgspec.Meta(gt=-1, le=MAX_SLOT)]
TimeMs = Annotated[int, msgspec.Meta(gt=-1, le=MAX_TIME_MS)]
Text64 = Annotated[str, msgspec.Meta(max_length=64, pattern=NO_NUL_PATTERN)]
Text200 = Annotated[str, msgspec.Meta(max_length=200, pattern=NO_NUL_PATTERN)]
PhoneSideId = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)]


class SimReport(msgspec.Struct):
    slot: Slot
    number: Text64 | None = None
    carrier: Text200 | None = None
    iccid: Text64 | None = None


SimList = Annotated[list[SimReport], msgspec.Meta(max_length=MAX_SIMS)]


class DeviceInfo(msgspec.Struct):
    """Descriptive only: stored cut to size, NUL replaced (see devices.device_connected)."""

    model: str | None = None
    os: str | None = None
    app_version: str | None = None


class Auth(msgspec.Struct, tag="auth", tag_field="type"):
    token: str


class Hello(msgspec.Struct, tag="hello", tag_field="type"):
    device: DeviceInfo | None = None
    sims: SimList = []


class Sims(msgspec.Struct, tag="sims", tag_field="type"):
    sims: SimList


class InboundSms(msgspec.Struct):
    """A received SMS. `address` and `body` are taken whatever they hold (a real SMS is never
    refused; NUL is replaced when stored); the phone's id, the time and the slot must be sane."""

    id: PhoneSideId
    address: str
    body: str
    date: TimeMs | None = None
    sim_slot: Slot | None = None


class Inbound(msgspec.Struct, tag="inbound", tag_field="type"):
    message: InboundSms


class Accepted(msgspec.Struct, tag="accepted", tag_field="type"):
    id: Text200


class SendResult(msgspec.Struct, tag="send_result", tag_field="type"):
    id: Text200
    success: bool
    error: str | None = None

    def __post_init__(self) -> None:
        # A radio's own words: kept (cut to size where stored), never a reason to lose a result.
        if self.error is not None:
            self.error = storable(self.error)


class DeliveryReport(msgspec.Struct, tag="delivery_report", tag_field="type"):
    id: Text200
    delivered: bool
    at: TimeMs | None = None


class Heartbeat(msgspec.Struct, tag="heartbeat", tag_field="type"):
    battery: Annotated[int, msgspec.Meta(gt=-1, le=100)] | None = None
    charging: bool | None = None
    signal: Annotated[int, msgspec.Meta(gt=-1, le=4)] | None = None


PhoneFrame = Auth | Hello | Sims | Inbound | Accepted | SendResult | DeliveryReport | Heartbeat
_decoder = msgspec.json.Decoder(PhoneFrame)


class FrameError(ValueError):
    """A frame the server cannot use; answered with an `error` frame, the socket stays up.
    `refs` name what was refused, when it can be read: `frame` (its type) and `id` (the
    inbound SMS's or the message's id), so a phone can tell which queued item it was."""

    def __init__(self, code: str, message: str, refs: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.refs = refs or {}

    def as_frame(self) -> str:
        return frame("error", code=self.code, message=self.message, **self.refs)


def _refs(raw: str | bytes) -> dict[str, str]:
    """`frame` and `id` of a frame that failed validation, read without its schema."""
    try:
        document = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {}
    if not isinstance(document, dict):
        return {}
    refs = {}
    kind = document.get("type")
    if isinstance(kind, str):
        refs["frame"] = kind
    item = document.get("message") if kind == "inbound" else document
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        refs["id"] = item["id"]
    return refs


def decode_frame(raw: str | bytes) -> PhoneFrame:
    """The frame in `raw`; FrameError (answered with an `error` frame) for anything unusable.
    Nesting is bounded before the decoder sees the text, so no frame can exhaust the stack."""
    if json_too_deep(raw):
        raise FrameError(
            "invalid_frame", f"the frame nests JSON more than {MAX_JSON_DEPTH} levels deep"
        )
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "`$.type`" in text or "missing required field `type`" in text.lower():
            raise FrameError("unknown_frame", f"unknown or missing frame type: {text}") from None
        text = text.replace(f"matching regex {NO_NUL_PATTERN!r}", "without NUL (U+0000)")
        raise FrameError("invalid_frame", text, _refs(raw)) from None
    except msgspec.DecodeError as exc:
        raise FrameError("malformed_frame", f"not a JSON object: {exc}") from None


def ms_to_datetime(value: int | None) -> datetime | None:
    from datetime import UTC

    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def frame(frame_type: str, /, **fields: Any) -> str:
    return msgspec.json.encode({"type": frame_type, **fields}).decode()


def send_sms_frame(
    message_id: str,
    to: str,
    body: str,
    sim_number: str | None,
    slot: int,
    expires_at: datetime | None,
) -> str:
    return frame(
        "send_sms",
        id=message_id,
        to=to,
        body=body,
        sim=sim_number,
        slot=slot,
        expires_at=iso_utc(expires_at) if expires_at else None,
    )
