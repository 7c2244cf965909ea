"""A webhook receiver on a loopback port (uvicorn, real sockets) that records what it is sent:
answers with a scripted list of statuses, a redirect, or not at all; and a port that refuses
connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from tests.support.live import eventually, loopback_socket


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    """Names in lower case."""
    body: bytes
    at: float
    """`time.monotonic()` when the request arrived."""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each request with the next of `statuses`, then `default_status`; with
    `redirect_to` every answer is a 302 there; with `hang` it never answers (until it stops);
    `answer_after_s` holds each answer back that long (a slow receiver)."""

    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    redirect_to: str | None = None
    hang: bool = False
    answer_after_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender went away mid-request (killed): nothing was delivered
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.received.append(Received(scope["path"], headers, b"".join(chunks), time.monotonic()))
        if self.hang:
            await self._release.wait()
            return
        if self.answer_after_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.answer_after_s)
        status = self.statuses.pop(0) if self.statuses else self.default_status
        extra: list[tuple[bytes, bytes]] = []
        if self.redirect_to is not None:
            status = 302
            extra = [(b"location", self.redirect_to.encode())]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    def ids(self) -> list[str]:
        """The `webhook-id` of every request received, in order."""
        return [one.headers["webhook-id"] for one in self.received]


@contextlib.asynccontextmanager
async def running_receiver(
    receiver: Receiver | None = None, path: str = "/hook", **uvicorn_config: Any
) -> AsyncIterator[Receiver]:
    """Serves `receiver` on a free loopback port until the block ends; its `url` is set (http,
    or https when `ssl_certfile` is given)."""
    receiver = receiver or Receiver()
    sock = loopback_socket()
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            receiver,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,  # a client's idle keep-alive connection is dropped
            **uvicorn_config,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    scheme = "https" if "ssl_certfile" in uvicorn_config else "http"
    try:
        await eventually(lambda: server.started or task.done(), timeout_s=30, interval_s=0.01)
        if task.done():
            task.result()
            raise AssertionError("the receiver stopped before it started serving")
        receiver.url = f"{scheme}://127.0.0.1:{port}{path}"
        yield receiver
    finally:
        receiver._release.set()
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=15)
        finally:
            sock.close()


@contextlib.contextmanager
def refusing_port() -> Any:
    """A loopback port bound but not listening: every connection to it is refused (and no
    other test can take the port while the block runs). Yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()
