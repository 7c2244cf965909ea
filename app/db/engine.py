"""The async engine and session factory for SQLite (embedded) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Connection, event, make_url, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.db import immediate
from app.logs import get_logger

READ_ONLY = "simwire_read_only"
# The hot paths' writes on SQLite are checkpointed into the database file at most this often.
CHECKPOINT_EVERY_S = 0.5
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


log = get_logger("simwire.db")


class _Locked(Exception):
    """Another connection holds the lock a transaction on the loop's thread needs."""


def _is_busy(exc: OperationalError) -> bool:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


AFTER_COMMIT: list[Callable[[Connection], None]] = []
"""Called with each of the SQLite runner's connections once a transaction on it has committed.
A pooled connection tells that by going back to its pool (the pool's `checkin` event); the
runner holds its connections, so this is how a listener learns it (app/webhooks/wakeup.py)."""


def _transaction(conn: Connection, work: Callable[[Connection], T], read_only: bool) -> T:
    try:
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
        result = work(conn)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    for listener in AFTER_COMMIT:
        listener(conn)
    return result


class _SqliteRunner:
    """The hot paths' own SQLite connections, beside the async engine's: they write as another
    process would (WAL, BEGIN IMMEDIATE, the busy timeout).

    A transaction here costs 0.1–1 ms of SQLite's own work, so it runs on the event loop's
    thread, where it needs no hand-off: on a thread of its own, SQLite lets go of the GIL at
    every step and takes it back from the busy loop, which can take up to the interpreter's
    5 ms switch interval (an 8-row claim measured 1.7 ms beside the loop, 0.14 ms alone). The
    loop's connection never waits for a lock: while another connection holds the write lock
    (the async engine's, whose transaction needs the loop to go on, or another process's),
    the transaction goes to the runner's thread instead, which waits up to the busy timeout.
    Work that may run for many milliseconds (thousands of rows) goes there too, with
    `beside_loop`, so that it does not hold up the loop, and so do the WAL's checkpoints (each
    copies the log into the database file and waits for the disk twice): the loop's connection
    makes none itself, and after its writes one runs on the runner's thread at most every
    `CHECKPOINT_EVERY_S`."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url).set(drivername="sqlite")
        self.engine = create_sync_engine(url, pool_size=2, max_overflow=0, **_JSON_CODEC)
        event.listen(self.engine, "connect", _sqlite_pragmas)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="simwire-sqlite")
        self.on_loop: Connection | None = None  # used only on the loop's thread
        self.beside: Connection | None = None  # used only on `thread`
        self.checkpoint: asyncio.Future[None] | None = None
        self.checkpoint_started_at = -CHECKPOINT_EVERY_S
        self.checkpoints = 0  # how many have run, for tests and the curious

    async def run(self, work: Callable[[Connection], T], read_only: bool, beside_loop: bool) -> T:
        loop = asyncio.get_running_loop()
        if not beside_loop:
            try:
                result = self._on_loop(work, read_only)
            except _Locked:
                pass
            else:
                if not read_only:
                    self._checkpoint_soon(loop)
                return result
        return await loop.run_in_executor(self.thread, self._beside, work, read_only)

    def _on_loop(self, work: Callable[[Connection], T], read_only: bool) -> T:
        if self.on_loop is None:
            self.on_loop = self.engine.connect()
            self.on_loop.exec_driver_sql("PRAGMA busy_timeout=0")
            self.on_loop.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
            self.on_loop.commit()
        try:
            return _transaction(self.on_loop, work, read_only)
        except OperationalError as exc:
            # Nothing was written: a write meets a lock only at its BEGIN IMMEDIATE (it holds
            # the write lock from then on), a read (in WAL, only at a rare moment such as
            # another connection's recovery) changes nothing. It can go again beside the loop.
            if _is_busy(exc):
                raise _Locked from exc
            raise

    def _checkpoint_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.checkpoint is None and loop.time() - self.checkpoint_started_at >= (
            CHECKPOINT_EVERY_S
        ):
            self.checkpoint_started_at = loop.time()
            self.checkpoint = loop.run_in_executor(self.thread, self._checkpoint)
            self.checkpoint.add_done_callback(self._checkpoint_done)

    def _checkpoint(self) -> None:
        conn = self._beside_connection()
        # PASSIVE: copies what no reader still needs, waits for no one.
        conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        conn.commit()
        self.checkpoints += 1

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self.checkpoint = None
        if not future.cancelled() and future.exception() is not None:
            # The next write starts another; until one succeeds the log only grows.
            log.error("sqlite_checkpoint_failed", error=repr(future.exception()))

    def _beside_connection(self) -> Connection:
        if self.beside is None:
            self.beside = self.engine.connect()
        return self.beside

    def _beside(self, work: Callable[[Connection], T], read_only: bool) -> T:
        return _transaction(self._beside_connection(), work, read_only)

    def _close_beside(self) -> None:
        if self.beside is not None:
            self.beside.close()
            self.beside = None

    async def close(self) -> None:
        if self.checkpoint is not None:
            with contextlib.suppress(Exception):
                await self.checkpoint
        await asyncio.get_running_loop().run_in_executor(self.thread, self._close_beside)
        self.thread.shutdown(wait=False)
        if self.on_loop is not None:
            self.on_loop.close()
            self.on_loop = None
        self.engine.dispose()


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

    async def run(
        self,
        work: Callable[[Connection], T],
        *,
        read_only: bool = False,
        beside_loop: bool = False,
    ) -> T:
        """Runs `work(conn)` — synchronous Core statements on a `Connection` — as one
        transaction (committed when it returns, rolled back if it raises). On SQLite the whole
        transaction runs at once on the event loop's thread, or in one hand-off to a thread of
        its own when another connection holds the lock or the caller says the work is large
        (`beside_loop`; see `_SqliteRunner`); on PostgreSQL it runs through `run_sync` on a
        pooled connection. For the hot paths: `work` must not wait on anything but the
        database."""
        if self.is_sqlite:
            if self._runner is None:
                self._runner = _SqliteRunner(self.url)
            return await self._runner.run(work, read_only, beside_loop)
        if read_only:
            async with self.engine.connect() as conn:
                return await conn.run_sync(work)
        async with self.engine.begin() as conn:
            return await conn.run_sync(work)

    async def run_unit(
        self,
        work: Callable[[AsyncSession], Coroutine[Any, Any, T]],
        *,
        beside_loop: bool = False,
    ) -> T:
        """Runs `work(session)`, an async unit of work whose only awaits are its session's
        `execute`, `flush` and `run_sync`, as one transaction through `run`, all at once
        (app/db/immediate.py). On PostgreSQL that is one `run_sync` for the whole unit, where
        `transaction()` would take one for each statement."""
        return await self.run(lambda conn: immediate.run(work, conn), beside_loop=beside_loop)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.close()
        await self.engine.dispose()
