"""Benchmark the send API: `POST /v1/messages` on prepaid credits against a bare Litestar ceiling.

Usage: .venv/bin/python scripts/bench/send.py [--duration-s 10] [--concurrency 16] [--phones 10]
       [--postgres-url URL | --no-postgres] [--reference-phones] [--json out.json]

Each run starts the server as its own process (`python -m app.cli serve`) on a fresh database, a
project with granted credits, and N phones; then C concurrent httpx clients (one AsyncClient
each) send `{to, message}` as fast as they are answered for the fixed duration. Runs: SQLite
always; PostgreSQL on `--postgres-url`, else on a throwaway server from
`tests/support/postgres.py` when its binaries are installed (`--no-postgres` skips it).

Reported per run: accepted (202) requests/s, messages/s that reached `sent` inside the window
(from each message's `sent_at`), accept latency p50/p99, and the requests/s the same clients get
from a bare Litestar app (`GET /ping` → `{"ok": true}`) served by uvicorn the same way, in the same
invocation, so `ratio_to_bare` is the figure to track. Client and server share the machine.

The phones are raw `websockets` clients that answer each `send_sms` with `accepted` and a
successful `send_result` at once (`--reference-phones`: the reference `PhoneClient` with the
`FakeRadio` instead, which also reports delivery). The per-SIM rate limit (default 20 parts per
minute) would cap `sent` at 20 × N per minute, so these runs set SIMWIRE_SIM_PARTS_PER_MINUTE to
1,000,000,000; the per-device in-flight cap stays at its default (10).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# This folder holds `x402.py`: keep it off the path so `import x402` finds the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from sqlalchemy import select  # noqa: E402

from app.db.engine import Database  # noqa: E402
from app.db.models import Message  # noqa: E402
from app.services import credits, devices  # noqa: E402
from app.services.projects import create_project  # noqa: E402
from scripts.bench.phones import (  # noqa: E402
    BenchDatabase,
    PhoneFleet,
    cpu_seconds,
    free_port,
    fresh_database,
    percentiles,
    report,
    server_process,
)

DEFAULT_JSON = REPO_ROOT / "scripts" / "bench" / "results" / "send.json"
SIM_PARTS_PER_MINUTE = 1_000_000_000


# The bare ceiling ------------------------------------------------------------------------


def serve_bare(port: int) -> None:
    """A Litestar app with one JSON endpoint, served as `simwire serve` serves Simwire."""
    import uvicorn
    from litestar import Litestar, get

    @get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    uvicorn.run(
        Litestar([ping], logging_config=None),
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_config=None,
    )


@contextlib.asynccontextmanager
async def bare_server() -> Any:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-bare", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{url}/ping")).status_code == 200:
                        break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the bare Litestar server did not start")
                await asyncio.sleep(0.1)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


# Load ------------------------------------------------------------------------------------


async def drive(
    base_url: str,
    concurrency: int,
    duration_s: float,
    make_request: Any,
    expected_status: int,
) -> dict[str, Any]:
    """C clients, each one request at a time, for `duration_s`; counts answers by status."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures: list[str] = []
    ok = 0
    deadline = time.perf_counter() + duration_s
    counter = iter(range(10**9))

    async def client_loop() -> None:
        nonlocal ok
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await make_request(http, next(counter))
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == expected_status:
                    ok += 1
                    latencies.append(time.perf_counter() - started)
                elif len(failures) < 20:
                    failures.append(f"{response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "seconds": round(elapsed, 2),
        "ok": ok,
        "per_s": round(ok / elapsed, 1),
        "latency": percentiles(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "failures": failures[:20],
    }


async def bare_ceiling(concurrency: int, duration_s: float) -> dict[str, Any]:
    async with bare_server() as (url, pid):
        cpu0 = cpu_seconds(pid)
        result = await drive(url, concurrency, duration_s, lambda http, _: http.get("/ping"), 200)
        result["server_cpu_percent_of_one_core"] = round(
            (cpu_seconds(pid) - cpu0) / result["seconds"] * 100, 1
        )
    return result


async def start_reference_phones(ws_url: str, tokens: list[str], workdir: Path) -> Any:
    from app.phone.client import PhoneClient
    from app.phone.radios.fake import FakeRadio, fake_sims

    clients = []
    tasks = []
    for i, token in enumerate(tokens):
        client = PhoneClient(
            ws_url, token, FakeRadio(sims=fake_sims(1)), workdir / f"phone-{i}.db", heartbeat_s=30
        )
        clients.append(client)
        tasks.append(asyncio.create_task(client.run()))
    await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 60)

    async def stop() -> None:
        for client in clients:
            await client.stop()
        await asyncio.gather(*tasks, return_exceptions=True)

    return stop


async def sent_in_window(database_url: str, start: datetime, end: datetime) -> dict[str, int]:
    db = Database(database_url)
    try:
        async with db.sessions() as session:
            rows = (
                await session.execute(
                    select(Message.status, Message.sent_at).where(Message.direction == "out")
                )
            ).all()
    finally:
        await db.dispose()
    counts: dict[str, int] = {"total": len(rows), "sent_in_window": 0}
    for status, sent_at in rows:
        counts[status] = counts.get(status, 0) + 1
        if sent_at is not None:
            moment = sent_at if sent_at.tzinfo else sent_at.replace(tzinfo=UTC)
            if start <= moment <= end:
                counts["sent_in_window"] += 1
    return counts


async def engine_run(args: argparse.Namespace, database: BenchDatabase) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="simwire-bench-send-"))
    try:
        db = Database(database.url)
        try:
            created = await create_project(db, "bench-send")
            project_id = created.project.id
            await credits.grant(db, project_id, 10**15, note="benchmark")
            tokens = [
                (await devices.pair_device(db, project_id, f"bench-{i}")).token
                for i in range(args.phones)
            ]
        finally:
            await db.dispose()
        headers = {"Authorization": f"Bearer {created.first_key.raw}"}
        env = {"SIMWIRE_SIM_PARTS_PER_MINUTE": str(SIM_PARTS_PER_MINUTE)}
        async with server_process(database.url, workdir, env) as server:
            stop_phones = None
            fleet = PhoneFleet(heartbeat_s=30)
            stop = asyncio.Event()
            if args.reference_phones:
                stop_phones = await start_reference_phones(server.url, tokens, workdir)
            else:
                gate = asyncio.Semaphore(50)
                phone_tasks = [
                    asyncio.create_task(
                        fleet.run_phone(server.ws_url, token, f"+1415556{i:04d}", gate, stop)
                    )
                    for i, token in enumerate(tokens)
                ]
                while fleet.ready < args.phones:
                    await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=server.url) as http:
                for _ in range(200):
                    sims = (await http.get("/v1/sims", headers=headers)).json()
                    if len(sims["live_sims"]) >= args.phones:
                        break
                    await asyncio.sleep(0.1)

            async def send_one(http: httpx.AsyncClient, n: int) -> httpx.Response:
                return await http.post(
                    "/v1/messages",
                    json={"to": f"+1415555{n % 10_000:04d}", "message": f"Order {n} shipped"},
                    headers=headers,
                )

            window_start = datetime.now(UTC)
            cpu0 = cpu_seconds(server.pid)
            load = await drive(server.url, args.concurrency, args.duration_s, send_one, 202)
            window_end = datetime.now(UTC)
            load["server_cpu_percent_of_one_core"] = round(
                (cpu_seconds(server.pid) - cpu0) / load["seconds"] * 100, 1
            )
            await asyncio.sleep(args.drain_s)
            counts = await sent_in_window(database.url, window_start, window_end)
            if stop_phones is not None:
                await stop_phones()
            else:
                stop.set()
                await asyncio.gather(*phone_tasks, return_exceptions=True)
            log_tail = server.log_path.read_text(errors="replace").splitlines()[-20:]
        window_s = (window_end - window_start).total_seconds()
        return {
            "engine": database.engine,
            "accepted_per_s": load["per_s"],
            "sent_per_s": round(counts["sent_in_window"] / window_s, 1),
            "accept_latency": load["latency"],
            "phone_accepted_to_accept_ack": percentiles(fleet.accept_ack_s),
            "load": load,
            "messages_by_status_after_drain": counts,
            "drain_s": args.drain_s,
            "phone_error_frames": fleet.errors[:10],
            "server_log_tail": log_tail,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "duration_s": args.duration_s,
        "concurrency": args.concurrency,
        "phones": args.phones,
        "phone_kind": "reference PhoneClient + FakeRadio" if args.reference_phones else "raw",
        "settings": {
            "SIMWIRE_SIM_PARTS_PER_MINUTE": SIM_PARTS_PER_MINUTE,
            "note": "raised so the per-SIM rate limit (default 20 parts/min) does not cap `sent`",
        },
    }
    result["bare_litestar"] = await bare_ceiling(args.concurrency, args.duration_s)
    bare = result["bare_litestar"]["per_s"]
    runs = []
    engines: list[tuple[str, str | None]] = [("sqlite", None)]
    started_pg = None
    if args.postgres_url:
        engines.append(("postgresql", args.postgres_url))
    elif not args.no_postgres:
        try:
            from tests.support.postgres import start_postgres

            started_pg = start_postgres()
            engines.append(("postgresql", started_pg.url))
        except Exception as exc:
            result["postgresql_skipped"] = f"could not start PostgreSQL: {exc}"
    try:
        for _, url in engines:
            workdir = Path(tempfile.mkdtemp(prefix="simwire-bench-db-"))
            database = await fresh_database(workdir, url)
            try:
                outcome = await engine_run(args, database)
            finally:
                await database.cleanup()
                shutil.rmtree(workdir, ignore_errors=True)
            outcome["ratio_to_bare"] = round(outcome["accepted_per_s"] / bare, 3) if bare else None
            runs.append(outcome)
    finally:
        if started_pg is not None:
            started_pg.stop()
    result["runs"] = runs
    return result


def print_table(result: dict[str, Any]) -> None:
    bare = result["bare_litestar"]
    print(
        f"{result['concurrency']} clients × {result['duration_s']} s, {result['phones']} "
        f"{result['phone_kind']} phones; SIMWIRE_SIM_PARTS_PER_MINUTE="
        f"{result['settings']['SIMWIRE_SIM_PARTS_PER_MINUTE']} (rate limit out of the way)"
    )
    header = (
        f"{'run':<22}{'req/s':>10}{'sent/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'× bare':>9}"
        f"{'srv CPU%':>10}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{'bare Litestar GET':<22}{bare['per_s']:>10}{'':>10}{bare['latency']['p50_ms']:>10}"
        f"{bare['latency']['p99_ms']:>10}{1:>9}{bare['server_cpu_percent_of_one_core']:>10}"
    )
    for run in result["runs"]:
        latency = run["accept_latency"]
        print(
            f"{'POST /v1/messages ' + run['engine'][:6]:<22}{run['accepted_per_s']:>10}"
            f"{run['sent_per_s']:>10}{latency.get('p50_ms', '-'):>10}"
            f"{latency.get('p99_ms', '-'):>10}{run['ratio_to_bare']:>9}"
            f"{run['load']['server_cpu_percent_of_one_core']:>10}"
        )
        frames = run["phone_accepted_to_accept_ack"]
        if frames.get("n"):
            print(
                f"  {run['engine']}: phone accepted → accept_ack p50 {frames['p50_ms']} ms, "
                f"p99 {frames['p99_ms']} ms, max {frames['max_ms']} ms (ack timeout 10 s)"
            )
        non_202 = {k: v for k, v in run["load"]["statuses"].items() if k != "202"}
        if non_202 or run["load"]["failures"]:
            print(f"  {run['engine']}: other answers {non_202}, e.g. {run['load']['failures'][:2]}")
    if "postgresql_skipped" in result:
        print(result["postgresql_skipped"])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--phones", type=int, default=10)
    parser.add_argument("--drain-s", type=float, default=3.0, help="wait before counting `sent`")
    parser.add_argument("--postgres-url", help="postgresql+asyncpg://… of a server to use")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite run only")
    parser.add_argument("--reference-phones", action="store_true")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    report(asyncio.run(run(args)), args.json, print_table)


if __name__ == "__main__":
    main()
