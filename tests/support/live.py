"""A real server on a loopback port inside the test's event loop (uvicorn, real sockets),
and real phone clients with the fake radio."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar

from app.api.app import create_app
from app.db.engine import Database
from app.hub.hub import Hub
from app.hub.ws_protocol import socket_options
from app.phone.client import PhoneClient
from app.phone.radios.fake import FakeRadio, fake_sims
from app.settings import Settings


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


def loopback_socket() -> socket.socket:
    """A socket already bound to a free loopback port: handed to uvicorn, so no other test
    (or xdist worker) can take the port between choosing it and listening on it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve_app(app: Litestar, **config: Any) -> AsyncIterator[str]:
    """Serves `app` with uvicorn on a free loopback port until the block ends; yields its URL."""
    sock = loopback_socket()
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, **config
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done(), timeout_s=30, interval_s=0.01)
        if task.done():
            task.result()
            raise AssertionError("uvicorn stopped before it started serving")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=15)
        finally:
            sock.close()


@contextlib.asynccontextmanager
async def live_server(settings: Settings, db: Database | None = None) -> AsyncIterator[LiveServer]:
    app = create_app(settings, db)
    async with serve_app(
        app,
        lifespan="on",
        **socket_options(settings.phone_max_frame_bytes),  # as `simwire serve`
        proxy_headers=False,  # as `simwire serve`: only SIMWIRE_TRUSTED_PROXIES are believed
    ) as url:
        yield LiveServer(url=url, app=app)


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


@dataclass
class CallLog:
    """The completed calls of a watched coroutine function: when each started
    (`time.monotonic()`) and what it returned."""

    calls: list[tuple[float, Any]] = field(default_factory=list)

    def since(self, moment: float) -> list[Any]:
        """What the calls that started at or after `moment` returned."""
        return [result for started, result in self.calls if started >= moment]

    async def wait(
        self,
        count: int = 1,
        *,
        since: float,
        where: Callable[[Any], bool] = lambda result: True,
        timeout_s: float = 10.0,
    ) -> None:
        """Until `count` calls that started at or after `since` (and whose result passes
        `where`) have returned."""
        await eventually(
            lambda: sum(1 for result in self.since(since) if where(result)) >= count, timeout_s
        )


def watch_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> CallLog:
    """Logs each completed call of the coroutine function `owner.name` (still called through):
    a test waits until the system has done something (a sweep, a dispatch round) instead of
    sleeping and hoping it has."""
    original = getattr(owner, name)
    log = CallLog()

    async def watched(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        result = await original(*args, **kwargs)
        log.calls.append((started, result))
        return result

    monkeypatch.setattr(owner, name, watched)
    return log
