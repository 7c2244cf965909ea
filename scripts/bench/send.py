"""Benchmark the send API with `wrk`: `POST /v1/messages` on credits and `POST /v1/quotes`
against a bare Litestar endpoint, on SQLite, PostgreSQL and two instances on one PostgreSQL.

Usage: .venv/bin/python scripts/bench/send.py [--duration-s 10] [--connections 16] [--threads 1]
       [--phones 10] [--rate 100] [--bulk-n 10] [--postgres-url URL | --no-postgres]
       [--no-two-instances] [--json out.json]

Load comes from `wrk` (Debian's package; installed with `ensure_wrk` from scripts/lib/setup.sh
when missing), driven by `scripts/bench/send.lua`, which gives every request its own body and
prints a JSON summary (requests, statuses, latency percentiles). The bare ceiling is a
`Litestar([get("/ping")])` app answering `{"ok": true}`, served by uvicorn the way
`simwire serve` serves Simwire, hit by the same `wrk` command in the same invocation:
`ratio_to_bare` is the figure to track. The same app's `POST /v1/messages` reads a send's
body into a dataclass and answers 202 doing nothing else, hit with the sends' own requests:
its ratio is what the framework alone leaves of the ceiling for any send.

Each engine run starts the server as its own process (`python -m app.cli serve`, rate limits
off: SIMWIRE_RATE_LIMITS=false) on a fresh database with a project holding credits, and N raw
`websockets` phones in a separate process (`--run-phones`) that answer every `send_sms` with
`accepted` and a successful `send_result` at once; their CPU is reported. Then, in order:
1. `wrk` on `POST /v1/messages` (`{to, message}`, one recipient) for the duration: accepted
   (202) requests/s, latency p50/p99; messages reaching `sent` inside that window per second,
   and (after the queue drains, at most `--drain-s`) the share of accepted messages sent;
2. `wrk` on `POST /v1/quotes` with the same body and key;
3. accept latency at a fixed `--rate` requests/s offered: wrk has no fixed-rate mode, so a
   small open-loop asyncio client in this process sends on a fixed schedule over raw
   keep-alive connections (a new one when all are busy) and times each request from its
   scheduled start, so a stall is not hidden by waiting (no coordinated omission);
4. `--bulk-n` bulk sends of 1,000 recipients each, one at a time: time to 202, each once the
   phones have taken every earlier message, then `--bulk-n` more back to back (each while the
   phones still send the one before: 1,000 messages every ~0.1 s is several times what the
   hub sends, so these measure a server busy sending).
The two-instance run puts two servers on one PostgreSQL database, half the phones on each,
and one `wrk` per instance with half the connections each, at the same time.

The per-SIM rate limit would cap `sent` at 20 parts per minute per SIM, so these runs set
SIMWIRE_SIM_PARTS_PER_MINUTE to 1,000,000,000; everything else is at its default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
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
from sqlalchemy import func, select  # noqa: E402

from app.db.engine import Database  # noqa: E402
from app.db.models import Message  # noqa: E402
from app.services import credits, devices  # noqa: E402
from app.services.projects import create_project  # noqa: E402
from scripts.bench.phones import (  # noqa: E402
    BenchDatabase,
    ServerProcess,
    cpu_seconds,
    free_port,
    fresh_database,
    percentiles,
    report,
    server_process,
)

DEFAULT_JSON = REPO_ROOT / "scripts" / "bench" / "results" / "send.json"
LUA_SCRIPT = _HERE / "send.lua"
SETUP_SH = REPO_ROOT / "scripts" / "lib" / "setup.sh"
SIM_PARTS_PER_MINUTE = 1_000_000_000
UNFINISHED = ("queued", "sending", "accepted")


def ensure_wrk() -> str:
    """The `wrk` binary, installed from the distribution (as scripts/lib/setup.sh does) if
    missing."""
    found = shutil.which("wrk")
    if found is None:
        subprocess.run(["bash", "-c", f"source {SETUP_SH} && ensure_wrk"], check=True)
        found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed and could not be installed")
    return found


# The bare ceiling ------------------------------------------------------------------------


@dataclass
class BareDraft:
    """The bare app's send body."""

    to: str
    message: str


def serve_bare(port: int) -> None:
    """A Litestar app with two JSON endpoints, served as `simwire serve` serves Simwire:
    `GET /ping`, the ceiling, and `POST /v1/messages`, which reads a send's body into a
    dataclass and answers 202 with nothing done: the share of the ceiling the framework
    leaves any send."""
    import uvicorn
    from litestar import Litestar, get, post

    @get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @post("/v1/messages", status_code=202)
    async def accept(data: BareDraft) -> dict[str, str]:
        return {"to": data.to, "status": "accepted"}

    uvicorn.run(
        Litestar([ping, accept], logging_config=None),
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_config=None,
    )


@contextlib.asynccontextmanager
async def child_server(argv: list[str], ready_url: str, what: str) -> Any:
    """`python <argv>` in its own process until the block ends, once `ready_url` answers 200;
    yields its pid."""
    process = subprocess.Popen(
        [sys.executable, *argv], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(ready_url)).status_code == 200:
                        break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the {what} did not start")
                await asyncio.sleep(0.1)
        yield process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.asynccontextmanager
async def bare_server() -> Any:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with child_server(
        [__file__, "--serve-bare", str(port)], f"{url}/ping", "bare Litestar server"
    ) as pid:
        yield url, pid


# wrk -------------------------------------------------------------------------------------


async def run_wrk(
    args: argparse.Namespace, url: str, mode: str, key: str = "", connections: int | None = None
) -> dict[str, Any]:
    """One `wrk` run; returns its JSON summary with per-second and millisecond figures."""
    command = [
        args.wrk,
        f"-t{args.threads}",
        f"-c{connections or args.connections}",
        f"-d{args.duration_s}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        mode,
        key,
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    line = next((x for x in out.decode().splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out.decode()[-500:]} {err.decode()[-500:]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    seconds = raw["duration_us"] / 1e6
    expected = {"ping": "200", "send": "202", "quote": "200"}[mode]
    ok = raw["statuses"].get(expected, 0)
    return {
        "mode": mode,
        "seconds": round(seconds, 2),
        "requests": raw["requests"],
        "ok": ok,
        "per_s": round(ok / seconds, 1),
        "latency": {
            "p50_ms": round(raw["latency_us"]["p50"] / 1000, 2),
            "p90_ms": round(raw["latency_us"]["p90"] / 1000, 2),
            "p99_ms": round(raw["latency_us"]["p99"] / 1000, 2),
            "max_ms": round(raw["latency_us"]["max"] / 1000, 2),
        },
        "statuses": raw["statuses"],
        "socket_errors": raw["errors"],
    }


async def with_cpu(pids: list[int], work: Any) -> tuple[dict[str, Any], list[float]]:
    """Runs `work` and returns its result with each process's CPU (% of one core) meanwhile."""
    before = [cpu_seconds(pid) for pid in pids]
    started = time.perf_counter()
    result = await work
    elapsed = time.perf_counter() - started
    return result, [
        round((cpu_seconds(pid) - b) / elapsed * 100, 1)
        for pid, b in zip(pids, before, strict=True)
    ]


# A fixed-rate client ---------------------------------------------------------------------


KEEP_ALIVE_REUSE_S = 4.0


async def paced_sends(port: int, key: str, rate: float, duration_s: float) -> dict[str, Any]:
    """`POST /v1/messages` on a fixed schedule of `rate` per second (open loop), each timed
    from its scheduled start to the end of its response."""
    # Idle keep-alive connections, with when each was last used: one idle longer than the
    # server keeps it (uvicorn: 5 s) is closed, not written to, as an HTTP client pool does.
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    opened: list[asyncio.StreamWriter] = []
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    late_starts: list[float] = []

    async def one(n: int, scheduled: float) -> None:
        while idle and time.perf_counter() - idle[-1][2] > KEEP_ALIVE_REUSE_S:
            idle.pop()[1].close()
        if idle:
            reader, writer, _ = idle.pop()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened.append(writer)
        body = json.dumps(
            {"to": f"+1415556{n % 10_000:04d}", "message": f"Paced order {n} shipped"}
        ).encode()
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1
        idle.append((reader, writer, time.perf_counter()))

    tasks = []
    start = time.perf_counter() + 0.05
    for n in range(int(rate * duration_s)):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late_starts.append(-delay)
        tasks.append(asyncio.create_task(one(n, scheduled)))
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):  # counted, never hidden
            name = f"error:{type(outcome).__name__}"
            statuses[name] = statuses.get(name, 0) + 1
    for writer in opened:
        writer.close()
    return {
        "offered_per_s": rate,
        "seconds": duration_s,
        "statuses": statuses,
        "connections_opened": len(opened),
        "latency": percentiles(latencies),
        "client_late_starts_over_5ms": sum(1 for x in late_starts if x > 0.005),
    }


# Real area codes; each bulk send goes to 1,000 numbers no earlier one named, so nothing
# learned about a number on the way (parsed, looked up) is reused.
BULK_AREA_CODES = (415, 212, 646, 305, 617, 312, 702, 206, 503, 404)


def bulk_recipients(i: int) -> list[str]:
    area = BULK_AREA_CODES[i % len(BULK_AREA_CODES)]
    exchange = 556 + i // len(BULK_AREA_CODES)
    return [f"+1{area}{exchange}{r:04d}" for r in range(1000)]


async def bulk_sends(
    url: str, key: str, n: int, first: int = 0, database_url: str | None = None
) -> dict[str, Any]:
    """`n` sends of 1,000 recipients each, one at a time, each to numbers of its own (the
    `first`th batch of numbers on): time to the 202. With `database_url`, each waits until
    the phones have taken every earlier message (the server otherwise idle); without, each
    follows the last one's 202 while the phones still send its messages."""
    headers = {"Authorization": f"Bearer {key}"}
    latencies = []
    statuses: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for i in range(first, first + n):
            if database_url is not None:  # returns once no message is left unfinished
                await message_counts(database_url, datetime.now(UTC), datetime.now(UTC), 60)
            payload = {
                "to": bulk_recipients(i),
                "message": f"Bulk notice {i}",
            }
            started = time.perf_counter()
            response = await http.post("/v1/messages", json=payload, headers=headers)
            latencies.append(time.perf_counter() - started)
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
    return {
        "requests": n,
        "recipients": 1000,
        "after_queue_drained": database_url is not None,
        "statuses": statuses,
        "latency": percentiles(latencies),
    }


# Phones, in a process of their own -------------------------------------------------------


def run_phones() -> None:
    """`--run-phones`: reads {"phones": [[ws_url, token], ...]} from stdin, connects every
    phone, prints `ready`, answers `send_sms` at once until stdin closes, then prints counts."""
    from websockets.asyncio.client import connect

    config = json.loads(sys.stdin.readline())
    counts = {"send_sms": 0, "errors": 0}

    async def phone(ws_url: str, token: str, number: str, ready: asyncio.Event) -> None:
        async with connect(f"{ws_url}?token={token}", ping_interval=None, max_queue=256) as ws:
            first = json.loads(await ws.recv())
            if first.get("type") != "connected":
                raise RuntimeError(f"expected `connected`, got {first}")
            await ws.send(
                json.dumps(
                    {
                        "type": "hello",
                        "device": {"model": "bench", "os": "bench", "app_version": "0"},
                        "sims": [{"slot": 0, "number": number, "carrier": "bench"}],
                    }
                )
            )
            ready.set()
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "send_sms":
                    counts["send_sms"] += 1
                    await ws.send(json.dumps({"type": "accepted", "id": frame["id"]}))
                    await ws.send(
                        json.dumps({"type": "send_result", "id": frame["id"], "success": True})
                    )
                elif kind == "ping":
                    await ws.send(
                        json.dumps({"type": "heartbeat", "battery": 80, "charging": True})
                    )
                elif kind == "error":
                    counts["errors"] += 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        readies = []
        tasks = []
        for i, (ws_url, token) in enumerate(config["phones"]):
            ready = asyncio.Event()
            readies.append(ready)
            tasks.append(asyncio.create_task(phone(ws_url, token, f"+1415557{i:04d}", ready)))
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes stdin
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(json.dumps(counts), flush=True)

    asyncio.run(main())


@contextlib.asynccontextmanager
async def phone_process(phones: list[tuple[str, str]]) -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--run-phones",
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps({"phones": phones}).encode() + b"\n")
    await process.stdin.drain()
    line = await asyncio.wait_for(process.stdout.readline(), 180)
    if line.strip() != b"ready":
        raise RuntimeError(f"the phones did not connect: {line!r}")
    summary: dict[str, Any] = {"pid": process.pid}
    try:
        yield summary
    finally:
        process.stdin.close()
        with contextlib.suppress(Exception):
            out = await asyncio.wait_for(process.stdout.read(), 20)
            summary.update(json.loads(out.decode().strip().splitlines()[-1]))
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def wait_for_live_sims(url: str, key: str, count: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url) as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sims = (await http.get("/v1/sims", headers=headers)).json()
            if len(sims["live_sims"]) >= count:
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"fewer than {count} SIMs live after 60 s")


# Counting what was sent ------------------------------------------------------------------


async def message_counts(
    database_url: str, start: datetime, end: datetime, drain_s: float
) -> dict[str, Any]:
    """Outbound messages by status once none is unfinished (or `drain_s` passed), and how many
    reached `sent` between `start` and `end`."""
    db = Database(database_url)
    try:
        deadline = time.monotonic() + drain_s
        while True:
            async with db.sessions() as session:
                by_status = dict(
                    (
                        await session.execute(
                            select(Message.status, func.count())
                            .where(Message.direction == "out")
                            .group_by(Message.status)
                        )
                    ).all()
                )
            if not any(by_status.get(s) for s in UNFINISHED) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        drained_in = round(drain_s - max(0.0, deadline - time.monotonic()), 1)
        async with db.sessions() as session:
            in_window = (
                await session.execute(
                    select(func.count()).where(
                        Message.direction == "out", Message.sent_at >= start, Message.sent_at <= end
                    )
                )
            ).scalar_one()
    finally:
        await db.dispose()
    total = sum(by_status.values())
    return {
        "by_status": by_status,
        "total": total,
        "sent_in_window": int(in_window),
        "drained_in_s": drained_in,
    }


# One engine run --------------------------------------------------------------------------


async def prepare_project(database_url: str, phones: int) -> tuple[str, list[str]]:
    db = Database(database_url)
    try:
        created = await create_project(db, "bench-send")
        project_id = created.project.id
        await credits.grant(db, project_id, 10**15, note="benchmark")
        tokens = [
            (await devices.pair_device(db, project_id, f"bench-{i}")).token for i in range(phones)
        ]
    finally:
        await db.dispose()
    return created.first_key.raw, tokens


@contextlib.asynccontextmanager
async def servers(database: BenchDatabase, workdir: Path, count: int) -> Any:
    env = {"SIMWIRE_SIM_PARTS_PER_MINUTE": str(SIM_PARTS_PER_MINUTE)}
    async with contextlib.AsyncExitStack() as stack:
        started: list[ServerProcess] = []
        for n in range(count):
            instance_env = {**env, "SIMWIRE_INSTANCE_ID": f"bench-{n}"} if count > 1 else env
            started.append(
                await stack.enter_async_context(server_process(database.url, workdir, instance_env))
            )
        yield started


async def engine_run(
    args: argparse.Namespace, database: BenchDatabase, label: str, instances: int = 1
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="simwire-bench-send-"))
    try:
        key, tokens = await prepare_project(database.url, args.phones)
        async with servers(database, workdir, instances) as procs:
            placement = [(procs[i % instances].ws_url, t) for i, t in enumerate(tokens)]
            async with phone_process(placement) as phones:
                await wait_for_live_sims(procs[0].url, key, args.phones)
                pids = [p.pid for p in procs] + [phones["pid"]]
                window_start = datetime.now(UTC)
                per_instance = max(1, args.connections // instances)
                (sends, cpu) = await with_cpu(
                    pids,
                    asyncio.gather(
                        *(run_wrk(args, p.url, "send", key, per_instance) for p in procs)
                    ),
                )
                window_end = datetime.now(UTC)
                counts = await message_counts(database.url, window_start, window_end, args.drain_s)
                outcome: dict[str, Any] = {
                    "run": label,
                    "engine": database.engine,
                    "instances": instances,
                    "send": sends,
                    "accepted_per_s": round(sum(s["per_s"] for s in sends), 1),
                    "accepted": sum(s["ok"] for s in sends),
                    "accept_latency_p50_ms": max(s["latency"]["p50_ms"] for s in sends),
                    "accept_latency_p99_ms": max(s["latency"]["p99_ms"] for s in sends),
                    "server_cpu_percent": cpu[:-1],
                    "phones_cpu_percent": cpu[-1],
                    "messages": counts,
                }
                window_s = (window_end - window_start).total_seconds()
                outcome["sent_per_s"] = round(counts["sent_in_window"] / window_s, 1)
                # Every stored message was accepted (wrk does not count the answers still in
                # flight when it stops, so its 202 count is a little lower).
                stored = counts["total"]
                sent_total = counts["by_status"].get("sent", 0)
                outcome["sent_share_of_accepted"] = (
                    round(sent_total / stored, 3) if stored else None
                )
                outcome["sent_in_window_share_of_accepted"] = (
                    round(counts["sent_in_window"] / stored, 3) if stored else None
                )
                if instances == 1:
                    (quotes, qcpu) = await with_cpu(
                        pids[:1], run_wrk(args, procs[0].url, "quote", key)
                    )
                    quotes["server_cpu_percent"] = qcpu[0]
                    outcome["quotes"] = quotes
                    outcome["paced"] = await paced_sends(
                        procs[0].port, key, args.rate, args.duration_s
                    )
                    outcome["bulk_1000"] = await bulk_sends(
                        procs[0].url, key, args.bulk_n, database_url=database.url
                    )
                    outcome["bulk_1000_back_to_back"] = await bulk_sends(
                        procs[0].url, key, args.bulk_n, first=args.bulk_n
                    )
            outcome["phones"] = {k: v for k, v in phones.items() if k != "pid"}
            outcome["server_log_tail"] = [
                line
                for p in procs
                for line in p.log_path.read_text(errors="replace").splitlines()[-10:]
            ]
        return outcome
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(args: argparse.Namespace, result: dict[str, Any]) -> Iterator[str | None]:
    """The PostgreSQL server to run on: `--postgres-url`, else a throwaway one stopped at the
    end; None with `--no-postgres` or when none could start (said in `result`)."""
    if args.postgres_url or args.no_postgres:
        yield args.postgres_url
        return
    try:
        from tests.support.postgres import start_postgres

        started = start_postgres()
    except Exception as exc:
        result["postgresql_skipped"] = f"could not start PostgreSQL: {exc}"
        yield None
        return
    try:
        yield started.url
    finally:
        started.stop()


@contextlib.asynccontextmanager
async def bench_database(postgres_url: str | None) -> AsyncIterator[BenchDatabase]:
    """A fresh, migrated database (SQLite in a temp dir when `postgres_url` is None), removed
    at the end."""
    workdir = Path(tempfile.mkdtemp(prefix="simwire-bench-db-"))
    database = await fresh_database(workdir, postgres_url)
    try:
        yield database
    finally:
        await database.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    args.wrk = ensure_wrk()
    result: dict[str, Any] = {
        "load_generator": f"wrk -t{args.threads} -c{args.connections} -d{args.duration_s}s",
        "duration_s": args.duration_s,
        "connections": args.connections,
        "phones": args.phones,
        "settings": {
            "SIMWIRE_SIM_PARTS_PER_MINUTE": SIM_PARTS_PER_MINUTE,
            "SIMWIRE_RATE_LIMITS": "false",
        },
    }
    async with bare_server() as (url, pid):
        bare, cpu = await with_cpu([pid], run_wrk(args, url, "ping"))
        bare["server_cpu_percent"] = cpu[0]
        bare_post, cpu = await with_cpu([pid], run_wrk(args, url, "send"))
        bare_post["server_cpu_percent"] = cpu[0]
        bare_post["ratio_to_bare"] = round(bare_post["per_s"] / bare["per_s"], 3)
    result["bare_litestar"] = bare
    result["bare_litestar_post"] = bare_post
    runs: list[dict[str, Any]] = []
    with postgres_server(args, result) as pg_url:
        plans: list[tuple[str, str | None, int]] = [("sqlite", None, 1)]
        if pg_url:
            plans.append(("postgresql", pg_url, 1))
            if not args.no_two_instances:
                plans.append(("postgresql ×2", pg_url, 2))
        for label, url, instances in plans:
            async with bench_database(url) as database:
                outcome = await engine_run(args, database, label, instances)
            outcome["ratio_to_bare"] = round(outcome["accepted_per_s"] / bare["per_s"], 3)
            if "quotes" in outcome:
                outcome["quotes"]["ratio_to_bare"] = round(
                    outcome["quotes"]["per_s"] / bare["per_s"], 3
                )
            runs.append(outcome)
    result["runs"] = runs
    return result


def print_table(result: dict[str, Any]) -> None:
    bare = result["bare_litestar"]
    print(
        f"{result['load_generator']}, {result['phones']} raw phones in their own process; "
        f"SIMWIRE_SIM_PARTS_PER_MINUTE={SIM_PARTS_PER_MINUTE}, SIMWIRE_RATE_LIMITS=false"
    )
    header = (
        f"{'run':<30}{'req/s':>9}{'× bare':>8}{'p50 ms':>9}{'p99 ms':>9}{'sent/s':>9}"
        f"{'sent %':>8}{'srv CPU%':>12}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{'bare Litestar GET /ping':<30}{bare['per_s']:>9}{1:>8}{bare['latency']['p50_ms']:>9}"
        f"{bare['latency']['p99_ms']:>9}{'':>9}{'':>8}{bare['server_cpu_percent']:>12}"
    )
    floor = result["bare_litestar_post"]
    print(
        f"{'bare Litestar POST, no work':<30}{floor['per_s']:>9}{floor['ratio_to_bare']:>8}"
        f"{floor['latency']['p50_ms']:>9}{floor['latency']['p99_ms']:>9}{'':>9}{'':>8}"
        f"{floor['server_cpu_percent']:>12}"
    )
    for run in result["runs"]:
        share = run["sent_share_of_accepted"]
        print(
            f"{'POST /v1/messages ' + run['run']:<30}{run['accepted_per_s']:>9}"
            f"{run['ratio_to_bare']:>8}{run['accept_latency_p50_ms']:>9}"
            f"{run['accept_latency_p99_ms']:>9}{run['sent_per_s']:>9}"
            f"{round(share * 100, 1) if share is not None else '-':>8}"
            f"{'+'.join(str(c) for c in run['server_cpu_percent']):>12}"
        )
        if "quotes" in run:
            q = run["quotes"]
            print(
                f"{'POST /v1/quotes ' + run['run']:<30}{q['per_s']:>9}{q['ratio_to_bare']:>8}"
                f"{q['latency']['p50_ms']:>9}{q['latency']['p99_ms']:>9}{'':>9}{'':>8}"
                f"{q['server_cpu_percent']:>12}"
            )
    for run in result["runs"]:
        notes = [f"phones process CPU {run['phones_cpu_percent']} %"]
        if "paced" in run:
            p = run["paced"]
            notes.append(
                f"at {p['offered_per_s']} req/s offered: p50 {p['latency'].get('p50_ms')} ms, "
                f"p99 {p['latency'].get('p99_ms')} ms ({p['statuses']})"
            )
            for label, b in (
                ("bulk 1,000 recipients, queue empty", run["bulk_1000"]),
                ("back to back", run["bulk_1000_back_to_back"]),
            ):
                notes.append(
                    f"{label}: p50 {b['latency'].get('p50_ms')} ms, max "
                    f"{b['latency'].get('max_ms')} ms ({b['statuses']})"
                )
        others = {k: v for s in run["send"] for k, v in s["statuses"].items() if k != "202"}
        if others:
            notes.append(f"other answers {others}")
        print(f"  {run['run']}: " + "; ".join(notes))
    if "postgresql_skipped" in result:
        print(result["postgresql_skipped"])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]))
        return
    if len(sys.argv) == 2 and sys.argv[1] == "--run-phones":
        run_phones()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--phones", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="fixed rate for latency")
    parser.add_argument("--bulk-n", type=int, default=10)
    parser.add_argument("--drain-s", type=float, default=15.0, help="longest wait for the queue")
    parser.add_argument("--postgres-url", help="postgresql+asyncpg://… of a server to use")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite run only")
    parser.add_argument("--no-two-instances", action="store_true")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    report(asyncio.run(run(args)), args.json, print_table)


if __name__ == "__main__":
    main()
