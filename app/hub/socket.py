"""A phone's WebSocket on the server's own ASGI calls.

A phone socket lives for hours, and everything its connection is wrapped in lives as long.
Through the framework's router, its middlewares and its `WebSocket` object, each connected phone
held 13 of the framework's objects and suspended coroutines (tests/integration/test_phone_door.py
counts them) for the garbage collector to walk, about 5 KiB of memory in all. The phone channel
needs none of it: it reads frames and writes frames. app/api/phone_door.py hands the socket's
ASGI calls here directly, after the request rate limits (app/api/ratelimit.py) have let the
handshake through."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from litestar.types import Receive, Scope, Send

from app.hub.ws_protocol import TextHook, WebSocketProtocol

PATH = "/v1/phone/ws"


class SocketGone(Exception):
    """The socket is closed (by the phone or by us): nothing more can be sent on it."""


class PhoneSocket:
    """What the hub uses of a WebSocket: accept, receive events, send text, close."""

    __slots__ = ("_receive", "_send", "closed", "query_string")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send: Any = send  # takes the plain event dicts below
        self.query_string: bytes = scope.get("query_string", b"")
        self.closed = False

    def query_param(self, name: str) -> str | None:
        values = parse_qs(self.query_string.decode("latin-1")).get(name)
        return values[0] if values else None

    async def accept(self) -> None:
        """Completes the handshake. Raises SocketGone if the phone left before it."""
        event = await self._receive()
        if event["type"] != "websocket.connect":
            self.closed = True
            raise SocketGone(event["type"])
        await self._send({"type": "websocket.accept"})

    async def receive(self) -> Any:
        """The next ASGI event: `websocket.receive` with `text` or `bytes`, or
        `websocket.disconnect` (after which the socket is closed)."""
        event = await self._receive()
        if event["type"] == "websocket.disconnect":
            self.closed = True
        return event

    def take_text(self, hook: TextHook) -> bool:
        """Has the server's protocol hand text messages to `hook` as they arrive (see
        app/hub/ws_protocol.py); False when it cannot (another server), and then every message
        comes through `receive`."""
        protocol = getattr(self._receive, "__self__", None)
        if not isinstance(protocol, WebSocketProtocol):
            return False
        protocol.text_hook = hook
        return True

    async def send_text(self, text: str) -> None:
        if self.closed:
            raise SocketGone("closed")
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Closes the socket once; closing a closed socket does nothing."""
        if self.closed:
            return
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})
