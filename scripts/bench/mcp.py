"""Benchmark MCP tool calls: latency of `quote_sms` (free) and of a paid `send_sms` (x402 over
MCP, settled on a local anvil chain), through the official MCP client over loopback.

Usage: .venv/bin/python scripts/bench/mcp.py [--quotes 200] [--sends 30] [--json out.json]

One server in this process (uvicorn on a loopback socket, a fresh SQLite file, rate limits
off), a local anvil with TestUSDC, and a fake phone of the x402 project so paid messages are
delivered. `quote_sms`: one `ClientSession` (stateless server: each call is one HTTP POST),
each call timed from request to parsed result. Paid `send_sms`: `x402MCPSession` around the
session; each call is the whole flow an agent sees — the unpaid call (402 result), signing the
EIP-3009 authorization, the paid call (verify, reserve, settle on chain with 1 confirmation,
queue) — timed end to end. Prints p50/p95/p99/max in ms and writes them as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# This directory holds x402.py, which would shadow the x402 package: the repo root instead.
sys.path[0] = str(Path(__file__).resolve().parents[2])

from pydantic import SecretStr  # noqa: E402
from x402.mcp import x402MCPSession  # noqa: E402

from app.db.engine import Database  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.payments.devchain import start_devchain  # noqa: E402
from app.services import devices  # noqa: E402
from app.services.x402_runtime import x402_project_id  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.integration.test_mcp import mcp_session  # noqa: E402
from tests.support.devchain import official_client  # noqa: E402
from tests.support.live import live_server, start_phone  # noqa: E402
from tests.support.mcp_compat import McpSessionForX402  # noqa: E402


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)

    def at(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 2)

    return {
        "count": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": round(ms[-1], 2),
    }


async def run(quotes: int, sends: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="simwire-bench-mcp-"))
    url = f"sqlite+aiosqlite:///{workdir}/bench.db"
    await asyncio.to_thread(upgrade, url)
    chain = await start_devchain()
    try:
        network = chain.network_config()
        settings = Settings(
            database_url=url,
            rate_limits=False,
            log_level="WARNING",
            chain_rpc_url=chain.rpc_url,
            chain_id=chain.chain_id,
            usdc_address=chain.usdc,
            pay_to=network.pay_to,
            relayer_key=SecretStr(network.relayer_key or ""),
            confirmations=1,
            sim_parts_per_minute=1_000_000,
            device_max_in_flight=1000,
        )
        db = Database(url)
        payer = await chain.new_payer()
        async with live_server(settings, db) as server:
            project_id = await x402_project_id(db, settings)
            paired = await devices.pair_device(db, project_id, "bench phone")
            phone = await start_phone(server, paired.token, workdir / "phone")
            try:
                async with mcp_session(server) as session:
                    quote_s = []
                    for n in range(quotes):
                        started = time.perf_counter()
                        result = await session.call_tool(
                            "quote_sms", {"to": "+14155550100", "message": f"Code {n}"}
                        )
                        quote_s.append(time.perf_counter() - started)
                        assert not result.is_error, result.content
                    paying = x402MCPSession(
                        McpSessionForX402(session),
                        official_client(payer, network),  # type: ignore[arg-type]
                    )
                    send_s = []
                    for n in range(sends):
                        started = time.perf_counter()
                        paid = await paying.call_tool(
                            "send_sms", {"to": "+14155550100", "message": f"Paid {n}"}
                        )
                        send_s.append(time.perf_counter() - started)
                        assert paid.payment_made and not paid.is_error, paid.content
            finally:
                await phone.stop()
        await db.dispose()
    finally:
        await chain.aclose()
    return {
        "benchmark": "mcp_tool_calls",
        "quote_sms": percentiles(quote_s),
        "paid_send_sms": percentiles(send_s),
        "notes": "loopback, one process, SQLite, anvil (1 confirmation), rate limits off",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quotes", type=int, default=200)
    parser.add_argument("--sends", type=int, default=30)
    parser.add_argument("--json", type=Path, default=Path("scripts/bench/results/mcp.json"))
    args = parser.parse_args()
    results = asyncio.run(run(args.quotes, args.sends))
    print(json.dumps(results, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
