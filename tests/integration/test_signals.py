"""The PostgreSQL wake-up channel: every publish on one connection kept open, and a new one
when that connection is lost, with nothing published lost."""

from __future__ import annotations

import asyncio

import asyncpg

from app.hub.signals import NotifyingBackend

CHANNEL = "simwire_test_wake"


async def test_wake_ups_share_one_connection_and_outlive_losing_it(postgres_url: str) -> None:
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    backend = NotifyingBackend(dsn)
    opened: list[asyncpg.Connection] = []
    connect = backend._connect

    async def counted() -> asyncpg.Connection:
        connection = await connect()
        opened.append(connection)
        return connection

    backend._connect = counted
    await backend.on_startup()
    try:
        await backend.subscribe([CHANNEL])
        events = backend.stream_events()
        for n in range(20):
            await backend.publish(f"wake {n}".encode(), [CHANNEL])
        assert len(opened) == 2  # the listener and the publisher

        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", opened[1].get_server_pid())
        finally:
            await admin.close()
        await backend.publish(b"after the loss", [CHANNEL])
        assert len(opened) == 3

        received = [(await asyncio.wait_for(anext(events), 10))[1] for _ in range(21)]
        assert received == [f"wake {n}".encode() for n in range(20)] + [b"after the loss"]
    finally:
        await backend.on_shutdown()
