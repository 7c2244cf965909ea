"""The async engine and session factory for SQLite (embedded) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

READ_ONLY = "simwire_read_only"


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    """An engine tuned per backend: SQLite gets WAL, a busy timeout and enforced foreign keys."""
    if database_url.startswith("sqlite"):
        # One connection: transactions queue on the pool (no lock polling) inside a process;
        # busy_timeout covers other processes such as the CLI.
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", 60)
        engine = create_async_engine(database_url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Writers take the write lock up front so concurrent read-then-write transactions
            # queue instead of failing with "database is locked" half way through. A session
            # opened with `Database.reading()` only reads: a plain (deferred) BEGIN, no lock.
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # Sized for the concurrency one instance serves (a send, a phone frame and the sweeps may
    # each hold a connection); loopback connections need no pre-ping round trip per checkout.
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", False)
    return create_async_engine(database_url, **kwargs)


class Database:
    """Holds the engine and hands out sessions; one per process."""

    def __init__(self, database_url: str, **engine_kwargs: Any) -> None:
        self.url = database_url
        self.engine = create_engine(database_url, **engine_kwargs)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits on success, rolls back on any exception."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only (no commit): on SQLite it takes no write lock, so it does
        not wait for, or hold up, the writers. Writing in it is a mistake."""
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = await conn.execution_options(**{READ_ONLY: True})
            async with AsyncSession(bind=conn, expire_on_commit=False) as session:
                yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
