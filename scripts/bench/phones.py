"""Benchmark the phone hub: sockets held by one server process, enqueue→`send_sms` latency.

Usage: .venv/bin/python scripts/bench/phones.py [--phones 500] [--messages 500] [--idle-s 10]
       [--postgres-url URL] [--server-env SIMWIRE_X=VALUE ...] [--json out.json]

The server runs as its own process (`python -m app.cli serve`, as `simwire serve` does) on a
fresh SQLite file in a temp dir, or on a fresh database created on `--postgres-url`; its
resident memory is read from /proc/PID/status, so the phones' memory is never counted. The
phones are raw `websockets` clients in this process: `hello` with one SIM, a heartbeat every
`--heartbeat-s` and for every `ping`, and for every `send_sms` an `accepted` then a successful
`send_result`.

Measured:
- RSS of the server before any phone connects and once all N phones are connected with their SIM
  live, and the difference per connection;
- CPU the server spends while the N phones sit idle for `--idle-s` (nothing queued);
- enqueue→`send_sms` latency: M messages sent one at a time through `POST /v1/messages` (a key of
  a project with granted credits), each timed from just before the request until a phone holds
  the `send_sms` frame; the 202 latency of the same requests is reported beside it.

The per-SIM rate limit is raised (`--sim-parts-per-minute`, default 1,000,000) so that the figure
is the hub's latency, not the rate limiter's wait.
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
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# This folder holds `x402.py`: keep it off the path so `import x402` finds the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from app.db.engine import Database  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.services import credits, devices  # noqa: E402
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
        tokens = [
            (await devices.pair_device(db, project_id, f"bench-{i}")).token
            for i in range(args.phones)
        ]
    finally:
        await db.dispose()
    headers = {"Authorization": f"Bearer {created.first_key.raw}"}
    env = {"SIMWIRE_SIM_PARTS_PER_MINUTE": str(args.sim_parts_per_minute)}
    env.update(item.split("=", 1) for item in args.server_env)
    result: dict[str, Any] = {
        "engine": database.engine,
        "phones": args.phones,
        "messages": args.messages,
        "settings": {
            "SIMWIRE_SIM_PARTS_PER_MINUTE": args.sim_parts_per_minute,
            "heartbeat_s": args.heartbeat_s,
            "server_env": args.server_env,
            "other": "defaults (ping 20 s, idle timeout 60 s, sweep 1 s, ack timeout 10 s)",
        },
    }
    async with (
        server_process(database.url, workdir, env) as server,
        httpx.AsyncClient(base_url=server.url, timeout=60) as http,
    ):
        await asyncio.sleep(1.0)
        rss_before = rss_kib(server.pid)
        fleet = PhoneFleet(heartbeat_s=args.heartbeat_s)
        stop = asyncio.Event()
        gate = asyncio.Semaphore(args.connect_concurrency)
        started = time.perf_counter()
        phones = [
            asyncio.create_task(
                fleet.run_phone(server.ws_url, token, f"+1415556{i:04d}", gate, stop)
            )
            for i, token in enumerate(tokens)
        ]
        while fleet.ready < args.phones:
            failed = [p for p in phones if p.done() and p.exception()]
            if failed:
                raise RuntimeError(f"a phone failed to connect: {failed[0].exception()!r}")
            await asyncio.sleep(0.05)
        sockets_open_s = time.perf_counter() - started
        deadline = time.monotonic() + 120
        live = 0
        while time.monotonic() < deadline:
            live = await live_sim_count(http, headers)
            if live >= args.phones:
                break
            await asyncio.sleep(0.25)
        all_live_s = time.perf_counter() - started
        await asyncio.sleep(2.0)
        rss_after = rss_kib(server.pid)
        result["connect"] = {
            "sockets_open_s": round(sockets_open_s, 2),
            "all_sims_live_s": round(all_live_s, 2),
            "live_sims": live,
        }
        result["rss"] = {
            "before_mib": round(rss_before / 1024, 1),
            "after_mib": round(rss_after / 1024, 1),
            "per_connection_kib": round((rss_after - rss_before) / max(args.phones, 1), 1),
        }

        cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
        frames0 = sum(fleet.frames_in.values())
        await asyncio.sleep(args.idle_s)
        idle_cpu = (cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - t0)
        result["idle"] = {
            "seconds": args.idle_s,
            "server_cpu_percent_of_one_core": round(idle_cpu * 100, 1),
            "frames_to_phones": sum(fleet.frames_in.values()) - frames0,
        }

        latencies, accept_latencies, timeouts = [], [], 0
        cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
        loop = asyncio.get_running_loop()
        for i in range(args.messages):
            body = f"bench message {i}"
            waiter: asyncio.Future[float] = loop.create_future()
            fleet.waiters[body] = waiter
            sent_at = time.perf_counter()
            response = await http.post(
                "/v1/messages",
                json={"to": f"+1415555{i % 10_000:04d}", "message": body},
                headers=headers,
            )
            accepted_at = time.perf_counter()
            if response.status_code != 202:
                raise RuntimeError(f"send refused: {response.status_code} {response.text}")
            accept_latencies.append(accepted_at - sent_at)
            if body in fleet.arrivals:
                latencies.append(fleet.arrivals[body] - sent_at)
                fleet.waiters.pop(body, None)
                continue
            try:
                arrived = await asyncio.wait_for(waiter, args.message_timeout_s)
                latencies.append(arrived - sent_at)
            except TimeoutError:
                timeouts += 1
                fleet.waiters.pop(body, None)
        send_window = time.perf_counter() - t0
        send_cpu = (cpu_seconds(server.pid) - cpu0) / send_window
        result["enqueue_to_send_sms"] = {
            **percentiles(latencies),
            "timeouts": timeouts,
            "timeout_s": args.message_timeout_s,
        }
        result["post_202"] = percentiles(accept_latencies)
        result["during_sends"] = {
            "seconds": round(send_window, 2),
            "server_cpu_percent_of_one_core": round(send_cpu * 100, 1),
        }
        result["rss"]["end_mib"] = round(rss_kib(server.pid) / 1024, 1)
        result["phone_side"] = {
            "frames_received": dict(sorted(fleet.frames_in.items())),
            "error_frames": fleet.errors[:20],
            "error_frame_count": len(fleet.errors),
            "sockets_closed_early": fleet.closes[:20],
        }
        stop.set()
        await asyncio.gather(*phones, return_exceptions=True)
        server_log = server.log_path.read_text(errors="replace")
    result["server_log_tail"] = server_log[-3000:].splitlines()[-30:]
    return result


def print_table(result: dict[str, Any]) -> None:
    rss, lat, acc = result["rss"], result["enqueue_to_send_sms"], result["post_202"]
    rows = [
        ("engine", result["engine"]),
        ("phones connected", f"{result['connect']['live_sims']} / {result['phones']}"),
        ("sockets open (s)", result["connect"]["sockets_open_s"]),
        ("all SIMs live (s)", result["connect"]["all_sims_live_s"]),
        ("server RSS before (MiB)", rss["before_mib"]),
        ("server RSS with phones (MiB)", rss["after_mib"]),
        ("RSS per connection (KiB)", rss["per_connection_kib"]),
        ("server RSS at end (MiB)", rss["end_mib"]),
        ("idle server CPU (% of a core)", result["idle"]["server_cpu_percent_of_one_core"]),
        ("server CPU while sending (%)", result["during_sends"]["server_cpu_percent_of_one_core"]),
        ("enqueue→send_sms n", lat["n"]),
        ("enqueue→send_sms p50 (ms)", lat.get("p50_ms")),
        ("enqueue→send_sms p99 (ms)", lat.get("p99_ms")),
        ("enqueue→send_sms max (ms)", lat.get("max_ms")),
        ("enqueue→send_sms timeouts", lat["timeouts"]),
        ("POST /v1/messages 202 p50 (ms)", acc.get("p50_ms")),
        ("POST /v1/messages 202 p99 (ms)", acc.get("p99_ms")),
        ("error frames to phones", result["phone_side"]["error_frame_count"]),
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phones", type=int, default=500)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--heartbeat-s", type=float, default=30.0)
    parser.add_argument("--connect-concurrency", type=int, default=50)
    parser.add_argument("--message-timeout-s", type=float, default=15.0)
    parser.add_argument("--sim-parts-per-minute", type=int, default=1_000_000)
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

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, args.phones * 2 + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    report(asyncio.run(run(args)), args.json, print_table)


if __name__ == "__main__":
    main()
