"""Fixtures shared by every test: both database engines, a fresh migrated database per test,
and the API app over it."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import aiosqlite.core
import asyncpg
import httpx
import pytest
from litestar import Litestar

from app.api.app import create_app
from app.db.engine import Database
from app.db.migrate import upgrade
from app.settings import Settings
from tests.support.postgres import start_postgres

ENGINES = ["sqlite", "postgresql"]
# The operator key the test servers seal webhook secrets with.
TEST_SECRET_KEY = "test-operator-key-0123456789abcdef0123456789abcdef"
T = TypeVar("T")


def _daemon_sqlite_threads() -> None:
    """An aiosqlite connection a failing test left open must not keep pytest from exiting: its
    worker thread is not a daemon and waits forever for the close that never comes. (Fixtures
    close theirs at teardown; this is the net under the ones a test opens itself.)"""
    original_init = aiosqlite.core.Connection.__init__

    def init(self: aiosqlite.Connection, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        thread = getattr(self, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.daemon = True

    aiosqlite.core.Connection.__init__ = init  # type: ignore[method-assign]


_daemon_sqlite_threads()


def plain_dsn(url: str) -> str:
    """asyncpg wants postgresql://, SQLAlchemy wants postgresql+asyncpg://."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SIMWIRE_TEST_POSTGRES_URL (scripts/test sets it), else a server started for this run."""
    url = os.environ.get("SIMWIRE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    server = start_postgres()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


def run_in_thread(coroutine_fn: Callable[[], Awaitable[T]]) -> T:
    """Runs a coroutine on its own loop in a worker thread: for sync fixtures that are
    requested lazily from inside the running test loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_fn())).result()  # type: ignore[arg-type]


async def admin_execute(server_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(plain_dsn(server_url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_template(postgres_url: str) -> str:
    """A migrated database that each test copies (CREATE DATABASE … TEMPLATE) in milliseconds.
    One per pytest-xdist worker: PostgreSQL refuses to copy a template while another session
    is connected to it, and workers share one server."""
    name = f"simwire_template_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    run_in_thread(
        lambda: admin_execute(
            postgres_url, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"
        )
    )
    upgrade(postgres_url.rsplit("/", 1)[0] + f"/{name}")
    return name


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(
    engine_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A fresh, migrated, empty database of the parametrized engine."""
    if engine_name == "sqlite":
        path = tmp_path / "simwire.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    server_url: str = request.getfixturevalue("postgres_url")
    template: str = request.getfixturevalue("postgres_template")
    name = f"t_{uuid.uuid4().hex[:16]}"
    await admin_execute(server_url, f"CREATE DATABASE {name} TEMPLATE {template}")
    yield server_url.rsplit("/", 1)[0] + f"/{name}"
    await admin_execute(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Request limits are off here: many tests fire hundreds of requests at once on purpose.
    # tests/integration/test_rate_limits.py turns them on with real budgets.
    # Webhook tests deliver to receivers on loopback; tests of the SSRF rules turn
    # `webhook_allow_private` off.
    return Settings(
        database_url=database_url,
        log_json=True,
        rate_limits=False,
        secret_key=TEST_SECRET_KEY,
        webhook_allow_private=True,
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url)
    yield database
    await database.dispose()


@asynccontextmanager
async def app_client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client bound to the app in this test's own event loop, so the database
    connections of the test and of the app share one loop. The lifespan (background work such
    as the phone hub) is not run here: tests of that start a real server."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://simwire.test"
    ) as http:
        yield http


@pytest.fixture
async def client(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(settings, db)) as http:
        yield http
