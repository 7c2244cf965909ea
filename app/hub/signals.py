"""Cross-instance wake-ups: in memory for one process, PostgreSQL LISTEN/NOTIFY for many."""

from __future__ import annotations

from litestar.channels import ChannelsPlugin
from litestar.channels.backends.asyncpg import AsyncPgChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend

from app.hub.hub import DEVICE_CHANNEL, DISPATCH_CHANNEL
from app.services.access_cache import ACCESS_CHANNEL


def channels_for(database_url: str) -> ChannelsPlugin:
    if database_url.startswith("postgresql"):
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        backend: MemoryChannelsBackend | AsyncPgChannelsBackend = AsyncPgChannelsBackend(dsn=dsn)
    else:
        backend = MemoryChannelsBackend()
    return ChannelsPlugin(
        backend=backend, channels=[DISPATCH_CHANNEL, DEVICE_CHANNEL, ACCESS_CHANNEL]
    )
