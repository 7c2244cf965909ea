"""The Litestar app factory: one settings object, one database, every controller."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import ASGIMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.serialization import encode_json
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.api.agent_docs import AGENT_DOC_ROUTES, ErrorDocsMiddleware
from app.api.controllers.accounts import AuthController, UserProjectController
from app.api.controllers.agents import AgentKeyController, AgentOnboardingController
from app.api.controllers.consent import PolicyController, SuppressionController
from app.api.controllers.devices import (
    DeviceController,
    inbound_batch,
    list_sims,
    lock_sim,
    unlock_sim,
)
from app.api.controllers.events import list_events as list_events_route
from app.api.controllers.health import healthz, readyz
from app.api.controllers.keys import KeyController, current_project
from app.api.controllers.messages import create_quote, send_messages
from app.api.controllers.payments import topup_credits
from app.api.controllers.reading import ReadingController, list_messages
from app.api.controllers.wallet import WALLET_ROUTES
from app.api.controllers.webhooks import WebhookController
from app.api.docs import docs_assets_router, swagger_plugin
from app.api.errors import EXCEPTION_HANDLERS
from app.api.input_guard import InputGuardMiddleware
from app.api.mcp import build_mcp, mcp_mount
from app.api.openapi import COMPONENTS
from app.api.phone_door import SimwireApp, phone_door
from app.api.ratelimit import RateLimitMiddleware, RequestLimits
from app.collector import settle_after_startup
from app.dashboard import dashboard_router
from app.db.engine import Database
from app.hub.hub import Hub
from app.hub.signals import channels_for
from app.json_limits import restore_recursion_limit
from app.logs import configure_logging, get_logger
from app.services import access_cache
from app.services.retention import PurgeSweep
from app.services.x402 import Settlements, reconciliation_running
from app.services.x402_runtime import PaymentRuntime
from app.settings import Settings
from app.webhooks.delivery import DeliveryWorker

log = get_logger("simwire.http")


class RequestLogMiddleware(ASGIMiddleware):
    """One log line per HTTP request: method, path (never the query string), status, duration."""

    scopes = ("http",)  # type: ignore[assignment]

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, send_and_note)
        finally:
            log.info(
                "request",
                method=scope.get("method"),
                path=scope.get("path"),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )


@get("/openapi.json", include_in_schema=False, media_type=MediaType.JSON)
async def openapi_json(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The OpenAPI document at the contract path (the docs page reads /docs/openapi.json),
    encoded once per app: making it anew costs about 100 ms of CPU, a price no anonymous
    caller should be able to make the server pay on every request."""
    state = request.app.state
    document = state.get(_OPENAPI_DOCUMENT)
    if document is None:
        document = state[_OPENAPI_DOCUMENT] = encode_json(request.app.openapi_schema.to_schema())
    return Response(document, media_type=MediaType.JSON)


_OPENAPI_DOCUMENT = "openapi_document"


def create_app(settings: Settings | None = None, db: Database | None = None) -> Litestar:
    # Every heavy import (web3, eth-account, py_ecc) is done by now: undo py_ecc's limit.
    restore_recursion_limit()
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    database = db or Database(settings.database_url)
    channels = channels_for(settings.database_url)
    hub = Hub(database, settings, channels)
    payments = PaymentRuntime(settings)
    settlements = Settlements(database, settings, payments, hub) if payments.enabled else None
    rate_limits = RequestLimits(settings)
    purge = PurgeSweep(database, settings)
    webhook_worker = DeliveryWorker(database, settings)
    agents_mcp = build_mcp(database, settings, hub, payments)
    mcp_endpoint = mcp_mount(agents_mcp, settings)
    access = access_cache.cache_for(database, settings.access_cache_ttl_s)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            async with channels:
                access_listener = access_cache.listening(access, channels)
                await hub.start()
                payments.start()
                purge.start()
                webhook_worker.start()
                try:
                    await payments.check_facilitator()
                    async with (
                        reconciliation_running(settlements, settings.payment_reconcile_interval_s),
                        agents_mcp.session_manager.run(),
                    ):
                        yield
                finally:
                    await webhook_worker.stop()
                    await purge.stop()
                    await payments.close()
                    await hub.stop()
                    access_listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await access_listener
        finally:
            if db is None:
                await database.dispose()

    rate_limit = RateLimitMiddleware(rate_limits)
    app = SimwireApp(
        route_handlers=[
            healthz,
            readyz,
            openapi_json,
            docs_assets_router(),
            current_project,
            KeyController,
            DeviceController,
            list_sims,
            lock_sim,
            unlock_sim,
            inbound_batch,
            send_messages,
            create_quote,
            topup_credits,
            ReadingController,
            list_messages,
            list_events_route,
            WebhookController,
            SuppressionController,
            PolicyController,
            AuthController,
            UserProjectController,
            AgentOnboardingController,
            AgentKeyController,
            *WALLET_ROUTES,
            *AGENT_DOC_ROUTES,
            dashboard_router(),
            mcp_endpoint,
        ],
        dependencies={
            "db": Provide(lambda: database, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "hub": Provide(lambda: hub, sync_to_thread=False),
            "payments": Provide(lambda: payments, sync_to_thread=False),
            "webhook_worker": Provide(lambda: webhook_worker, sync_to_thread=False),
        },
        state=State(
            {
                "settings": settings,
                "db": database,
                "hub": hub,
                "payments": payments,
                "rate_limits": rate_limits,
                "purge": purge,
                "webhook_worker": webhook_worker,
            }
        ),
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            RequestLogMiddleware(),
            ErrorDocsMiddleware(settings),
            rate_limit,
            InputGuardMiddleware(),
        ],
        lifespan=[lifespan],
        request_max_body_size=settings.max_request_bytes,
        openapi_config=OpenAPIConfig(
            title="Simwire",
            version="0.1.0",
            description="Pay-per-message SMS API; phones are the radio.",
            path="/docs",
            components=COMPONENTS,
            render_plugins=[swagger_plugin(), JsonRenderPlugin(path="/openapi.json")],
        ),
        logging_config=None,
        debug=False,
    )
    app.phone_door = phone_door(hub, rate_limit)
    return app


def app_from_env() -> Litestar:
    """Factory for `uvicorn --factory app.api.app:app_from_env`."""
    app = create_app()
    settle_after_startup()
    return app
