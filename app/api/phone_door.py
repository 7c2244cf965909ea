"""The phone socket's way in. A phone's WebSocket at `/v1/phone/ws` goes to the hub on the
server's own ASGI calls (app/hub/socket.py says why), past the request rate limits that guard
its handshake and count its wrong tokens; everything else goes through Litestar."""

from __future__ import annotations

from litestar import Litestar
from litestar.types import (
    ASGIApp,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Receive,
    Scope,
    Send,
)

from app.api.ratelimit import RateLimitMiddleware
from app.hub import socket
from app.hub.hub import Hub


class SimwireApp(Litestar):
    """Litestar, with the phone socket taken before routing."""

    phone_door: ASGIApp | None = None

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        door = self.phone_door
        if door is not None and scope["type"] == "websocket" and _is_phone_path(scope["path"]):
            await door(scope, receive, send)  # type: ignore[arg-type]
            return
        await super().__call__(scope, receive, send)


def phone_door(hub: Hub, rate_limit: RateLimitMiddleware) -> ASGIApp:
    async def serve_phone(scope: Scope, receive: Receive, send: Send) -> None:
        await hub.serve(socket.PhoneSocket(scope, receive, send))

    async def door(scope: Scope, receive: Receive, send: Send) -> None:
        await rate_limit.handle(scope, receive, send, serve_phone)

    return door


def _is_phone_path(path: str) -> bool:
    return path == socket.PATH or path == socket.PATH + "/"
