"""Migrations go from empty to head and back down on both engines."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import inspect

from app.db.engine import Database
from app.db.migrate import downgrade, upgrade
from tests.conftest import admin_execute

DOMAIN_TABLES = {"organizations", "projects", "api_keys"}


async def table_names(url: str) -> set[str]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await db.dispose()


async def empty_database(engine_name: str, request, tmp_path) -> str:
    if engine_name == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    server_url = request.getfixturevalue("postgres_url")
    name = f"m_{uuid.uuid4().hex[:12]}"
    await admin_execute(server_url, f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"


async def test_upgrade_to_head_and_down_to_base(engine_name, request, tmp_path):
    url = await empty_database(engine_name, request, tmp_path)
    await asyncio.to_thread(upgrade, url)
    after_up = await table_names(url)
    assert after_up >= DOMAIN_TABLES
    assert "alembic_version" in after_up
    await asyncio.to_thread(downgrade, url, "base")
    assert (await table_names(url)) & DOMAIN_TABLES == set()
    await asyncio.to_thread(upgrade, url)
    assert await table_names(url) >= DOMAIN_TABLES
