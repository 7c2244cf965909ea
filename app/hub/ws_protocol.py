"""uvicorn's sans-I/O WebSocket protocol, letting go of the handshake once it is done.

uvicorn keeps each socket's handshake — websockets' `Request` and `Response`, each with its
`Headers`, a list per header name — for the socket's whole life, though nothing reads them
after the `101` (the ASGI scope has its own copy of the request's headers). A phone socket
lives for hours: with 10,000 phones connected that was about 5 KiB of memory per phone
(27.0 → 22.1 KiB per socket) and some 170,000 of the 570,000 objects every full garbage
collection walks with the event loop stopped."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """`WebSocketsSansIOProtocol`, without the handshake's request and response once the
    socket is accepted (uvicorn reads them only to write the `101`)."""

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # websockets' frame parser keeps the request alive too: empty its headers.
            self.request.headers.clear()
            del self.request, self.response
