"""Refuses, before any route runs, input no route can use: a URL holding NUL (no id or filter
does, and PostgreSQL cannot compare text with it) and JSON nested more than `MAX_JSON_DEPTH`."""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from app.domain.errors import InvalidBody, InvalidInput
from app.domain.text import has_nul
from app.json_limits import MAX_JSON_DEPTH, json_too_deep

TOO_DEEP_MESSAGE = (
    f"the JSON body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep "
    "(or leaves that many unclosed)"
)


class InputGuardMiddleware(ASGIMiddleware):
    """A path or query string with NUL (`%00`) is 400 `invalid_input` at once. The body is
    watched as the route reads it (so nothing is read that the route would not read, and the
    body size limit still applies first); once the last chunk is in, a body nested too deep
    raises `InvalidBody`, which the route's error handling answers with 400 `invalid_body`.
    Every route is covered, whatever its handler parses."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if has_nul(scope["path"]) or b"%00" in scope["query_string"]:
            raise InvalidInput("the URL must not contain NUL (%00)")
        chunks: list[bytes] = []

        async def checked_receive() -> ReceiveMessage:
            message = await receive()
            if message["type"] != "http.request":
                return message
            body: bytes = message.get("body", b"")
            if message.get("more_body", False):
                chunks.append(body)
                return message
            if chunks:
                body = b"".join([*chunks, body])
                chunks.clear()
            if body and json_too_deep(body):
                raise InvalidBody(TOO_DEEP_MESSAGE)
            return message

        await next_app(scope, checked_receive, send)
