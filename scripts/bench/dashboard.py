"""Benchmark the dashboard's overview page with many messages in the project.

Usage: .venv/bin/python scripts/bench/dashboard.py [--messages 10000] [--loads 20]
       [--json scripts/bench/results/dashboard.json]

A fresh SQLite file in a temp dir, migrated; an owner registered with an invite and signed in
(the services the dashboard uses), a project with granted credits, and `--messages` outbound
messages sent through `POST /v1/messages` in requests of 1,000 recipients (no phone is
connected, so they are queued; then a third are marked delivered and a tenth failed, so the
counts and windows have something to add up). The server runs as its own process
(`python -m app.cli serve`). Measured: `--loads` sequential GETs of the overview page
(`/dashboard/p/{project}`, the whole HTML page as a browser gets it, signed in with the session
cookies) after two warm-up loads, and as many of the live panel it polls every 2 s
(`/dashboard/p/{project}/live`); p50, p90 and max of each, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# This folder holds `x402.py`: keep it off the path so `import x402` finds the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from sqlalchemy import text  # noqa: E402

from app.db.engine import Database  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.services import accounts, credits  # noqa: E402
from app.settings import Settings  # noqa: E402
from scripts.bench.phones import server_process  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "scripts" / "bench" / "results" / "dashboard.json"
SECRET_KEY = "dashboard-benchmark-secret-key-0123456789"
PASSWORD = "violet-harbour-42-lanterns"
BATCH = 1000


async def prepare(database_url: str) -> tuple[str, str, accounts.TokenPair]:
    """An owner, signed in, and a project with credit: (project id, its key, the tokens)."""
    settings = Settings(database_url=database_url, secret_key=SECRET_KEY)
    db = Database(database_url)
    try:
        invite = await accounts.create_invite(db)
        await accounts.register_user(
            db, settings, "owner@example.com", PASSWORD, "Bench Owner", invite.code
        )
        tokens = await accounts.sign_in(
            db, settings, "owner@example.com", PASSWORD, "127.0.0.1", accounts.utcnow()
        )
        user = await accounts.authenticate_user(
            db, settings, tokens.access_token, accounts.utcnow()
        )
        created = await accounts.create_user_project(db, user, "bench")
        await credits.grant(db, created.project.id, 10**12, note="dashboard benchmark")
    finally:
        await db.dispose()
    return created.project.id, created.first_key.raw, tokens


async def fill(url: str, key: str, count: int) -> float:
    """`count` messages through POST /v1/messages, 1,000 recipients a request; seconds."""
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for first in range(0, count, BATCH):
            size = min(BATCH, count - first)
            recipients = [f"+1415{2_000_000 + first + n:07d}" for n in range(size)]
            sent = await http.post(
                "/v1/messages",
                headers={"Authorization": f"Bearer {key}"},
                json={"to": recipients, "message": f"Order update {first}", "tag": "bench"},
            )
            if sent.status_code != 202:
                raise RuntimeError(f"send failed: {sent.status_code} {sent.text[:500]}")
    return time.perf_counter() - started


async def vary_statuses(database_url: str) -> int:
    """About a third delivered, a tenth failed: the overview's counts have every kind to add
    up. How many are delivered."""
    db = Database(database_url)
    try:
        async with db.transaction() as session:
            await session.execute(
                text(
                    "UPDATE messages SET status = 'delivered', delivered_at = created_at "
                    "WHERE seq % 3 = 0"
                )
            )
            await session.execute(
                text(
                    "UPDATE messages SET status = 'failed', failed_at = created_at, "
                    "error_code = 'generic_failure' WHERE seq % 10 = 1"
                )
            )
            delivered = (
                await session.execute(
                    text("SELECT count(*) FROM messages WHERE status = 'delivered'")
                )
            ).scalar_one()
    finally:
        await db.dispose()
    return int(delivered)


async def timed_loads(http: httpx.AsyncClient, path: str, loads: int) -> list[float]:
    for _ in range(2):
        (await http.get(path)).raise_for_status()
    timings = []
    for _ in range(loads):
        started = time.perf_counter()
        page = await http.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        if page.status_code != 200:
            raise RuntimeError(f"{path}: {page.status_code} {page.text[:300]}")
    return timings


def summary(timings: list[float]) -> dict[str, float]:
    ordered = sorted(timings)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[max(0, int(len(ordered) * 0.9) - 1)], 2),
        "max_ms": round(ordered[-1], 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="simwire-bench-dashboard-") as workdir:
        database_url = f"sqlite+aiosqlite:///{workdir}/simwire.db"
        upgrade(database_url)
        project_id, key, tokens = await prepare(database_url)
        env = {"SIMWIRE_SECRET_KEY": SECRET_KEY}
        async with server_process(database_url, Path(workdir), env) as server:
            url = server.url
            fill_s = await fill(url, key, args.messages)
            delivered = await vary_statuses(database_url)
            cookies = httpx.Cookies()
            cookies.set(
                "simwire_access", tokens.access_token, domain="127.0.0.1", path="/dashboard"
            )
            cookies.set(
                "simwire_refresh", tokens.refresh_token, domain="127.0.0.1", path="/dashboard"
            )
            async with httpx.AsyncClient(base_url=url, cookies=cookies, timeout=60) as http:
                overview = await timed_loads(http, f"/dashboard/p/{project_id}", args.loads)
                live = await timed_loads(http, f"/dashboard/p/{project_id}/live", args.loads)
                page = await http.get(f"/dashboard/p/{project_id}")
                if f"{delivered} delivered" not in page.text:
                    raise RuntimeError("the overview does not show the delivered count")
    return {
        "benchmark": "dashboard overview",
        "engine": "sqlite",
        "messages": args.messages,
        "loads": args.loads,
        "fill_s": round(fill_s, 2),
        "overview": summary(overview),
        "live_panel": summary(live),
        "overview_ms": [round(t, 2) for t in overview],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(
        f"dashboard overview, {result['messages']:,} messages (SQLite), {result['loads']} loads: "
        f"p50 {result['overview']['p50_ms']} ms, p90 {result['overview']['p90_ms']} ms, "
        f"max {result['overview']['max_ms']} ms; live panel p50 "
        f"{result['live_panel']['p50_ms']} ms (fill: {result['fill_s']} s)"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
