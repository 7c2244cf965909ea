"""Cross-instance wake-ups: in memory for one process, PostgreSQL LISTEN/NOTIFY for many."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import asyncpg
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.asyncpg import AsyncPgChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend

from app.hub.hub import DEVICE_CHANNEL, DISPATCH_CHANNEL
from app.services.access_cache import ACCESS_CHANNEL

_NOTIFY = "SELECT pg_notify($1, $2)"


class NotifyingBackend(AsyncPgChannelsBackend):
    """Litestar's LISTEN/NOTIFY backend, publishing on one connection kept open. Litestar's own
    opens a connection for every publish and closes it after (with the default sslmode, a TLS
    handshake each time): every send's wake-up paid for it. This one opens its publishing
    connection on first use, and again when it is found broken."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn=dsn)
        self._publisher: asyncpg.Connection | None = None
        self._publishing = asyncio.Lock()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        if self._queue is None:
            raise RuntimeError("the channels backend is not started")
        text = data.decode("utf-8")
        async with self._publishing:
            for last_try in (False, True):
                connection = await self._publishing_connection()
                try:
                    for channel in channels:
                        await connection.execute(_NOTIFY, channel, text)
                    return
                except Exception:
                    if last_try or not connection.is_closed():
                        raise
                    self._publisher = None  # it broke under us: once more on a new one

    async def _publishing_connection(self) -> asyncpg.Connection:
        if self._publisher is None or self._publisher.is_closed():
            self._publisher = await self._connect()
        return self._publisher

    async def on_shutdown(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            with contextlib.suppress(Exception):
                await publisher.close()
        await super().on_shutdown()


def channels_for(database_url: str) -> ChannelsPlugin:
    if database_url.startswith("postgresql"):
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        backend: MemoryChannelsBackend | AsyncPgChannelsBackend = NotifyingBackend(dsn)
    else:
        backend = MemoryChannelsBackend()
    return ChannelsPlugin(
        backend=backend, channels=[DISPATCH_CHANNEL, DEVICE_CHANNEL, ACCESS_CHANNEL]
    )
