"""A revoked or rotated key stops on every server process despite the key cache, whoever
revoked it: the API of one instance or the CLI in a process of its own. On PostgreSQL the
instances keep keys for an hour here (SIMWIRE_ACCESS_CACHE_TTL_S), so only the change's own
notification can stop them; on SQLite (one server process) a CLI revoke reaches the server
through the default 1 s TTL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from app.services.projects import create_key
from tests.e2e.test_instances import Instance
from tests.support.factories import new_tenant
from tests.support.live import eventually

ROOT = Path(__file__).resolve().parents[2]


async def status_on(instance: Instance, key: str) -> int:
    async with httpx.AsyncClient(base_url=instance.url) as http:
        response = await http.get("/v1/project", headers={"Authorization": f"Bearer {key}"})
    return response.status_code


def cli(database_url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env={**os.environ, "SIMWIRE_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


async def stopped_everywhere(instances: list[Instance], key: str) -> bool:
    return all(code == 401 for code in [await status_on(i, key) for i in instances])


async def test_revoked_and_rotated_keys_stop_on_both_instances_despite_the_cache(
    database_url, db, engine_name
):
    tenant = await new_tenant(db)
    by_api = await create_key(db, tenant.project_id, "by-api")
    by_cli = await create_key(db, tenant.project_id, "by-cli")
    rotated = await create_key(db, tenant.project_id, "rotated")
    if engine_name == "postgresql":
        env = {"SIMWIRE_ACCESS_CACHE_TTL_S": "3600"}
        instances = [Instance(database_url, "a", env), Instance(database_url, "b", env)]
    else:
        instances = [Instance(database_url, "a")]
    try:
        await asyncio.gather(*(i.ready() for i in instances))
        for key in (by_api.raw, by_cli.raw, rotated.raw):  # every instance has them cached
            assert [await status_on(i, key) for i in instances] == [200] * len(instances)
        async with httpx.AsyncClient(base_url=instances[0].url) as http:
            revoke = await http.delete(f"/v1/keys/{by_api.key.id}", headers=tenant.headers)
            assert revoke.status_code == 200, revoke.text
        await eventually(lambda: stopped_everywhere(instances, by_api.raw))
        cli(database_url, "key", "revoke", tenant.project_id, by_cli.key.id)
        await eventually(lambda: stopped_everywhere(instances, by_cli.raw))
        printed = cli(database_url, "key", "rotate", tenant.project_id, rotated.key.id)
        await eventually(lambda: stopped_everywhere(instances, rotated.raw))
        new_key = next(line.split()[-1] for line in printed.splitlines() if line.startswith("key:"))
        assert [await status_on(i, new_key) for i in instances] == [200] * len(instances)
        assert [await status_on(i, tenant.key) for i in instances] == [200] * len(instances)
    finally:
        for instance in instances:
            instance.stop()
