"""uvicorn's sans-I/O WebSocket protocol, with three changes for sockets that live for hours.

- It lets go of the handshake once it is done. uvicorn keeps each socket's handshake —
  websockets' `Request` and `Response`, each with its `Headers`, a list per header name — for
  the socket's whole life, though nothing reads them after the `101` (the ASGI scope has its
  own copy of the request's headers). With 10,000 phones connected that was about 5 KiB of
  memory per phone (27.0 → 22.1 KiB per socket) and some 170,000 of the 570,000 objects every
  full garbage collection walks with the event loop stopped.
- The application may take a text message as it is parsed (`text_hook`), before it goes into
  the socket's ASGI queue. Most frames of an idle phone are heartbeats that need only a few
  fields set in memory; through the queue each also costs a queue hand-off, a wake-up of the
  socket's task and the resumption of every coroutine it waits in (about a third of what a
  heartbeat costs the server). The hook is asked only while the queue is empty, so it never
  overtakes a message waiting there, though it may one the application is still handling:
  it suits messages whose order does not matter. What it does not take goes through the
  queue as before.
- A read that is exactly one small, whole, masked text frame, arriving between frames, is
  unmasked here and offered to the hook without websockets' frame parser, a generator that
  costs more than the rest of a heartbeat's handling (at 10,000 idle phones nearly every
  read is one heartbeat). What the hook does not take is fed to the parser as it came, and
  the hook is asked again when the parser has it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import apply_mask
from websockets.protocol import State

# Given a complete text message's bytes (UTF-8, not yet checked), returns True if it has
# handled the message, which then does not reach the ASGI queue.
TextHook = Callable[[bytes], bool]

_FINAL_TEXT = 0x81  # FIN, no reserved bits, opcode 1 (text)
_MASKED = 0x80
_LENGTH_16 = 126  # the 7-bit length's marker of a 16-bit length


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """`WebSocketsSansIOProtocol`, without the handshake's request and response once the
    socket is accepted (uvicorn reads them only to write the `101`), and with `text_hook`."""

    text_hook: TextHook | None = None

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # websockets' frame parser keeps the request alive too: empty its headers.
            self.request.headers.clear()
            del self.request, self.response
        if message["type"] == "websocket.close":
            self.text_hook = None

    def data_received(self, data: bytes) -> None:
        hook = self.text_hook
        if hook is None or not self._took_whole_frame(data, hook):
            super().data_received(data)

    def _took_whole_frame(self, data: bytes, hook: TextHook) -> bool:
        """Whether `data` was one final masked text frame of at most 64 KiB, read between
        frames with nothing fragmented pending and no extension negotiated, that the hook
        took. The checks are the parser's own for such a frame; anything else is the
        parser's to read."""
        conn = self.conn
        if (
            len(data) < 6
            or data[0] != _FINAL_TEXT
            or conn.state is not State.OPEN
            or conn.extensions
            or conn.cur_size is not None
            or conn.reader.buffer
            or self.close_sent
            or not self.queue.empty()
        ):
            return False
        length = data[1] ^ _MASKED  # 128 or more when the frame is not masked
        start = 6
        if length == _LENGTH_16:
            length, start = int.from_bytes(data[2:4]), 8
        elif length > _LENGTH_16:
            return False
        if len(data) != start + length or (conn.max_size is not None and length > conn.max_size):
            return False
        return hook(apply_mask(data[start:], data[start - 4 : start]))

    def send_receive_event_to_app(self) -> None:
        hook = self.text_hook
        if (
            hook is not None
            and self.curr_msg_data_type == "text"
            and not self.close_sent
            and self.queue.empty()
        ):
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            if hook(data):
                self.frames = []
                return
        super().send_receive_event_to_app()

    def connection_lost(self, exc: Exception | None) -> None:
        self.text_hook = None
        super().connection_lost(exc)


def socket_options(max_frame_bytes: int) -> dict[str, Any]:
    """The WebSocket options of uvicorn's that `simwire serve` runs with (and the tests' live
    servers)."""
    return {
        "ws": WebSocketProtocol,
        "ws_max_size": max_frame_bytes,
        # Phone frames are small JSON; per-message deflate would cost each socket about 42 KiB
        # of compressor state (most of what a connected phone costs the server).
        "ws_per_message_deflate": False,
        # No protocol-level pings: the hub pings each phone silent for its ping interval and
        # closes one silent for the idle timeout, so these would only double the idle traffic.
        "ws_ping_interval": None,
    }
