"""What every request reads and almost nothing changes: API key → project and scopes, and each
project's sending policy, cached per process for at most `access_cache_ttl_s` (1 s by default).

A revocation, rotation or policy change drops the entry at once in the process that made it,
and on PostgreSQL in every other process too: the change's own transaction sends a
`pg_notify` on `ACCESS_CHANNEL`, delivered to every instance's channels backend when (and only
when) it commits, so a CLI change reaches the servers the same way. With SQLite there is one
server process; a change made by the CLI in another process reaches it through the TTL, so a
revoked key stops within `access_cache_ttl_s` everywhere, whichever process revoked it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import Database
from app.logs import get_logger

ACCESS_CHANNEL = "simwire_access"
MAX_ENTRIES = 10_000

log = get_logger("simwire.access_cache")
T = TypeVar("T")


@dataclass
class _Entries(Generic[T]):
    ttl_s: float
    clock: Callable[[], float]
    rows: dict[str, tuple[float, T]] = field(default_factory=dict)

    def get(self, key: str) -> T | None:
        found = self.rows.get(key)
        if found is None:
            return None
        if found[0] <= self.clock():
            self.rows.pop(key, None)
            return None
        return found[1]

    def put(self, key: str, value: T) -> None:
        if self.ttl_s <= 0:
            return
        if len(self.rows) >= MAX_ENTRIES:
            self.rows.clear()
        self.rows[key] = (self.clock() + self.ttl_s, value)


class AccessCache:
    """Keys by hash and policies by project id, each kept for at most `ttl_s` seconds."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys: _Entries[Any] = _Entries(ttl_s, clock)
        self.policies: _Entries[Any] = _Entries(ttl_s, clock)
        # Bumped by every invalidation: a read that started before one must not store what it
        # read (it may be the value just changed).
        self.generation = 0

    @property
    def ttl_s(self) -> float:
        return self.keys.ttl_s

    @ttl_s.setter
    def ttl_s(self, value: float) -> None:
        self.keys.ttl_s = self.policies.ttl_s = value

    def apply(self, change: dict[str, Any]) -> None:
        """Drops what a change names: `{"key_hashes": [...]}` and/or `{"project_id": ...}`."""
        self.generation += 1
        for key_hash in change.get("key_hashes") or ():
            self.keys.rows.pop(str(key_hash), None)
        project_id = change.get("project_id")
        if project_id:
            self.policies.rows.pop(str(project_id), None)

    async def listen(self, channels: Any) -> None:
        """Applies every change published on `ACCESS_CHANNEL` (other processes' commits)."""
        subscriber = await channels.subscribe([ACCESS_CHANNEL])
        try:
            async for event in subscriber.iter_events():
                try:
                    self.apply(json.loads(event))
                except (ValueError, TypeError, AttributeError):
                    log.warning("access_change_unreadable")
        finally:
            with contextlib.suppress(Exception):
                await channels.unsubscribe(subscriber)


_CACHES: weakref.WeakKeyDictionary[Database, AccessCache] = weakref.WeakKeyDictionary()


def cache_for(db: Database, ttl_s: float | None = None) -> AccessCache:
    """The process's cache for this database (one per `Database` object)."""
    cache = _CACHES.get(db)
    if cache is None:
        cache = AccessCache(1.0 if ttl_s is None else ttl_s)
        _CACHES[db] = cache
    elif ttl_s is not None:
        cache.ttl_s = ttl_s
    return cache


async def announce(session: AsyncSession, db: Database, change: dict[str, Any]) -> None:
    """Inside the transaction that makes `change`: on PostgreSQL a NOTIFY every instance
    receives at commit. Call `forget` after the commit for this process."""
    if not db.is_sqlite:
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": ACCESS_CHANNEL, "payload": json.dumps(change)},
        )


def forget(db: Database, change: dict[str, Any]) -> None:
    """After the change committed: this process stops using what it names at once."""
    cache_for(db).apply(change)


def listening(cache: AccessCache, channels: Any) -> asyncio.Task[None]:
    return asyncio.create_task(cache.listen(channels), name="access-cache-listen")
