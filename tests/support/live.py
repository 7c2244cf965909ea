"""A real server on a loopback port inside the test's event loop (uvicorn, real sockets),
and real phone clients with the fake radio."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from litestar import Litestar

from app.api.app import create_app
from app.db.engine import Database
from app.hub.hub import Hub
from app.phone.client import PhoneClient
from app.phone.radios.fake import FakeRadio, fake_sims
from app.settings import Settings
from tests.support.postgres import free_port


@dataclass
class LiveServer:
    url: str
    app: Litestar

    @property
    def hub(self) -> Hub:
        return self.app.state["hub"]

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/phone/ws"


def fast_settings(settings: Settings, **changes: object) -> Settings:
    """Timeouts short enough for tests to watch them pass."""
    values = {
        "sweep_interval_s": 0.2,
        "ack_timeout_s": 4.0,  # tests of the timeout itself set it lower
        "phone_ping_interval_s": 5.0,
        "phone_idle_timeout_s": 30.0,
        **changes,
    }
    return settings.model_copy(update=values)


@contextlib.asynccontextmanager
async def live_server(settings: Settings, db: Database | None = None) -> AsyncIterator[LiveServer]:
    app = create_app(settings, db)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="on",
            log_config=None,
            access_log=False,
            ws_max_size=settings.phone_max_frame_bytes,
            proxy_headers=False,  # as `simwire serve`: only SIMWIRE_TRUSTED_PROXIES are believed
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


@dataclass
class RunningPhone:
    client: PhoneClient
    radio: FakeRadio
    task: asyncio.Task[None]

    async def stop(self) -> None:
        await self.client.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, timeout=10)


async def start_phone(
    server: LiveServer | str,
    token: str,
    store: Path,
    radio: FakeRadio | None = None,
    **client_options: object,
) -> RunningPhone:
    url = server.url if isinstance(server, LiveServer) else server
    radio = radio or FakeRadio(sims=fake_sims(1))
    client = PhoneClient(url, token, radio, store, heartbeat_s=5, backoff_max_s=1, **client_options)
    task = asyncio.create_task(client.run())
    await asyncio.wait_for(client.connected.wait(), timeout=10)
    if isinstance(server, LiveServer) and client.server_info:
        # The phone is ready once the server has stored the SIMs from its `hello`.
        device_id = client.server_info["device_id"]
        await eventually(
            lambda: (c := server.hub.connections.get(device_id)) is not None and c.ready
        )
    return RunningPhone(client, radio, task)


async def eventually(check, timeout_s: float = 10.0, interval_s: float = 0.05):  # type: ignore[no-untyped-def]
    """Polls an async or sync `check` until it returns a truthy value; returns that value."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)
