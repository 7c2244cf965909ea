"""uvicorn's sans-I/O WebSocket protocol, with two changes for sockets that live for hours.

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
  queue as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# Given a complete text message's bytes (UTF-8, not yet checked), returns True if it has
# handled the message, which then does not reach the ASGI queue.
TextHook = Callable[[bytes], bool]


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
