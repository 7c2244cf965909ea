"""The async engine and session factory for SQLite (embedded) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, StaticPool, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

READ_ONLY = "simwire_read_only"
T = TypeVar("T")


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    """An engine tuned per backend: SQLite gets WAL, a busy timeout and enforced foreign keys."""
    if database_url.startswith("sqlite"):
        # One connection: transactions queue on the pool (no lock polling) inside a process;
        # busy_timeout covers other processes such as the CLI.
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", 60)
        kwargs.setdefault("pool_reset_on_return", None)
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

        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    # Sized for the concurrency one instance serves (a send, a phone frame and the sweeps may
    # each hold a connection); loopback connections need no pre-ping round trip per checkout.
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", False)
    return create_async_engine(database_url, **kwargs)


def _sqlite_begin(conn: Any) -> None:
    # Writers take the write lock up front so concurrent read-then-write transactions queue
    # instead of failing with "database is locked" half way through. A session opened with
    # `Database.reading()` (or `run(..., read_only=True)`) only reads: a plain (deferred)
    # BEGIN, no lock.
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# Per aiosqlite connection: a synchronous SQLAlchemy connection over the same sqlite3
# connection, used only on that connection's own worker thread (see `Database.run`).
_SQLITE_SYNC_CONNECTIONS: weakref.WeakKeyDictionary[Any, Connection] = weakref.WeakKeyDictionary()


def _sync_connection_over(driver: Any) -> Connection:
    conn = _SQLITE_SYNC_CONNECTIONS.get(driver)
    if conn is None:
        engine = create_sync_engine(
            "sqlite://", creator=lambda: driver._connection, poolclass=StaticPool
        )
        conn = _SQLITE_SYNC_CONNECTIONS[driver] = engine.connect()
    return conn


def _run_on_sqlite_thread(driver: Any, work: Callable[[Connection], T], read_only: bool) -> T:
    conn = _sync_connection_over(driver)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return result


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

    async def run(self, work: Callable[[Connection], T], *, read_only: bool = False) -> T:
        """Runs `work(conn)` — synchronous Core statements on a `Connection` — as one
        transaction (committed when it returns, rolled back if it raises). On SQLite the whole
        transaction runs in one hand-off to the connection's worker thread instead of several
        per statement, on the same pooled connection the async sessions use (so it queues
        behind them, never polls the lock); on PostgreSQL it runs through `run_sync`. For the
        hot paths: `work` must not block on anything but the database."""
        if not self.is_sqlite:
            if read_only:
                async with self.engine.connect() as conn:
                    return await conn.run_sync(work)
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)
        async with self.engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            result: T = await driver._execute(_run_on_sqlite_thread, driver, work, read_only)
            return result

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
