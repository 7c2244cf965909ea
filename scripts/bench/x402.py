"""Benchmark x402 payments: local EIP-712 verification and settlement on a dev chain.

Usage: .venv/bin/python scripts/bench/x402.py [--verify-n 500] [--settle-n 100]
       [--send-n 60] [--concurrency 20] [--json out.json]

- verify: `decode_payment` + `verify_authorization` (signature recovered with eth-account) on
  pre-signed headers, one core, no I/O.
- settle: `ChainClient.settle_authorization` against anvil (automine, started here), once one
  at a time (latency) and once with `--concurrency` settlements in flight from one relayer.
- paid sends: the whole API path of `POST /v1/messages` paid with x402 (402 → signed
  authorization → verify, reserve, settle, record, enqueue → 202) on a live server with SQLite,
  one at a time and with `--concurrency` in flight. Authorizations are signed ahead of time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# This file is named like the `x402` package: keep its folder off the path so that
# `import x402` finds the package, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from eth_account import Account  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from app.payments.chain import ChainClient  # noqa: E402
from app.payments.devchain import DevChain, start_devchain  # noqa: E402
from app.payments.eip3009 import verify_authorization  # noqa: E402
from app.payments.requirements import PaymentRequirement  # noqa: E402
from app.payments.wire import decode_payment  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.support.devchain import sign_payment  # noqa: E402
from tests.support.live import live_server  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "scripts" / "bench" / "results" / "x402.json"
PRICE = 20_000


def bench_verify(requirement: PaymentRequirement, n: int) -> dict[str, Any]:
    account = Account.create()
    headers = [sign_payment(account, requirement) for _ in range(n)]
    now = int(time.time())
    started = time.perf_counter()
    for header in headers:
        verify_authorization(decode_payment(header), requirement, now)
    elapsed = time.perf_counter() - started
    return {
        "n": n,
        "seconds": round(elapsed, 3),
        "per_s": round(n / elapsed, 1),
        "mean_ms": round(elapsed / n * 1000, 3),
    }


async def bench_settle(
    chain: DevChain, requirement: PaymentRequirement, n: int, concurrency: int
) -> dict[str, Any]:
    payers = [Account.create() for _ in range(n)]
    for payer in payers:
        await chain.mint(payer.address, PRICE)
    # Signed ahead of time: this measures the server's side only.
    payments = [decode_payment(sign_payment(p, requirement)) for p in payers]
    half = n // 2
    async with ChainClient(requirement.network) as client:
        latencies = []
        started = time.perf_counter()
        for payment in payments[:half]:
            t0 = time.perf_counter()
            await client.settle_authorization(payment)
            latencies.append(time.perf_counter() - t0)
        sequential_s = time.perf_counter() - started

        gate = asyncio.Semaphore(concurrency)

        async def settle(payment: Any) -> None:
            async with gate:
                await client.settle_authorization(payment)

        started = time.perf_counter()
        await asyncio.gather(*(settle(p) for p in payments[half:]))
        concurrent_s = time.perf_counter() - started
    return {
        "sequential": {
            "n": half,
            "per_s": round(half / sequential_s, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 2),
            "max_ms": round(max(latencies) * 1000, 2),
        },
        "concurrent": {
            "n": n - half,
            "concurrency": concurrency,
            "per_s": round((n - half) / concurrent_s, 1),
        },
    }


SEND = {"to": "+14155550100", "message": "bench"}
SEND_PRICE = 35_000  # one segment at the default price


async def bench_paid_sends(chain: DevChain, n: int, concurrency: int) -> dict[str, Any]:
    import tempfile

    from app.db.migrate import upgrade

    network = chain.network_config(v1_name=None)
    payer = Account.create()
    await chain.mint(payer.address, n * SEND_PRICE)
    requirement = PaymentRequirement(network, SEND_PRICE)
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/bench.db"
        await asyncio.to_thread(upgrade, url)
        settings = Settings(
            database_url=url,
            log_level="WARNING",
            chain_rpc_url=chain.rpc_url,
            chain_id=chain.chain_id,
            usdc_address=chain.usdc,
            pay_to=chain.pay_to,
            relayer_key=SecretStr(chain.relayer_key),
            rate_limits=False,  # measures the send path, not the limiter
        )
        async with (
            live_server(settings) as server,
            httpx.AsyncClient(base_url=server.url, timeout=60) as http,
        ):

            async def paid_send() -> float:
                offer = await http.post("/v1/messages", json=SEND)
                quote_id = offer.json()["quote"]["quote_id"]
                header = sign_payment(payer, requirement)
                t0 = time.perf_counter()
                paid = await http.post(
                    "/v1/messages",
                    json=SEND,
                    headers={"PAYMENT-SIGNATURE": header, "X-Quote-Id": quote_id},
                )
                if paid.status_code != 202:
                    raise RuntimeError(f"paid send answered {paid.status_code}: {paid.text}")
                return time.perf_counter() - t0

            half = n // 2
            started = time.perf_counter()
            latencies = [await paid_send() for _ in range(half)]
            sequential_s = time.perf_counter() - started
            gate = asyncio.Semaphore(concurrency)

            async def gated() -> float:
                async with gate:
                    return await paid_send()

            started = time.perf_counter()
            await asyncio.gather(*(gated() for _ in range(n - half)))
            concurrent_s = time.perf_counter() - started
    return {
        "database": "sqlite",
        "sequential": {
            "n": half,
            "per_s": round(half / sequential_s, 1),
            "paid_call_p50_ms": round(statistics.median(latencies) * 1000, 2),
            "paid_call_max_ms": round(max(latencies) * 1000, 2),
        },
        "concurrent": {
            "n": n - half,
            "concurrency": concurrency,
            "per_s": round((n - half) / concurrent_s, 1),
        },
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    chain = await start_devchain()
    try:
        requirement = PaymentRequirement(chain.network_config(), PRICE)
        verify = bench_verify(requirement, args.verify_n)
        settle = await bench_settle(chain, requirement, args.settle_n, args.concurrency)
        sends = await bench_paid_sends(chain, args.send_n, args.concurrency)
    finally:
        await chain.aclose()
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "chain": "anvil 1.7.1 (automine)",
        "verify": verify,
        "settle": settle,
        "paid_sends": sends,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify-n", type=int, default=500)
    parser.add_argument("--settle-n", type=int, default=100)
    parser.add_argument("--send-n", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    rows = [
        (
            "verify (local EIP-712)",
            results["verify"]["per_s"],
            f"{results['verify']['mean_ms']} ms mean",
        ),
        (
            "settle, one at a time",
            results["settle"]["sequential"]["per_s"],
            f"{results['settle']['sequential']['p50_ms']} ms p50",
        ),
        (
            f"settle, {args.concurrency} in flight",
            results["settle"]["concurrent"]["per_s"],
            f"n={results['settle']['concurrent']['n']}",
        ),
        (
            "paid send via API, serial",
            results["paid_sends"]["sequential"]["per_s"],
            f"{results['paid_sends']['sequential']['paid_call_p50_ms']} ms p50 (paid call)",
        ),
        (
            f"paid send via API, {args.concurrency} fl.",
            results["paid_sends"]["concurrent"]["per_s"],
            f"n={results['paid_sends']['concurrent']['n']}, SQLite",
        ),
    ]
    print(f"{'operation':<28}{'per second':>12}  note")
    for name, per_s, note in rows:
        print(f"{name:<28}{per_s:>12}  {note}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
