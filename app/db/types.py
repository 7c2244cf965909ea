"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stores naive UTC, always returns timezone-aware UTC (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name != "sqlite":
            process = super().bind_processor(dialect)  # process_bind_param, then the driver's
            return None if process is None else _keeping_last(process)

        def to_text(value: datetime | None) -> str | None:
            """SQLite's own `DATETIME` text (microseconds always), written by one `isoformat`
            instead of SQLAlchemy's `%`-format of a dict: half the cost."""
            naive = self.process_bind_param(value, dialect)
            return None if naive is None else naive.isoformat(" ", "microseconds")

        return _keeping_last(to_text)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def _keeping_last(process: Callable[[datetime | None], Any]) -> Callable[[datetime | None], Any]:
    """`process`, remembering its last value: the rows of a batch share their moments (one
    `now` for all, one expiry for a request's messages), and the same object is the same
    stored value. A sent message writes about ten datetimes."""
    last: tuple[datetime | None, Any] = (None, None)

    def processed(value: datetime | None) -> Any:
        nonlocal last
        seen, stored = last
        if value is seen:
            return stored
        stored = process(value)
        last = (value, stored)
        return stored

    return processed
