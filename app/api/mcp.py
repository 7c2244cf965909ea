"""Simwire as an MCP server (official `mcp` SDK, streamable HTTP at `/mcp`, stateless so any
instance answers any call). Each tool parses its arguments and calls the same services as the
HTTP API; with an API key on the connection it acts as that project with its scopes; without
one `quote_sms` is free, `send_sms` is paid per call with x402 over MCP, `get_request` reads a
paid request by its id, and a wallet signed in with Sign-In-With-X lists its own messages."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from litestar import asgi
from litestar.types import HTTPResponseStartEvent, Receive, Scope, Send
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from app.api.agent_docs import docs_url
from app.api.controllers.devices import sim_out
from app.api.controllers.messages import CallbackNeedsPayment, parse_drafts, quote_response
from app.api.controllers.reading import message_filter
from app.api.input_guard import TOO_DEEP_MESSAGE
from app.api.schemas_reading import message_out, request_out
from app.db.engine import Database
from app.domain import pricing
from app.domain.errors import SimwireError, Unauthorized
from app.hub.hub import Hub
from app.json_limits import json_too_deep
from app.logs import get_logger
from app.services import agents, credits, devices, quoting, reading, sending, wallets
from app.services.projects import AuthContext, authenticate
from app.services.x402 import X402Gateway
from app.services.x402.mcp import paid_send
from app.services.x402_runtime import PaymentRuntime, x402_project_id
from app.settings import Settings

log = get_logger("simwire.mcp")

MCP_PATH = "/mcp"
INSTRUCTIONS = (
    "Simwire sends and receives real SMS through phones. quote_sms prices a message for free; "
    "send_sms sends it (with an API key on the connection it is charged to the project's "
    "credits; without one it is paid per call with x402: the result is a PaymentRequired, "
    "pay it with an x402 MCP client and call again). Follow a send with get_request; read "
    "replies with list_messages (direction=in) or wait for one with wait_for_sms."
)

Recipients = Annotated[
    str | list[str],
    Field(description="E.164 number (+14155550100) or a list of them (at most 10 paid per call)"),
]
Body = Annotated[str, Field(description="The SMS text, 1-1600 characters", min_length=1)]
ToolResult = Annotated[CallToolResult, dict[str, Any]]


def _json(body: Any) -> str:
    return json.dumps(body, default=_default, ensure_ascii=False)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if hasattr(value, "__struct_fields__"):
        import msgspec

        return msgspec.to_builtins(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _ok(body: Any) -> CallToolResult:
    data = json.loads(_json(body))
    return CallToolResult(
        content=[TextContent(type="text", text=_json(data))], structured_content=data
    )


def _error(body: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=_json(body))], structured_content=body, is_error=True
    )


class _Call:
    """What one tool call knows about its caller: the connection's headers and `_meta`."""

    def __init__(self, ctx: Context, settings: Settings) -> None:
        request = ctx.request_context.request
        self.headers: dict[str, str] = (
            {k.lower(): v for k, v in request.headers.items()} if request is not None else {}
        )
        meta = ctx.request_context.meta
        if meta is None:
            self.meta: dict[str, Any] = {}
        elif isinstance(meta, dict):
            self.meta = dict(meta)
        else:
            self.meta = meta.model_dump(by_alias=True, exclude_none=True)
        if settings.public_url:
            self.base = settings.public_url.rstrip("/")
        elif request is not None:
            self.base = f"{request.url.scheme}://{self.headers.get('host', request.url.netloc)}"
        else:
            self.base = f"http://{settings.host}:{settings.port}"

    @property
    def key(self) -> str | None:
        header = self.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return (self.headers.get("x-api-key") or "").strip() or None


def _from_alias(fn: Callable[..., Awaitable[CallToolResult]]) -> Any:
    """Lets a tool take the argument `from` (a Python keyword) as its parameter `from_`: the
    SDK passes arguments by their alias, so this maps it back."""
    signature = inspect.signature(fn, eval_str=True)

    @functools.wraps(fn)
    async def takes_from(**kwargs: Any) -> CallToolResult:
        if "from" in kwargs:
            kwargs["from_"] = kwargs.pop("from")
        return await fn(**kwargs)

    takes_from.__signature__ = signature  # type: ignore[attr-defined]
    takes_from.__annotations__ = {
        name: param.annotation for name, param in signature.parameters.items()
    } | {"return": signature.return_annotation}
    return takes_from


def build_mcp(db: Database, settings: Settings, hub: Hub, payments: PaymentRuntime) -> MCPServer:
    """The MCP server with Simwire's eight tools."""
    server = MCPServer(name="simwire", instructions=INSTRUCTIONS, version="0.1.0")

    async def run(
        ctx: Context, body: Callable[[_Call, AuthContext | None], Awaitable[CallToolResult]]
    ) -> CallToolResult:
        call = _Call(ctx, settings)
        try:
            auth = await authenticate(db, call.key) if call.key else None
            return await body(call, auth)
        except SimwireError as exc:
            return _error(
                {
                    "error": exc.code,
                    "message": exc.message,
                    **exc.details,
                    "docs_url": docs_url(call.base, exc.code),
                }
            )
        except Exception as exc:  # never a stack trace to the caller
            log.error("mcp_tool_failed", error_type=type(exc).__name__, exc_info=exc)
            return _error(
                {
                    "error": "internal_error",
                    "message": "the server could not complete the tool call",
                    "docs_url": docs_url(call.base, "internal_error"),
                }
            )

    def need(auth: AuthContext | None, scope: str) -> AuthContext:
        if auth is None:
            raise Unauthorized(
                f"this tool needs an API key with the {scope!r} scope on the MCP connection "
                "(Authorization: Bearer sw_live_…)",
                required_scope=scope,
            )
        auth.require(scope)
        return auth

    async def wallet(call: _Call) -> str | None:
        header = call.headers.get(wallets.SIGN_IN_HEADER.lower())
        if not header or payments.network is None:
            return None
        return await wallets.sign_in(db, payments.network, header, call.base, MCP_PATH)

    @server.tool(
        name="quote_sms",
        description=(
            "Price an SMS before sending: encoding (GSM-7 or UCS-2), segment_count (segments "
            "of one copy), recipient_count, per_message_rate (one segment to one recipient), "
            "messaging_fee = segment_count x recipient_count x per_message_rate, other fees by "
            "name, and total (USDC, with _atomic twins). Free; no key needed. Also says what "
            "would be blocked (emergency numbers, harmful content)."
        ),
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    )
    async def quote_sms(to: Recipients, message: Body, ctx: Context) -> ToolResult:
        async def body(call: _Call, auth: AuthContext | None) -> CallToolResult:
            drafts = parse_drafts({"to": to, "message": message}, batch_fields=None)
            project_id = auth.project_id if auth else None
            prepared, quote = await quoting.create_quote(db, settings, project_id, drafts, None)
            response = quote_response(prepared, quote, message, False)
            phones = project_id or (
                await x402_project_id(db, settings) if payments.enabled else None
            )
            if phones is not None:
                response["warnings"] = await devices.phone_warnings(
                    db, hub, phones, None, settings.message_ttl_s
                )
            return _ok(response)

        return await run(ctx, body)

    @server.tool(
        name="send_sms",
        description=(
            "Send an SMS to one or more numbers. With an API key: charged to the project's "
            "credits (scope messages.send). Without a key: paid per call with x402 - the "
            "first call returns a PaymentRequired (isError, x402Version 2, accepts[...]); an "
            "x402 MCP client pays it in _meta['x402/payment'] and the retry returns the "
            "request (request_id, messages, payment). Follow it with get_request."
        ),
        annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False),
    )
    async def send_sms(
        to: Recipients,
        message: Body,
        ctx: Context,
        sim: Annotated[str | None, Field(description="Pin a SIM by number or slot")] = None,
        tag: Annotated[str | None, Field(description="Your label, up to 200 chars")] = None,
        callback_url: Annotated[
            str | None,
            Field(
                description=(
                    "Paid calls only: where this request's message events and replies are "
                    "POSTed, signed with the result's callback_secret"
                ),
                max_length=2048,
            ),
        ] = None,
    ) -> ToolResult:
        async def body(call: _Call, auth: AuthContext | None) -> CallToolResult:
            payload: dict[str, Any] = {"to": to, "message": message}
            if tag is not None:
                payload["tag"] = tag
            drafts = parse_drafts(payload, batch_fields=None)
            options = sending.SendOptions(
                sim=(sim or "").strip() or None, callback_url=callback_url
            )
            if auth is None:
                if not payments.enabled:
                    raise Unauthorized(
                        "send_sms needs an API key on the MCP connection (pay-per-call with "
                        "x402 is not enabled on this server)"
                    )
                gateway = X402Gateway(db, settings, payments, hub)
                result = await paid_send(
                    gateway,
                    drafts,
                    options,
                    {
                        "to": to,
                        "message": message,
                        "sim": sim,
                        "tag": tag,
                        "callback_url": callback_url,
                    },
                    call.meta,
                    call.base + MCP_PATH,
                )
                return CallToolResult(
                    content=[TextContent(type="text", text=_text_of(result.content))],
                    structured_content=result.structured_content,
                    is_error=result.is_error,
                    _meta=result.meta or None,
                )
            need(auth, "messages.send")
            if callback_url is not None:
                raise CallbackNeedsPayment()
            response = await sending.send_with_credits(
                db,
                hub,
                settings,
                auth.project_id,
                drafts,
                options,
                sending.request_fingerprint(payload),
            )
            warnings = await devices.phone_warnings(
                db, hub, auth.project_id, options.sim, settings.message_ttl_s
            )
            return _ok({**response, "warnings": warnings})

        return await run(ctx, body)

    @server.tool(
        name="get_request",
        description=(
            "Follow a send: status processing | all_delivered | partial_delivery | failed, "
            "counts and each message. With a key: the project's requests (messages.read); "
            "without: an x402-paid request by its id (the id is the capability)."
        ),
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def get_request(
        request_id: Annotated[str, Field(description="req_… from send_sms")], ctx: Context
    ) -> ToolResult:
        async def body(call: _Call, auth: AuthContext | None) -> CallToolResult:
            project_id = need(auth, "messages.read").project_id if auth else None
            view = await reading.get_request(db, project_id, request_id)
            return _ok(request_out(view))

        return await run(ctx, body)

    @server.tool(
        name="get_message",
        description=(
            "One message by id (msg_…): status, timestamps, error_code. Scope messages.read."
        ),
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def get_message(
        id: Annotated[str, Field(description="msg_…")], ctx: Context
    ) -> ToolResult:
        async def body(call: _Call, auth: AuthContext | None) -> CallToolResult:
            record = await reading.get_message(db, need(auth, "messages.read").project_id, id)
            return _ok(message_out(record))

        return await run(ctx, body)

    @server.tool(
        name="list_messages",
        description=(
            "List messages newest first: direction in (received, e.g. replies) or out (sent), "
            "from / to a number, since an ISO time, limit 1-1000. With a key: the project's "
            "(messages.read). A wallet signed in with Sign-In-With-X (SIGN-IN-WITH-X header on "
            "the connection) lists its own paid messages and the replies to them."
        ),
        annotations=ToolAnnotations(read_only_hint=True),
    )
    @_from_alias
    async def list_messages(
        ctx: Context,
        direction: Annotated[
            str | None, Field(description="in | out (also inbound | outbound)")
        ] = None,
        from_: Annotated[str | None, Field(alias="from", description="Sender number")] = None,
        to: Annotated[str | None, Field(description="Recipient number")] = None,
        since: Annotated[str | None, Field(description="ISO 8601, e.g. 2026-01-31T12:00Z")] = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 50,
    ) -> ToolResult:
        async def body(call: _Call, auth: AuthContext | None) -> CallToolResult:
            filters = message_filter(direction, None, None, None, to, from_, since, None, None)
            if auth is None:
                address = await wallet(call)
                if address is None:
                    need(auth, "messages.read")
                assert address is not None and payments.network is not None
                found = await wallets.wallet_messages(
                    db,
                    address,
                    payments.network.network,
                    direction=filters.direction,
                    since=filters.since,
                    sender=filters.sender,
                    limit=limit,
                )
                data = [_builtins(message_out(m.record)) for m in found]
                return _ok({"address": address, "data": data, "count": len(data)})
            page = await reading.list_messages(
                db, need(auth, "messages.read").project_id, filters, limit
            )
            listed = [message_out(record) for record in page.records]
            return _ok({"data": listed, "count": len(listed), "next_cursor": page.next_cursor})

        return await run(ctx, body)

    @server.tool(
        name="wait_for_sms",
        description=(
            "Wait for the next inbound SMS (e.g. a one-time code) and return it as soon as the "
            "phone delivers it: filter by from (sender), contains (case-insensitive text) "
            "and/or pattern (regex); since defaults to now; timeout_s up to 120. Returns "
            "{received: true, message} or {received: false, timed_out: true}. Scope "
            "messages.read."
        ),
        annotations=ToolAnnotations(read_only_hint=True),
    )
    @_from_alias
    async def wait_for_sms(
        ctx: Context,
        from_: Annotated[str | None, Field(alias="from", description="Sender number")] = None,
        contains: Annotated[str | None, Field(description="Text the body must contain")] = None,
        pattern: Annotated[str | None, Field(description="Regex the body must match")] = None,
        since: Annotated[str | None, Field(description="ISO 8601; default: now")] = None,
        timeout_s: Annotated[float, Field(gt=0, le=120)] = 60,
    ) -> ToolResult:
        async def body(call: _Call, auth: AuthContext | None) -> CallToolResult:
            project_id = need(auth, "messages.read").project_id
            filters = message_filter(None, None, None, None, None, from_, since, None, None)
            match = agents.inbound_match(filters.sender, contains, pattern)
            record = await agents.wait_for_sms(
                hub, project_id, match, since=filters.since, timeout_s=timeout_s
            )
            if record is None:
                return _ok(
                    {
                        "received": False,
                        "timed_out": True,
                        "timeout_s": timeout_s,
                        "message": None,
                    }
                )
            return _ok({"received": True, "timed_out": False, "message": message_out(record)})

        return await run(ctx, body)

    @server.tool(
        name="list_sims",
        description=(
            "The project's SIMs: which are live on an online phone (can send now) and every "
            "known one, with number, slot and lock. Scope numbers.read."
        ),
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def list_sims(ctx: Context) -> ToolResult:
        async def body(call: _Call, auth: AuthContext | None) -> CallToolResult:
            project_id = need(auth, "numbers.read").project_id
            inventory = await devices.sim_inventory(db, project_id, settings.phone_idle_timeout_s)
            return _ok(
                {
                    "online_devices": inventory.online_devices,
                    "live_sims": [sim_out(s) for s in inventory.live_sims],
                    "known_sims": [sim_out(s) for s in inventory.known_sims],
                }
            )

        return await run(ctx, body)

    @server.tool(
        name="get_balance",
        description=(
            "The project's prepaid credit balance in USDC (scope credits.read); for a wallet "
            "signed in with Sign-In-With-X, its refund credit for the next paid call."
        ),
        annotations=ToolAnnotations(read_only_hint=True),
    )
    async def get_balance(ctx: Context) -> ToolResult:
        async def body(call: _Call, auth: AuthContext | None) -> CallToolResult:
            if auth is None:
                address = await wallet(call)
                if address is None or payments.network is None:
                    need(auth, "credits.read")
                assert address is not None and payments.network is not None
                async with db.sessions() as session:
                    balance = await credits.payer_balance(
                        session, address, payments.network.network
                    )
                return _ok(
                    {
                        "address": address,
                        "balance": pricing.format_usdc(balance),
                        "balance_atomic": balance,
                        "currency": "USDC",
                    }
                )
            project_id = need(auth, "credits.read").project_id
            page = await credits.project_ledger(db, project_id, 1, None)
            return _ok(
                {
                    "project_id": project_id,
                    "balance": pricing.format_usdc(page.balance_atomic),
                    "balance_atomic": page.balance_atomic,
                    "currency": "USDC",
                }
            )

        return await run(ctx, body)

    return server


def _builtins(value: Any) -> Any:
    return json.loads(_json(value))


def _text_of(content: list[dict[str, Any]]) -> str:
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection: loopback names, the listen host, and SIMWIRE_PUBLIC_URL's
    host may reach /mcp (a browser page on another origin may not)."""
    from urllib.parse import urlparse

    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost"]
    origins = ["http://127.0.0.1:*", "http://localhost:*"]
    if settings.host not in ("127.0.0.1", "0.0.0.0", "::", "localhost"):
        hosts += [settings.host, f"{settings.host}:*"]
    if settings.public_url:
        public = urlparse(settings.public_url)
        hosts += [public.netloc, f"{public.hostname}:*"]
        origins.append(f"{public.scheme}://{public.netloc}")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


def mcp_mount(server: MCPServer, settings: Settings) -> Any:
    """The Litestar mount of the streamable-HTTP app at /mcp (stateless, JSON answers: every
    call stands alone, so any instance behind a load balancer can take it)."""
    app = server.streamable_http_app(
        streamable_http_path="/",
        stateless_http=True,
        json_response=True,
        transport_security=transport_security(settings),
    )

    @asgi(MCP_PATH, is_mount=True, copy_scope=True, include_in_schema=False)
    async def mcp_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await app(scope, receive, send)  # type: ignore[arg-type]
            return
        # The SDK decodes the body itself, past the app's body guard: read it here first, so a
        # body too large or nested too deep gets the same 413 / 400 as any other route.
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > settings.max_request_bytes:
                await _refuse(send, 413, "body_too_large", "the request body is too large")
                return
        if json_too_deep(body):
            await _refuse(send, 400, "invalid_body", TOO_DEEP_MESSAGE)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)  # type: ignore[arg-type]

    return mcp_endpoint


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    payload = json.dumps({"error": code, "message": message}).encode()
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json")],
    }
    await send(start)
    await send({"type": "http.response.body", "body": payload, "more_body": False})
