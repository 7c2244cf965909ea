"""`UTCDateTime` on SQLite: its own bind processor writes exactly the text SQLAlchemy's
`DATETIME` would, and every value reads back as the same aware UTC moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.engine import Dialect

from app.db.types import UTCDateTime

MOMENTS = [
    datetime(2026, 12, 7, 23, 10, 40, 415530, tzinfo=UTC),
    datetime(2026, 12, 7, 23, 10, 40, tzinfo=UTC),  # no microseconds: still written
    datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),  # a year of three digits: padded
    datetime(2026, 6, 1, 1, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 6, 1, 1, 30, tzinfo=timezone(timedelta(hours=-8))),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_the_text_written_is_sqlalchemys_own(moment: datetime) -> None:
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = sqlite.DATETIME().bind_processor(dialect)
    assert ours is not None and theirs is not None
    assert ours(moment) == theirs(moment.astimezone(UTC).replace(tzinfo=None))


def test_every_moment_reads_back_as_itself_in_utc() -> None:
    table = sa.Table("moments", sa.MetaData(), sa.Column("at", UTCDateTime()))
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [{"at": moment} for moment in MOMENTS] + [{"at": None}])
        read = [row.at for row in conn.execute(sa.select(table.c.at))]
    assert read[:-1] == MOMENTS  # aware datetimes compare as moments
    assert all(value.tzinfo is UTC for value in read[:-1])
    assert read[-1] is None


@pytest.mark.parametrize(
    "dialect", [sqlite.dialect(), asyncpg.dialect()], ids=["sqlite", "asyncpg"]
)
def test_a_moment_repeated_across_rows_is_written_right_each_time(dialect: Dialect) -> None:
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    if dialect.name == "sqlite":
        text = sqlite.DATETIME().bind_processor(dialect)
        assert text is not None
    first, other = MOMENTS[0], MOMENTS[3]
    equal_but_not_same = datetime.fromisoformat(first.isoformat())
    for moment in [first, first, other, None, first, equal_but_not_same, other, None]:
        naive = None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)
        assert process(moment) == (text(naive) if dialect.name == "sqlite" else naive)


def test_a_naive_datetime_is_refused() -> None:
    dialect = sqlite.dialect()
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    with pytest.raises(ValueError, match="naive"):
        process(datetime(2026, 12, 7, 23, 0))
