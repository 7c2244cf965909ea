"""Benchmark webhooks under the send benchmark's load: what an endpoint costs the send path, how
many events per second reach a local receiver, and how long from a message's `sent` to the
receiver.

Usage: .venv/bin/python scripts/bench/webhooks.py [--duration-s 10] [--connections 16]
       [--phones 10] [--postgres-url URL | --no-postgres] [--json out.json]

For each engine (SQLite, then PostgreSQL) the same `wrk` load as scripts/bench/send.py runs on
`POST /v1/messages` twice, each on a fresh database with its own server process and raw phones
(separate process, answering every `send_sms` with `accepted` and a successful `send_result`):
once with no webhook endpoint, once with one endpoint pointing at a receiver in its own process
(uvicorn with a bare ASGI app answering 204 and noting when each delivery arrived), subscribed to
`--events` (default: message.queued, message.sent and device.online, every type these phones
cause). Reported: accepted sends per second in both runs and the cost of the endpoint
(1 - with/without); events delivered per second while the load ran and until the backlog
drained (at most `--drain-s`); and, for every `message.sent` event, the time from the message's
`sent_at` (the server's clock when it recorded the phone's report) to the receiver's arrival
time (same machine, same clock), p50/p99; the server's and the receiver's CPU meanwhile.
The bare Litestar ceiling runs in the same invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from scripts.bench.phones import (  # noqa: E402
    BenchDatabase,
    free_port,
    percentiles,
    report,
    server_process,
)
from scripts.bench.send import (  # noqa: E402
    SIM_PARTS_PER_MINUTE,
    bare_server,
    bench_database,
    child_server,
    ensure_wrk,
    phone_process,
    postgres_server,
    prepare_project,
    run_wrk,
    wait_for_live_sims,
    with_cpu,
)

DEFAULT_JSON = REPO_ROOT / "scripts" / "bench" / "results" / "webhooks.json"
OPERATOR_KEY = "bench-operator-key-" + "0" * 32


# The receiver ----------------------------------------------------------------------------


def run_receiver(port: int) -> None:
    """A bare ASGI app: POST notes (arrival time, event type, id, the message's sent_at) and
    answers 204; GET /stats returns everything noted."""
    import uvicorn

    noted: list[tuple[float, str, str, str | None]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            payload = json.dumps(noted).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        arrived = time.time()
        event = json.loads(body)
        data = event.get("data") or {}
        noted.append((arrived, event["type"], event["id"], data.get("sent_at")))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_config=None)


@contextlib.asynccontextmanager
async def receiver() -> Any:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with child_server(
        [__file__, "--run-receiver", str(port)], f"{url}/stats", "webhook receiver"
    ) as pid:
        yield url, pid


async def noted(url: str) -> list[list[Any]]:
    async with httpx.AsyncClient(timeout=30) as http:
        return list((await http.get(f"{url}/stats")).json())


async def drained(url: str, skip: int, wanted: int, limit_s: float) -> list[list[Any]]:
    """What the receiver noted after its first `skip` deliveries (earlier runs'), once `wanted`
    more arrived, or nothing more came for 5 s, or after `limit_s`."""
    deadline = time.monotonic() + limit_s
    last_count, last_change = -1, time.monotonic()
    while True:
        seen = (await noted(url))[skip:]
        if len(seen) != last_count:
            last_count, last_change = len(seen), time.monotonic()
        quiet = time.monotonic() - last_change > 5
        if len(seen) >= wanted or quiet or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.25)


async def accepted_count(base: str, key: str) -> int:
    async with httpx.AsyncClient(timeout=30) as http:
        stats = await http.get(f"{base}/v1/stats", headers={"Authorization": f"Bearer {key}"})
        body = stats.json()
    return int(body["total_sent"] + body["total_failed"] + body["total_queued"])


# One run ---------------------------------------------------------------------------------


async def send_run(
    args: argparse.Namespace,
    database: BenchDatabase,
    hook_url: str | None,
    receiver_pid: int,
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="simwire-bench-webhooks-"))
    env = {
        "SIMWIRE_SIM_PARTS_PER_MINUTE": str(SIM_PARTS_PER_MINUTE),
        "SIMWIRE_SECRET_KEY": OPERATOR_KEY,
        "SIMWIRE_WEBHOOK_ALLOW_PRIVATE": "true",
    }
    try:
        key, tokens = await prepare_project(database.url, args.phones)
        async with server_process(database.url, workdir, env) as server:
            if hook_url is not None:
                async with httpx.AsyncClient(timeout=30) as http:
                    made = await http.post(
                        f"{server.url}/v1/webhooks",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"url": hook_url + "/hook", "events": args.events},
                    )
                    made.raise_for_status()
            skip = len(await noted(hook_url)) if hook_url is not None else 0
            async with phone_process([(server.ws_url, t) for t in tokens]) as phones:
                await wait_for_live_sims(server.url, key, args.phones)
                started = time.time()
                sends, cpu = await with_cpu(
                    [server.pid, receiver_pid], run_wrk(args, server.url, "send", key)
                )
                load_s = time.time() - started
                outcome: dict[str, Any] = {
                    "accepted_per_s": sends["per_s"],
                    "accept_latency": sends["latency"],
                    "server_cpu_percent": cpu[0],
                    # On a small machine the receiver's CPU is taken from everyone else's.
                    "receiver_cpu_percent": cpu[1],
                    "statuses": sends["statuses"],
                }
                if hook_url is not None:
                    messages = await accepted_count(server.url, key)
                    # Per message one event of each message type subscribed to (these phones
                    # send no delivery reports); per phone a device.online.
                    per_message = len([t for t in args.events if t.startswith("message.")])
                    wanted = per_message * messages + args.phones * ("device.online" in args.events)
                    seen = await drained(hook_url, skip, wanted, args.drain_s)
                    outcome |= delivery_figures(seen, started, load_s, messages)
            outcome["phones"] = {k: v for k, v in phones.items() if k != "pid"}
        return outcome
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def delivery_figures(
    seen: list[list[Any]], started: float, load_s: float, messages: int
) -> dict[str, Any]:
    arrivals = [row[0] for row in seen]
    in_window = sum(1 for at in arrivals if at <= started + load_s)
    sent_latency = [
        row[0] - datetime.fromisoformat(row[3].replace("Z", "+00:00")).timestamp()
        for row in seen
        if row[1] == "message.sent" and row[3]
    ]
    by_type: dict[str, int] = {}
    for row in seen:
        by_type[row[1]] = by_type.get(row[1], 0) + 1
    last = max(arrivals) if arrivals else started
    return {
        "messages_stored": messages,
        "events_delivered": len(seen),
        "events_by_type": by_type,
        "events_per_s_under_load": round(in_window / load_s, 1),
        "events_per_s_to_drain": round(len(seen) / max(last - started, 1e-9), 1),
        "drain_s_after_load": round(max(0.0, last - started - load_s), 2),
        "sent_to_receiver": percentiles([max(0.0, s) for s in sent_latency]),
        "sent_events_delivered_share": round(len(sent_latency) / messages, 4) if messages else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    args.wrk = ensure_wrk()
    result: dict[str, Any] = {
        "load_generator": f"wrk -t{args.threads} -c{args.connections} -d{args.duration_s}s",
        "phones": args.phones,
        "endpoint_events": args.events,
    }
    async with bare_server() as (url, pid):
        bare, _ = await with_cpu([pid], run_wrk(args, url, "ping"))
    result["bare_litestar"] = bare
    runs = []
    with postgres_server(args, result) as pg_url:
        plans = [("sqlite", None)] + ([("postgresql", pg_url)] if pg_url else [])
        async with receiver() as (hook_url, receiver_pid):
            for label, url in plans:
                figures: dict[str, Any] = {"engine": label}
                for name, hook in (("without_webhook", None), ("with_webhook", hook_url)):
                    async with bench_database(url) as database:
                        figures[name] = await send_run(args, database, hook, receiver_pid)
                without = figures["without_webhook"]["accepted_per_s"]
                with_hook = figures["with_webhook"]["accepted_per_s"]
                figures["send_cost_of_webhook"] = round(1 - with_hook / without, 3)
                figures["ratio_to_bare_with_webhook"] = round(with_hook / bare["per_s"], 3)
                runs.append(figures)
    result["runs"] = runs
    return result


def print_table(result: dict[str, Any]) -> None:
    bare = result["bare_litestar"]
    print(
        f"{result['load_generator']}, {result['phones']} raw phones; bare {bare['per_s']} req/s;"
        f" endpoint subscribed to {', '.join(result['endpoint_events'])}"
    )
    header = (
        f"{'engine':<12}{'send/s':>9}{'+hook/s':>9}{'cost':>7}{'ev/s load':>11}{'ev/s all':>10}"
        f"{'sent→rx p50':>13}{'p99 ms':>9}{'sent ev %':>11}{'srv CPU%':>10}{'rx CPU%':>9}"
    )
    print(header)
    print("-" * len(header))
    for run in result["runs"]:
        hook = run["with_webhook"]
        latency = hook.get("sent_to_receiver", {})
        share = hook.get("sent_events_delivered_share")
        print(
            f"{run['engine']:<12}{run['without_webhook']['accepted_per_s']:>9}"
            f"{hook['accepted_per_s']:>9}{round(run['send_cost_of_webhook'] * 100, 1):>6}%"
            f"{hook.get('events_per_s_under_load', '-'):>11}"
            f"{hook.get('events_per_s_to_drain', '-'):>10}"
            f"{latency.get('p50_ms', '-'):>13}{latency.get('p99_ms', '-'):>9}"
            f"{round(share * 100, 1) if share is not None else '-':>11}"
            f"{run['without_webhook']['server_cpu_percent']}/{hook['server_cpu_percent']:>5}"
            f"{hook['receiver_cpu_percent']:>9}"
        )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--run-receiver":
        run_receiver(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--phones", type=int, default=10)
    parser.add_argument("--drain-s", type=float, default=60.0, help="longest wait for deliveries")
    parser.add_argument("--postgres-url", help="postgresql+asyncpg://… of a server to use")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite run only")
    parser.add_argument(
        "--events",
        default="message.queued,message.sent,device.online",
        help="comma-separated event types the endpoint subscribes to",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    args.events = [t for t in args.events.split(",") if t]
    report(asyncio.run(run(args)), args.json, print_table)


if __name__ == "__main__":
    main()
