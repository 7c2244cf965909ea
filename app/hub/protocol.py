"""Phone protocol frames (JSON text, each with `type`): decoding what phones send, building
what the server sends. docs/phone-protocol.md is the reader's version of this file."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from app.json_limits import MAX_JSON_DEPTH, json_too_deep

# Close codes the server uses.
CLOSE_INVALID_TOKEN = 4401
CLOSE_REVOKED = 4403
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_REPLACED = 4409
CLOSE_IDLE = 4000


class SimReport(msgspec.Struct):
    slot: int
    number: str | None = None
    carrier: str | None = None
    iccid: str | None = None


class DeviceInfo(msgspec.Struct):
    model: str | None = None
    os: str | None = None
    app_version: str | None = None


class Auth(msgspec.Struct, tag="auth", tag_field="type"):
    token: str


class Hello(msgspec.Struct, tag="hello", tag_field="type"):
    device: DeviceInfo | None = None
    sims: list[SimReport] = []


class Sims(msgspec.Struct, tag="sims", tag_field="type"):
    sims: list[SimReport]


class InboundSms(msgspec.Struct):
    id: str
    address: str
    body: str
    date: int | None = None
    sim_slot: int | None = None


class Inbound(msgspec.Struct, tag="inbound", tag_field="type"):
    message: InboundSms


class Accepted(msgspec.Struct, tag="accepted", tag_field="type"):
    id: str


class SendResult(msgspec.Struct, tag="send_result", tag_field="type"):
    id: str
    success: bool
    error: str | None = None


class DeliveryReport(msgspec.Struct, tag="delivery_report", tag_field="type"):
    id: str
    delivered: bool
    at: int | None = None


class Heartbeat(msgspec.Struct, tag="heartbeat", tag_field="type"):
    battery: int | None = None
    charging: bool | None = None
    signal: int | None = None


PhoneFrame = Auth | Hello | Sims | Inbound | Accepted | SendResult | DeliveryReport | Heartbeat
_decoder = msgspec.json.Decoder(PhoneFrame)


class FrameError(ValueError):
    """A frame the server cannot use; answered with an `error` frame, the socket stays up."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
        raise FrameError("invalid_frame", text) from None
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
        expires_at=expires_at.isoformat().replace("+00:00", "Z") if expires_at else None,
    )
