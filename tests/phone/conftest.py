"""A stand-in hub: a real WebSocket server playing the server side of the phone protocol."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from app.phone.client import PhoneClient
from app.phone.radios import Radio
from app.phone.store import PhoneStore

TOKEN = "sw_dev_0123456789abcdef0123456789abcdef"


@dataclass
class HubFrame:
    connection: int  # 1 for the first connection the hub accepted, 2 for the next...
    frame: dict[str, Any]

    @property
    def type(self) -> str:
        return self.frame["type"]


@dataclass
class FakeHub:
    """Records every frame, answers `result_ack`/`inbound_ack` unless told not to.

    Every `accepted` is answered as the real hub does: `accept_ack` (this phone holds the
    message), or the `stale_command` error for the ids in `stale_ids` (another phone holds it).
    With `answer_accepted` false it gets no answer: the test sends one itself, or drops the socket.
    """

    ack_results: bool = True
    ack_inbound: bool = True
    answer_accepted: bool = True
    stale_ids: set[str] = field(default_factory=set)
    reject_code: int | None = None  # close every connection at once with this code
    port: int = 0
    received: list[HubFrame] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)
    connection_count: int = 0
    _server: Server | None = None
    _current: ServerConnection | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connection_count += 1
        number = self.connection_count
        request = ws.request
        query = request.path.partition("?")[2] if request else ""
        self.tokens.append(dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("token"))
        if self.reject_code is not None:
            await ws.close(self.reject_code, "device token revoked")
            return
        self._current = ws
        await ws.send(
            json.dumps(
                {
                    "type": "connected",
                    "project_id": "prj_test",
                    "device_id": "dev_test",
                    "limits": {"parts_per_minute": 20},
                }
            )
        )
        with contextlib.suppress(Exception):
            async for raw in ws:
                frame = json.loads(raw)
                self.received.append(HubFrame(number, frame))
                if frame["type"] == "accepted" and self.answer_accepted:
                    await ws.send(json.dumps(self.accept_answer(frame["id"])))
                if frame["type"] in ("send_result", "delivery_report") and self.ack_results:
                    await ws.send(
                        json.dumps({"type": "result_ack", "id": frame["id"], "kind": frame["type"]})
                    )
                if frame["type"] == "inbound" and self.ack_inbound:
                    await ws.send(json.dumps({"type": "inbound_ack", "id": frame["message"]["id"]}))

    def accept_answer(self, message_id: str) -> dict[str, Any]:
        """What the hub answers to `accepted {id}`."""
        if message_id in self.stale_ids:
            return {
                "type": "error",
                "code": "stale_command",
                "message": f"{message_id} is held by another phone or finished: do not send it",
                "id": message_id,
            }
        return {"type": "accept_ack", "id": message_id}

    async def send(self, frame: dict[str, Any]) -> None:
        assert self._current is not None, "no phone connected"
        await self._current.send(json.dumps(frame))

    def drop(self) -> None:
        """Cut the current connection without a closing handshake, as a crashed server would."""
        assert self._current is not None
        self._current.transport.abort()
        self._current = None

    def frames(self, type_: str, *, id: str | None = None, connection: int | None = None) -> list:
        return [
            f.frame
            for f in self.received
            if f.type == type_
            and (id is None or f.frame.get("id") == id)
            and (connection is None or f.connection == connection)
        ]

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                seen = [(f.connection, f.frame) for f in self.received]
                raise AssertionError(f"condition not met in {timeout_s} s; hub saw {seen}")
            await asyncio.sleep(0.01)

    async def wait_frame(
        self, type_: str, *, id: str | None = None, connection: int | None = None, count: int = 1
    ) -> dict[str, Any]:
        await self.until(lambda: len(self.frames(type_, id=id, connection=connection)) >= count)
        return self.frames(type_, id=id, connection=connection)[count - 1]

    async def wait_session(self, connection: int) -> None:
        """Until the phone finished the replay on connection N (its first heartbeat follows it)."""
        await self.wait_frame("heartbeat", connection=connection)

    async def round_trip(self) -> None:
        """A `ping` and its heartbeat on the current connection: the phone has handled every
        frame sent to it before, so what it did not do by now it did not do in answer to them."""
        connection = self.connection_count
        seen = len(self.frames("heartbeat", connection=connection))
        await self.send({"type": "ping"})
        await self.wait_frame("heartbeat", connection=connection, count=seen + 1)


@pytest.fixture
def device_token() -> str:
    return TOKEN


@pytest.fixture
async def phone_store(tmp_path: Path) -> AsyncIterator[PhoneStore]:
    """A phone store of the test's own, closed at teardown even when the test fails (an open
    aiosqlite connection's thread would keep pytest from exiting)."""
    store = await PhoneStore.open(tmp_path / "store.db")
    yield store
    await store.close()


@pytest.fixture
async def offline_hub() -> AsyncIterator[FakeHub]:
    """A hub with a reserved port that is not listening until the test calls `start()`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = FakeHub(port=port)
    yield server
    await server.close()


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    server = FakeHub()
    await server.start()
    yield server
    await server.close()


class RunningClient:
    """A PhoneClient running in a task, stopped at teardown."""

    def __init__(self, client: PhoneClient) -> None:
        self.client = client
        self.task = asyncio.create_task(client.run())

    async def stop(self) -> None:
        await self.client.stop()
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def start_client(tmp_path: Path) -> AsyncIterator[Callable[..., RunningClient]]:
    running: list[RunningClient] = []

    def start(
        hub: FakeHub, radio: Radio, store: Path | None = None, **options: Any
    ) -> RunningClient:
        options.setdefault("heartbeat_s", 30.0)
        options.setdefault("backoff_initial_s", 0.05)
        options.setdefault("backoff_max_s", 0.2)
        options.setdefault(
            "device_info", {"model": "Test Phone", "os": "Android 14", "app_version": "test"}
        )
        client = PhoneClient(hub.url, TOKEN, radio, store or tmp_path / "phone.db", **options)
        runner = RunningClient(client)
        running.append(runner)
        return runner

    yield start
    for runner in running:
        if not runner.task.done():
            await runner.stop()
        else:
            with contextlib.suppress(BaseException):
                await runner.task
