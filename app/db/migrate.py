"""Run Alembic migrations programmatically (used by `simwire migrate`, serve and tests)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from app.db.engine import create_engine

ROOT = Path(__file__).resolve().parents[2]
_FIX = "run `simwire migrate`, or set SIMWIRE_DATABASE_URL to the database you use"


class DatabaseNotReady(Exception):
    """The database in SIMWIRE_DATABASE_URL is missing, unreachable or not at the latest
    schema. The message is one line that says which and how to fix it."""


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def _off_the_loop(fn: Callable[[], None]) -> None:
    """The async env calls asyncio.run, which cannot nest in a running loop: use a thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(fn).result()


def upgrade(database_url: str, revision: str = "head") -> None:
    _off_the_loop(lambda: command.upgrade(alembic_config(database_url), revision))


def downgrade(database_url: str, revision: str = "base") -> None:
    _off_the_loop(lambda: command.downgrade(alembic_config(database_url), revision))


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


def shown_url(database_url: str) -> str:
    """The URL as it may be printed: without its password."""
    return make_url(database_url).render_as_string(hide_password=True)


def sqlite_file(database_url: str) -> Path | None:
    """The file a SQLite URL names (None for other engines and in-memory databases)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if url.database.startswith("file:"):
        return None  # a URI filename; SQLite resolves it
    return Path(url.database).resolve()


def raise_if_missing(database_url: str) -> None:
    """A SQLite file that does not exist: connecting would create an empty one, so say so
    before anything connects."""
    path = sqlite_file(database_url)
    if path is not None and not path.exists():
        raise DatabaseNotReady(
            f"no database at {path} (SIMWIRE_DATABASE_URL={shown_url(database_url)}): run "
            "`simwire migrate` to create it, or set SIMWIRE_DATABASE_URL to the database you use"
        )


async def raise_unless_ready(database_url: str) -> None:
    """Raises DatabaseNotReady unless the database exists, answers and is at the latest
    schema. Creates nothing: a missing SQLite file is reported before connecting."""
    raise_if_missing(database_url)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            revision = await connection.run_sync(_revision)
    except (DBAPIError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseNotReady(
            f"cannot use the database at {shown_url(database_url)} ({reason}): check "
            "SIMWIRE_DATABASE_URL and that the database server is up"
        ) from None
    finally:
        await engine.dispose()
    head = head_revision()
    if revision is None:
        raise DatabaseNotReady(
            f"the database at {shown_url(database_url)} has no Simwire schema yet: {_FIX}"
        )
    if revision != head:
        raise DatabaseNotReady(
            f"the database at {shown_url(database_url)} is at schema revision {revision}, this "
            f"Simwire needs {head}: {_FIX}"
        )


def _revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
