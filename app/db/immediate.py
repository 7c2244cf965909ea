"""Runs an async unit of work written against `AsyncSession` synchronously, over a `Session`
bound to a synchronous connection (inside `Database.run`): its awaits are the session's own
`execute`, `flush` and `run_sync`, which here finish at once, so the coroutine completes in one step
without an event loop. A unit that awaits anything else is refused (RuntimeError) and its
transaction rolled back."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

T = TypeVar("T")


class ImmediateSession:
    """The part of `AsyncSession` the units run this way use, over a synchronous session."""

    def __init__(self, session: Session) -> None:
        self.sync_session = session

    async def execute(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        return self.sync_session.execute(statement, params, **kwargs)

    async def flush(self, objects: Any = None) -> None:
        self.sync_session.flush(objects)

    async def delete(self, instance: object) -> None:
        self.sync_session.delete(instance)

    def add(self, instance: object) -> None:
        self.sync_session.add(instance)

    def add_all(self, instances: Any) -> None:
        self.sync_session.add_all(instances)

    async def run_sync(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return work(self.sync_session, *args, **kwargs)

    def get_bind(self) -> Any:
        return self.sync_session.get_bind()


def run(work: Callable[[AsyncSession], Coroutine[Any, Any, T]], conn: Connection) -> T:
    """`work(session)` on `conn`, in the caller's transaction, with what it added flushed."""
    with Session(bind=conn, expire_on_commit=False) as session:
        unit = work(cast(AsyncSession, ImmediateSession(session)))
        try:
            unit.send(None)
        except StopIteration as done:
            session.flush()
            return cast(T, done.value)
        unit.close()
        raise RuntimeError("a unit of work run at once waited on something besides its session")
