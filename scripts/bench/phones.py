"""Benchmark the phone hub: sockets held by one server process, their idle cost, enqueue→`send_sms`
latency and messages/s reaching `sent`.

Usage: .venv/bin/python scripts/bench/phones.py [--phones 10000] [--latency-messages 300]
       [--throughput-messages 20000] [--idle-s 30] [--phone-processes 2]
       [--postgres-url URL] [--server-env SIMWIRE_X=VALUE ...] [--json out.json]

The server runs as its own process (`python -m app.cli serve`, as `simwire serve` does) on a
fresh SQLite file in a temp dir, or on a fresh database created on `--postgres-url`. The phones
run in `--phone-processes` other processes (this script with `--worker`), so the server's
resident memory (/proc/PID/status) and CPU time (/proc/PID/stat) are its own alone. Each phone
is a raw `websockets` client: `hello` with one SIM, a heartbeat every `--heartbeat-s` (spread
over the period) and for every `ping`, and for every `send_sms` an `accepted` then a successful
`send_result` at once: the cheapest phone possible, so what is measured is the server.

Measured, in this order, with all N phones connected:
- RSS of the server before any phone connects and once all N phones have their SIM live, and
  the difference per socket;
- CPU the server spends while the N phones sit idle for `--idle-s` (nothing queued);
- enqueue→`send_sms` latency: M messages sent one at a time through `POST /v1/messages` (a key
  of a project with granted credits), each timed from just before the request until a phone
  holds the `send_sms` frame (the clock is CLOCK_MONOTONIC, shared by the processes); the 202
  latency of the same requests and the hub's part (202 → `send_sms`) are reported beside it;
- throughput: `--throughput-messages` queued messages written straight into the database, then
  one `POST /v1/messages` to wake the hub; messages/s reaching `sent` is their count over the
  time from the first one's dispatch to the last one's `sent_at` (the database's own times).

The per-SIM rate limit is raised (`--sim-parts-per-minute`, default 1,000,000) so that the
figures are the hub's, not the rate limiter's; the per-device in-flight cap stays at 10.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# This folder holds `x402.py`: keep it off the path so `import x402` finds the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosedOK  # noqa: E402

from app.db.engine import Database  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.services import credits  # noqa: E402
from app.services.projects import create_project  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "scripts" / "bench" / "results" / "phones.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# The server process ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class BenchDatabase:
    """Where the benchmark's data lives: a URL, and how to throw it away afterwards."""

    url: str
    engine: str
    cleanup: Callable[[], Awaitable[None]]


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _admin(server_url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(plain_dsn(server_url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def fresh_database(workdir: Path, postgres_url: str | None) -> BenchDatabase:
    """An empty, migrated database: a SQLite file in `workdir`, or a new database on the
    PostgreSQL server of `postgres_url` (dropped afterwards)."""
    if postgres_url is None:
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        upgrade(url)

        async def nothing() -> None:
            return None

        return BenchDatabase(url, "sqlite", nothing)
    name = f"simwire_bench_{secrets.token_hex(4)}"
    base, _, _ = postgres_url.rpartition("/")
    await _admin(postgres_url, f"CREATE DATABASE {name}")
    url = f"{base}/{name}"
    upgrade(url)

    async def drop() -> None:
        with contextlib.suppress(Exception):
            await _admin(postgres_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return BenchDatabase(url, "postgresql", drop)


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/phone/ws"

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.asynccontextmanager
async def server_process(
    database_url: str, workdir: Path, env_overrides: dict[str, str]
) -> AsyncIterator[ServerProcess]:
    """`python -m app.cli serve` on a free loopback port, ready when /readyz answers 200."""
    port = free_port()
    env = {
        **os.environ,
        "SIMWIRE_DATABASE_URL": database_url,
        "SIMWIRE_LOG_LEVEL": "WARNING",
        # A load test is one client far over any per-key budget: measure the server, not it.
        "SIMWIRE_RATE_LIMITS": "false",
        **env_overrides,
    }
    log_path = workdir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(process, port, log_path)
    try:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{server.url}/readyz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not become ready within 60 s")
                await asyncio.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# The phones ------------------------------------------------------------------------------


@dataclass
class PhoneFleet:
    """N raw phone sockets; `arrivals` maps a message body to when a phone got its `send_sms`."""

    heartbeat_s: float
    arrivals: dict[str, float] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    frames_in: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)
    ready: int = 0
    # From sending `accepted` to the server's `accept_ack`: how long a frame waits for the hub
    # to handle it, against the ack timeout (SIMWIRE_ACK_TIMEOUT_S).
    accepts_sent: dict[str, float] = field(default_factory=dict)
    accept_ack_s: list[float] = field(default_factory=list)

    async def run_phone(
        self, ws_url: str, token: str, number: str, gate: asyncio.Semaphore, stop: asyncio.Event
    ) -> None:
        async with gate:
            ws = await connect(
                f"{ws_url}?token={token}", ping_interval=None, open_timeout=120, max_queue=64
            )
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
            self.ready += 1
        heartbeat = asyncio.create_task(self._heartbeats(ws))
        try:
            reader = asyncio.create_task(self._read(ws))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (reader, stopper):
                task.cancel()
            if reader.done() and not reader.cancelled() and reader.exception():
                self.closes.append(repr(reader.exception()))
        finally:
            heartbeat.cancel()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _heartbeats(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await ws.send(_heartbeat())

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            received = time.perf_counter()
            frame = json.loads(raw)
            kind = frame.get("type", "?")
            self.frames_in[kind] = self.frames_in.get(kind, 0) + 1
            if kind == "send_sms":
                body = frame["body"]
                self.arrivals[body] = received
                waiter = self.waiters.pop(body, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(received)
                self.accepts_sent[frame["id"]] = time.perf_counter()
                await ws.send(json.dumps({"type": "accepted", "id": frame["id"]}))
                await ws.send(
                    json.dumps({"type": "send_result", "id": frame["id"], "success": True})
                )
            elif kind == "accept_ack":
                sent = self.accepts_sent.pop(frame["id"], None)
                if sent is not None:
                    self.accept_ack_s.append(received - sent)
            elif kind == "ping":
                await ws.send(_heartbeat())
            elif kind == "error":
                self.errors.append(f"{frame.get('code')}: {frame.get('message')}")


def _heartbeat() -> str:
    return json.dumps({"type": "heartbeat", "battery": 80, "charging": True, "signal": 4})


# Measuring -------------------------------------------------------------------------------


def percentiles(values_s: list[float]) -> dict[str, float | int]:
    if not values_s:
        return {"n": 0}
    ordered = sorted(values_s)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(at(0.90) * 1000, 2),
        "p99_ms": round(at(0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


async def live_sim_count(http: httpx.AsyncClient, headers: dict[str, str]) -> int:
    body = (await http.get("/v1/sims", headers=headers)).json()
    return len(body["live_sims"])


# Phones in other processes ---------------------------------------------------------------


def raise_open_files_limit(wanted: int) -> int:
    """Raises this process's soft RLIMIT_NOFILE towards `wanted` (up to the hard limit); the
    processes it starts inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted if hard == resource.RLIM_INFINITY else min(hard, wanted))
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


async def worker_main() -> None:
    """One phone process: reads its phones from the first stdin line, connects them, answers
    the server, and reports on stdout (one JSON object per line) until stdin says `stop`."""
    config = json.loads(sys.stdin.readline())
    raise_open_files_limit(len(config["phones"]) * 2 + 256)
    loop = asyncio.get_running_loop()
    lines: list[str] = []

    def emit(event: dict[str, Any]) -> None:
        lines.append(json.dumps(event))
        if len(lines) == 1:
            loop.call_soon(_flush)

    def _flush() -> None:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        lines.clear()

    sockets: list[ClientConnection] = []
    frames: dict[str, int] = {}
    errors: list[str] = []
    closes: list[str] = []
    ready = 0
    gate = asyncio.Semaphore(config["concurrency"])
    heartbeat = _heartbeat()

    async def phone(token: str, number: str) -> None:
        nonlocal ready
        async with gate:
            ws = await connect(
                f"{config['ws_url']}?token={token}",
                ping_interval=None,
                open_timeout=300,
                max_queue=16,
                compression=config["compression"],
            )
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
        sockets.append(ws)
        ready += 1
        if ready % 500 == 0 or ready == len(config["phones"]):
            emit({"ready": ready})
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type", "?")
                frames[kind] = frames.get(kind, 0) + 1
                if kind == "send_sms":
                    if frame["body"].startswith("lat "):
                        emit({"lat": frame["body"], "t": time.monotonic()})
                    await ws.send(json.dumps({"type": "accepted", "id": frame["id"]}))
                    await ws.send(
                        json.dumps({"type": "send_result", "id": frame["id"], "success": True})
                    )
                elif kind == "ping":
                    await ws.send(heartbeat)
                elif kind == "error" and len(errors) < 100:
                    errors.append(f"{frame.get('code')}: {frame.get('message')}")
        except ConnectionClosedOK:
            pass  # closed by this process at the end, or by the server with 1000
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            closes.append(repr(exc))
        if ws.close_code is not None and ws.close_code != 1000:
            closes.append(f"closed {ws.close_code} {ws.close_reason}")

    async def heartbeats() -> None:
        # Every phone once per period, spread evenly over it, as unsynchronised phones would.
        while True:
            if not sockets:
                await asyncio.sleep(0.1)
                continue
            for ws in list(sockets):
                with contextlib.suppress(Exception):
                    await ws.send(heartbeat)
                await asyncio.sleep(config["heartbeat_s"] / len(sockets))

    async def failed(task: asyncio.Task[None]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            if task.exception() is not None:
                emit({"failed": repr(task.exception())})

    tasks = [asyncio.create_task(phone(t, n)) for t, n in config["phones"]]
    for task in tasks:
        task.add_done_callback(lambda t: loop.create_task(failed(t)))
    beating = asyncio.create_task(heartbeats())
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    beating.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    emit({"done": {"frames": frames, "errors": errors[:20], "closes": closes[:20]}})
    await asyncio.sleep(0)
    if lines:
        _flush()


@dataclass
class PhoneWorkers:
    """The phone processes and what they report: phones ready, `send_sms` arrivals of latency
    messages (by body, CLOCK_MONOTONIC), and at the end their frame counts and errors."""

    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    ready: dict[int, int] = field(default_factory=dict)
    arrivals: dict[str, float] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    done: list[dict[str, Any]] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def ready_count(self) -> int:
        return sum(self.ready.values())

    async def start(
        self,
        ws_url: str,
        phones: list[tuple[str, str]],
        processes: int,
        heartbeat_s: float,
        concurrency: int,
        compression: str | None,
    ) -> None:
        for index in range(processes):
            share = phones[index::processes]
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 24,
            )
            assert process.stdin is not None
            config = {
                "ws_url": ws_url,
                "phones": share,
                "heartbeat_s": heartbeat_s,
                "concurrency": max(1, concurrency // processes),
                "compression": compression,
            }
            process.stdin.write((json.dumps(config) + "\n").encode())
            await process.stdin.drain()
            self.processes.append(process)
            self.readers.append(asyncio.create_task(self._read(index, process)))

    async def _read(self, index: int, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            event = json.loads(raw)
            if "lat" in event:
                self.arrivals[event["lat"]] = event["t"]
                waiter = self.waiters.pop(event["lat"], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(event["t"])
            elif "ready" in event:
                self.ready[index] = event["ready"]
            elif "failed" in event:
                self.failures.append(event["failed"])
            elif "done" in event:
                self.done.append(event["done"])

    async def stop(self) -> None:
        for process in self.processes:
            if process.stdin is not None and process.returncode is None:
                with contextlib.suppress(Exception):
                    process.stdin.write(b"stop\n")
                    await process.stdin.drain()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def pair_many(db: Database, project_id: str, count: int) -> list[str]:
    """`count` paired devices of the project, written in bulk (as `devices.pair_device` writes
    each: a token whose hash is stored); returns their tokens."""
    from app.db.models import Device
    from app.domain import credentials
    from app.services.ids import new_id, new_secret, utcnow

    tokens = [new_secret(credentials.DEVICE_TOKEN_PREFIX) for _ in range(count)]
    now = utcnow()
    rows = [
        {
            "id": new_id("dev"),
            "project_id": project_id,
            "name": f"bench-{i}",
            "token_hash": credentials.hash_secret(token),
            "token_prefix": credentials.display_prefix(token),
            "created_at": now,
        }
        for i, token in enumerate(tokens)
    ]
    async with db.transaction() as session:
        for start in range(0, len(rows), 1000):
            await session.execute(insert(Device), rows[start : start + 1000])
    return tokens


async def queue_many(db: Database, project_id: str, count: int, tag: str) -> None:
    """`count` queued outbound messages of the project written in bulk, as `outbound.enqueue`
    writes them (one part each, unpriced)."""
    from app.db.models import Message
    from app.services.ids import new_id, utcnow

    now = utcnow()
    rows = [
        {
            "id": new_id("msg"),
            "project_id": project_id,
            "direction": "out",
            "status": "queued",
            "to_number": f"+1415557{i % 10_000:04d}",
            "body": f"throughput {i}",
            "encoding": "GSM-7",
            "segment_count": 1,
            "price_atomic": 0,
            "billing": "credits",
            "refunded": False,
            "attempts": 0,
            "archived": False,
            "tag": tag,
            "created_at": now,
            "expires_at": now + timedelta(hours=1),
        }
        for i in range(count)
    ]
    async with db.transaction() as session:
        for start in range(0, len(rows), 1000):
            await session.execute(insert(Message), rows[start : start + 1000])


async def tagged_progress(db: Database, tag: str) -> tuple[int, Any, Any]:
    """(messages with `tag` now `sent`, first dispatch, last `sent_at`)."""
    from app.db.models import Message

    async with db.sessions() as session:
        row = (
            await session.execute(
                select(
                    func.count().filter(Message.status == "sent"),
                    func.min(Message.dispatched_at),
                    func.max(Message.sent_at),
                ).where(Message.tag == tag)
            )
        ).one()
    return int(row[0]), row[1], row[2]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="simwire-bench-phones-"))
    database = await fresh_database(workdir, args.postgres_url)
    try:
        return await _run(args, workdir, database)
    finally:
        await database.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(args: argparse.Namespace, workdir: Path, database: BenchDatabase) -> dict[str, Any]:
    db = Database(database.url)
    try:
        created = await create_project(db, "bench-phones")
        project_id = created.project.id
        await credits.grant(db, project_id, 10_000 * 1_000_000, note="benchmark")
        tokens = await pair_many(db, project_id, args.phones)
    except BaseException:
        await db.dispose()
        raise
    headers = {"Authorization": f"Bearer {created.first_key.raw}"}
    env = {"SIMWIRE_SIM_PARTS_PER_MINUTE": str(args.sim_parts_per_minute)}
    env.update(item.split("=", 1) for item in args.server_env)
    result: dict[str, Any] = {
        "engine": database.engine,
        "phones": args.phones,
        "phone_processes": args.phone_processes,
        "settings": {
            "SIMWIRE_SIM_PARTS_PER_MINUTE": args.sim_parts_per_minute,
            "heartbeat_s": args.heartbeat_s,
            "phone_compression": args.compression,
            "server_env": args.server_env,
            "other": "defaults (ping after 45 s of silence, idle timeout 60 s, sweep 1 s, "
            "ack timeout 10 s, in-flight cap 10)",
        },
    }
    workers = PhoneWorkers()
    try:
        async with (
            server_process(database.url, workdir, env) as server,
            httpx.AsyncClient(base_url=server.url, timeout=60) as http,
        ):
            await asyncio.sleep(1.0)
            rss_before = rss_kib(server.pid)
            started = time.monotonic()
            phones = [(token, f"+1415{i:07d}") for i, token in enumerate(tokens)]
            await workers.start(
                server.ws_url,
                phones,
                args.phone_processes,
                args.heartbeat_s,
                args.connect_concurrency,
                None if args.compression == "none" else args.compression,
            )
            deadline = time.monotonic() + args.connect_timeout_s
            while workers.ready_count < args.phones:
                if workers.failures:
                    raise RuntimeError(f"a phone failed to connect: {workers.failures[0]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"only {workers.ready_count} of {args.phones} phones connected"
                    )
                await asyncio.sleep(0.1)
            sockets_open_s = time.monotonic() - started
            live = 0
            while time.monotonic() < deadline:
                live = await live_sim_count(http, headers)
                if live >= args.phones:
                    break
                await asyncio.sleep(1.0)
            all_live_s = time.monotonic() - started
            await asyncio.sleep(3.0)
            rss_after = rss_kib(server.pid)
            result["connect"] = {
                "sockets_open_s": round(sockets_open_s, 2),
                "all_sims_live_s": round(all_live_s, 2),
                "live_sims": live,
            }
            result["rss"] = {
                "before_mib": round(rss_before / 1024, 1),
                "after_mib": round(rss_after / 1024, 1),
                "per_socket_kib": round((rss_after - rss_before) / max(args.phones, 1), 1),
            }

            cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
            await asyncio.sleep(args.idle_s)
            idle_cpu = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0)
            result["idle"] = {
                "seconds": args.idle_s,
                "server_cpu_percent_of_one_core": round(idle_cpu * 100, 1),
            }

            result.update(await _latency(args, http, headers, workers, server.pid))
            result["throughput"] = await _throughput(
                args, db, http, headers, project_id, server.pid
            )
            result["rss"]["end_mib"] = round(rss_kib(server.pid) / 1024, 1)
            await workers.stop()
            server_log = server.log_path.read_text(errors="replace")
    finally:
        await workers.stop()
        await db.dispose()
    frames: dict[str, int] = {}
    for report_ in workers.done:
        for kind, count in report_["frames"].items():
            frames[kind] = frames.get(kind, 0) + count
    result["phone_side"] = {
        "frames_received": dict(sorted(frames.items())),
        "error_frames": [e for r in workers.done for e in r["errors"]][:20],
        "sockets_closed_early": [c for r in workers.done for c in r["closes"]][:20],
    }
    result["server_log_tail"] = server_log[-3000:].splitlines()[-30:]
    return result


async def _latency(
    args: argparse.Namespace,
    http: httpx.AsyncClient,
    headers: dict[str, str],
    workers: PhoneWorkers,
    server_pid: int,
) -> dict[str, Any]:
    """M messages one at a time through the API, each timed until a phone holds it."""
    post_to_sms, accepted_to_sms, post_202, timeouts = [], [], [], 0
    cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
    loop = asyncio.get_running_loop()
    for i in range(args.latency_messages):
        body = f"lat {i}"
        waiter: asyncio.Future[float] = loop.create_future()
        workers.waiters[body] = waiter
        sent_at = time.monotonic()
        response = await http.post(
            "/v1/messages",
            json={"to": f"+1415555{i % 10_000:04d}", "message": body},
            headers=headers,
        )
        answered_at = time.monotonic()
        if response.status_code != 202:
            raise RuntimeError(f"send refused: {response.status_code} {response.text}")
        post_202.append(answered_at - sent_at)
        try:
            arrived = workers.arrivals.get(body) or await asyncio.wait_for(
                waiter, args.message_timeout_s
            )
        except TimeoutError:
            timeouts += 1
            continue
        finally:
            workers.waiters.pop(body, None)
        post_to_sms.append(arrived - sent_at)
        accepted_to_sms.append(max(0.0, arrived - answered_at))
    window = time.monotonic() - t0
    return {
        "enqueue_to_send_sms": {
            **percentiles(post_to_sms),
            "timeouts": timeouts,
            "timeout_s": args.message_timeout_s,
        },
        "post_202": percentiles(post_202),
        "accepted_to_send_sms": percentiles(accepted_to_sms),
        "during_latency": {
            "seconds": round(window, 2),
            "server_cpu_percent_of_one_core": round(
                (cpu_seconds(server_pid) - cpu0) / window * 100, 1
            ),
        },
    }


async def _throughput(
    args: argparse.Namespace,
    db: Database,
    http: httpx.AsyncClient,
    headers: dict[str, str],
    project_id: str,
    server_pid: int,
) -> dict[str, Any]:
    """K messages queued at once; how fast the phones take them to `sent`."""
    count = args.throughput_messages
    if count <= 0:
        return {"messages": 0}
    tag = f"throughput-{secrets.token_hex(3)}"
    await queue_many(db, project_id, count, tag)
    cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
    kick = await http.post(
        "/v1/messages", json={"to": "+14155550000", "message": "wake"}, headers=headers
    )
    if kick.status_code != 202:
        raise RuntimeError(f"send refused: {kick.status_code} {kick.text}")
    deadline = time.monotonic() + args.throughput_timeout_s
    sent, first, last = 0, None, None
    while time.monotonic() < deadline:
        sent, first, last = await tagged_progress(db, tag)
        if sent >= count:
            break
        await asyncio.sleep(0.5)
    wall = time.monotonic() - t0
    cpu = (cpu_seconds(server_pid) - cpu0) / wall
    span_s = (last - first).total_seconds() if first and last else None
    return {
        "messages": count,
        "sent": sent,
        "first_dispatch_to_last_sent_s": round(span_s, 2) if span_s else None,
        "sent_per_s": round(sent / span_s, 1) if span_s else None,
        "server_cpu_percent_of_one_core": round(cpu * 100, 1),
        "server_cpu_ms_per_message": round(cpu * wall * 1000 / max(sent, 1), 3),
    }


def print_table(result: dict[str, Any]) -> None:
    rss, lat, acc = result["rss"], result["enqueue_to_send_sms"], result["post_202"]
    hub, through = result["accepted_to_send_sms"], result["throughput"]
    rows = [
        ("engine", result["engine"]),
        ("phones connected", f"{result['connect']['live_sims']} / {result['phones']}"),
        ("sockets open (s)", result["connect"]["sockets_open_s"]),
        ("all SIMs live (s)", result["connect"]["all_sims_live_s"]),
        ("server RSS before (MiB)", rss["before_mib"]),
        ("server RSS with phones (MiB)", rss["after_mib"]),
        ("RSS per socket (KiB)", rss["per_socket_kib"]),
        ("server RSS at end (MiB)", rss["end_mib"]),
        ("idle server CPU (% of a core)", result["idle"]["server_cpu_percent_of_one_core"]),
        ("enqueue→send_sms n", lat["n"]),
        ("enqueue→send_sms p50 (ms)", lat.get("p50_ms")),
        ("enqueue→send_sms p99 (ms)", lat.get("p99_ms")),
        ("enqueue→send_sms max (ms)", lat.get("max_ms")),
        ("enqueue→send_sms timeouts", lat["timeouts"]),
        ("POST /v1/messages 202 p50 (ms)", acc.get("p50_ms")),
        ("POST /v1/messages 202 p99 (ms)", acc.get("p99_ms")),
        ("202→send_sms p50 (ms)", hub.get("p50_ms")),
        ("202→send_sms p99 (ms)", hub.get("p99_ms")),
        ("throughput messages", f"{through.get('sent')} / {through['messages']}"),
        ("messages/s reaching sent", through.get("sent_per_s")),
        ("server CPU while draining (%)", through.get("server_cpu_percent_of_one_core")),
        ("server CPU ms per message", through.get("server_cpu_ms_per_message")),
        ("error frames to phones", len(result["phone_side"]["error_frames"])),
        ("sockets closed early", len(result["phone_side"]["sockets_closed_early"])),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    settings = result["settings"]
    print(f"(SIMWIRE_SIM_PARTS_PER_MINUTE={settings['SIMWIRE_SIM_PARTS_PER_MINUTE']}", end="")
    print(f"; {' '.join(settings['server_env'])})" if settings["server_env"] else ")")


def report(
    result: dict[str, Any], json_path: Path, print_table: Callable[[dict[str, Any]], None]
) -> None:
    """Prints the table and writes the JSON, with a note of the machine it ran on."""
    result["machine"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    print_table(result)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {json_path}")


def main() -> None:
    if sys.argv[1:] == ["--worker"]:
        asyncio.run(worker_main())
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phones", type=int, default=10_000)
    parser.add_argument("--latency-messages", type=int, default=300)
    parser.add_argument("--throughput-messages", type=int, default=20_000)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--heartbeat-s", type=float, default=30.0)
    parser.add_argument("--phone-processes", type=int, default=2)
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--connect-timeout-s", type=float, default=600.0)
    parser.add_argument("--message-timeout-s", type=float, default=15.0)
    parser.add_argument("--throughput-timeout-s", type=float, default=300.0)
    parser.add_argument("--sim-parts-per-minute", type=int, default=1_000_000)
    parser.add_argument(
        "--compression",
        choices=["deflate", "none"],
        default="deflate",
        help="what the phones offer (OkHttp offers permessage-deflate, as websockets does)",
    )
    parser.add_argument("--postgres-url", help="postgresql+asyncpg://… of a server to use")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="SIMWIRE_X=VALUE",
        help="extra setting for the server process (repeatable)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    # The server process inherits this limit (and raises its own too): one descriptor a socket.
    raise_open_files_limit(args.phones * 2 + 1024)
    report(asyncio.run(run(args)), args.json, print_table)


if __name__ == "__main__":
    main()
