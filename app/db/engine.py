"""The async engine and session factory for SQLite (embedded) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Connection, event, make_url, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.db import immediate

READ_ONLY = "simwire_read_only"
T = TypeVar("T")

_JSON_ENCODER = msgspec.json.Encoder()
_JSON_DECODER = msgspec.json.Decoder()


def _json_text(value: Any) -> str:
    """How JSON columns are written: compact UTF-8 JSON, several times faster than the
    standard library's (a send writes its answer and an event per message this way)."""
    return _JSON_ENCODER.encode(value).decode()


def _json_value(text: str | bytes) -> Any:
    return _JSON_DECODER.decode(text)


# Every engine, SQLite or PostgreSQL, async or the SQLite hot paths' own, reads and writes
# JSON columns the same way.
_JSON_CODEC = {"json_serializer": _json_text, "json_deserializer": _json_value}


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    """An engine tuned per backend: SQLite gets WAL, a busy timeout and enforced foreign keys."""
    if database_url.startswith("sqlite"):
        # One connection for the async sessions (they queue on the pool) and one for
        # `Database.run` (`_SqliteRunner`); busy_timeout covers the two meeting, and other
        # processes such as the CLI. No reset on return: every session and connection here
        # ends its own transaction, and the reset was one more worker-thread round trip.
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", 60)
        kwargs.setdefault("pool_reset_on_return", None)
        engine = create_async_engine(
            database_url, connect_args={"timeout": 30}, **_JSON_CODEC, **kwargs
        )

        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    # Sized for the concurrency one instance serves (a send, a phone frame and the sweeps may
    # each hold a connection); loopback connections need no pre-ping round trip per checkout.
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", False)
    return create_async_engine(database_url, **_JSON_CODEC, **kwargs)


def _sqlite_begin(conn: Any) -> None:
    # Writers take the write lock up front so concurrent read-then-write transactions queue
    # instead of failing with "database is locked" half way through. A session opened with
    # `Database.reading()` (or `run(..., read_only=True)`) only reads: a plain (deferred)
    # BEGIN, no lock.
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (`_sqlite_begin`)


class _SqliteRunner:
    """The hot paths' own SQLite connection, used only on its own thread: each `run` is one
    hand-off to that thread, which runs the whole transaction there. It writes beside the async
    engine's connection as another process would (WAL, BEGIN IMMEDIATE, the busy timeout)."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url).set(drivername="sqlite")
        self.engine = create_sync_engine(url, pool_size=1, max_overflow=0, **_JSON_CODEC)
        event.listen(self.engine, "connect", _sqlite_pragmas)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="simwire-sqlite")
        self.conn: Connection | None = None

    async def run(self, work: Callable[[Connection], T], read_only: bool) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.thread, self._transaction, work, read_only)

    def _transaction(self, work: Callable[[Connection], T], read_only: bool) -> T:
        if self.conn is None:
            self.conn = self.engine.connect()
        conn = self.conn
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return result

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.engine.dispose()

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.thread, self._close)
        self.thread.shutdown(wait=False)


class Database:
    """Holds the engine and hands out sessions; one per process."""

    def __init__(self, database_url: str, **engine_kwargs: Any) -> None:
        self.url = database_url
        self.engine = create_engine(database_url, **engine_kwargs)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._runner: _SqliteRunner | None = None

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
        transaction is one hand-off to a thread of its own instead of several per statement
        (`_SqliteRunner`); on PostgreSQL it runs through `run_sync` on a pooled connection.
        For the hot paths: `work` must not wait on anything but the database."""
        if self.is_sqlite:
            if self._runner is None:
                self._runner = _SqliteRunner(self.url)
            return await self._runner.run(work, read_only)
        if read_only:
            async with self.engine.connect() as conn:
                return await conn.run_sync(work)
        async with self.engine.begin() as conn:
            return await conn.run_sync(work)

    async def run_unit(self, work: Callable[[AsyncSession], Coroutine[Any, Any, T]]) -> T:
        """Runs `work(session)`, an async unit of work whose only awaits are its session's
        `execute` and `flush`, as one transaction: on SQLite through `run`, in one hand-off
        (app/db/immediate.py), on PostgreSQL in `transaction()`."""
        if not self.is_sqlite:
            async with self.transaction() as session:
                return await work(session)
        return await self.run(lambda conn: immediate.run(work, conn))

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.close()
        await self.engine.dispose()
