"""A local dev chain: anvil with our TestUSDC deployed, a funded relayer and funded payers.

Used by `scripts/devchain` (prints one JSON line, then runs until killed) and by the test
fixtures in `tests/support/devchain.py`. Anvil comes from npm (`npm ci` at the repo root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3

from app.payments.networks import NetworkConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = REPO_ROOT / "contracts" / "build" / "TestUSDC.json"

# Anvil's well-known dev keys (mnemonic "test test ... junk"); public, for local chains only.
DEV_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
)
DEPLOYER_KEY, RELAYER_KEY, PAY_TO_KEY = DEV_KEYS[0], DEV_KEYS[1], DEV_KEYS[2]
PAYER_KEYS = DEV_KEYS[3:7]

USDC_NAME = "USDC"
USDC_VERSION = "2"
PAYER_FUNDS_ATOMIC = 100_000_000  # 100 USDC each
DEFAULT_CHAIN_ID = 31337
_START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class DevAccount:
    address: str
    key: str = field(repr=False)


@dataclass
class DevChain:
    """A running anvil with TestUSDC. `stop()` ends it; also an async context manager."""

    rpc_url: str
    chain_id: int
    usdc: str
    pay_to: str
    relayer_key: str = field(repr=False)
    payers: list[DevAccount]
    usdc_name: str = USDC_NAME
    usdc_version: str = USDC_VERSION
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _w3: AsyncWeb3 | None = field(default=None, repr=False)
    _deployer_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def network(self) -> str:
        return f"eip155:{self.chain_id}"

    def info(self) -> dict[str, Any]:
        """What `scripts/devchain` prints: everything a server or client needs to connect."""
        return {
            "rpc_url": self.rpc_url,
            "chain_id": self.chain_id,
            "network": self.network,
            "usdc": self.usdc,
            "usdc_name": self.usdc_name,
            "usdc_version": self.usdc_version,
            "pay_to": self.pay_to,
            "relayer_key": self.relayer_key,
            "payers": [{"address": p.address, "key": p.key} for p in self.payers],
        }

    def network_config(self, **changes: Any) -> NetworkConfig:
        """A `NetworkConfig` for this chain (v1 name `local`), with optional field changes."""
        fields: dict[str, Any] = {
            "network": self.network,
            "chain_id": self.chain_id,
            "rpc_url": self.rpc_url,
            "usdc_address": self.usdc,
            "usdc_name": self.usdc_name,
            "usdc_version": self.usdc_version,
            "pay_to": self.pay_to,
            "relayer_key": self.relayer_key,
            "v1_name": "local",
        }
        fields.update(changes)
        return NetworkConfig(**fields)

    @property
    def w3(self) -> AsyncWeb3:
        if self._w3 is None:
            self._w3 = AsyncWeb3(AsyncHTTPProvider(self.rpc_url))
        return self._w3

    async def mint(self, to: str, amount_atomic: int) -> None:
        """Mint USDC to `to` (the deployer owns the token)."""
        await self._deployer_send(_mint_data(to, amount_atomic))

    async def set_eth_balance(self, address: str, wei: int) -> None:
        await self.w3.provider.make_request("anvil_setBalance", [address, hex(wei)])

    async def new_payer(
        self, usdc_atomic: int = PAYER_FUNDS_ATOMIC, eth_wei: int = 0
    ) -> LocalAccount:
        """A fresh account holding `usdc_atomic` USDC (and `eth_wei`, to send transactions)."""
        account: LocalAccount = Account.create()
        if usdc_atomic:
            await self.mint(account.address, usdc_atomic)
        if eth_wei:
            await self.set_eth_balance(account.address, eth_wei)
        return account

    async def mine(self, blocks: int = 1) -> None:
        await self.w3.provider.make_request("anvil_mine", [hex(blocks)])

    async def _deployer_send(self, data: bytes, to: str | None = None) -> Any:
        async with self._deployer_lock:
            return await _send_and_wait(self.w3, DEPLOYER_KEY, data, to or self.usdc, self.chain_id)

    async def aclose(self) -> None:
        if self._w3 is not None:
            await self._w3.provider.disconnect()
            self._w3 = None
        self.stop()

    def stop(self) -> None:
        """Stop anvil (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def __aenter__(self) -> DevChain:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def anvil_binary() -> Path:
    """The anvil executable from node_modules, running `npm ci` first when it is missing.

    Prefers the platform package's native binary over the node wrapper in `.bin`: one
    process less, and signals reach anvil itself.
    """
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    native = (
        REPO_ROOT
        / "node_modules"
        / "@foundry-rs"
        / f"anvil-{sys.platform}-{arch}"
        / "bin"
        / "anvil"
    )
    wrapper = REPO_ROOT / "node_modules" / ".bin" / "anvil"
    if not native.exists() and not wrapper.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=REPO_ROOT, check=True)
    if native.exists():
        return native
    if wrapper.exists():
        return wrapper
    raise FileNotFoundError("anvil is not installed: run `npm ci` at the repository root")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_devchain(port: int | None = None, chain_id: int = DEFAULT_CHAIN_ID) -> DevChain:
    """Start anvil on 127.0.0.1 and deploy TestUSDC ("USDC", version "2") with dev key #0.

    Dev account #1 is the relayer (funded with ETH by anvil), #2 the pay-to address, #3..#6
    payers with 100 USDC each. Takes a fraction of a second.
    """
    port = port or free_port()
    process = subprocess.Popen(
        [
            str(anvil_binary()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--chain-id",
            str(chain_id),
            "--silent",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    rpc_url = f"http://127.0.0.1:{port}"
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, exception_retry_configuration=None))
    try:
        await _wait_until_ready(w3, process)
        receipt = await _send_and_wait(w3, DEPLOYER_KEY, _deploy_data(), None, chain_id)
        chain = DevChain(
            rpc_url=rpc_url,
            chain_id=chain_id,
            usdc=receipt["contractAddress"],
            pay_to=Account.from_key(PAY_TO_KEY).address,
            relayer_key=RELAYER_KEY,
            payers=[DevAccount(Account.from_key(k).address, k) for k in PAYER_KEYS],
            _process=process,
            _w3=w3,
        )
        for payer in chain.payers:
            await chain.mint(payer.address, PAYER_FUNDS_ATOMIC)
        return chain
    except BaseException:
        await w3.provider.disconnect()
        process.terminate()
        process.wait()
        raise


def _die_with_parent() -> None:
    """In the child, before exec: have Linux SIGTERM anvil if our process dies without stop()."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


async def _wait_until_ready(w3: AsyncWeb3, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"anvil exited with {process.returncode}: {stderr.strip()}")
        try:
            await w3.eth.chain_id
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def _send_and_wait(
    w3: AsyncWeb3, key: str, data: bytes, to: str | None, chain_id: int
) -> Any:
    account = Account.from_key(key)
    tx: dict[str, Any] = {
        "from": account.address,
        "data": data,
        "chainId": chain_id,
        "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
    }
    if to is not None:
        tx["to"] = to
    tx["gas"] = int(await w3.eth.estimate_gas(tx) * 1.2)  # type: ignore[arg-type]
    tx["gasPrice"] = await w3.eth.gas_price
    del tx["from"]
    signed = account.sign_transaction(tx)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.01)
    if receipt["status"] != 1:
        raise RuntimeError(f"dev chain transaction {tx_hash.to_0x_hex()} reverted")
    return receipt


def _artifact() -> dict[str, Any]:
    return json.loads(ARTIFACT.read_text())


def _deploy_data() -> bytes:
    from eth_abi import encode

    bytecode = bytes.fromhex(_artifact()["bytecode"].removeprefix("0x"))
    return bytecode + encode(["string", "string"], [USDC_NAME, USDC_VERSION])


def _mint_data(to: str, amount_atomic: int) -> bytes:
    from eth_abi import encode
    from eth_utils import keccak, to_checksum_address

    return keccak(text="mint(address,uint256)")[:4] + encode(
        ["address", "uint256"], [to_checksum_address(to), amount_atomic]
    )


# ---------------------------------------------------------------------------------- CLI


async def _serve(port: int | None, chain_id: int) -> int:
    chain = await start_devchain(port=port, chain_id=chain_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps(chain.info()), flush=True)
    process = chain._process
    try:
        while not stop.is_set():
            if process is not None and process.poll() is not None:
                print(f"anvil exited with {process.returncode}", file=sys.stderr)
                return 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        return 0
    finally:
        await chain.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="devchain",
        description="Run anvil with TestUSDC; print one JSON line; stop on SIGTERM/SIGINT.",
    )
    parser.add_argument("--port", type=int, default=None, help="RPC port (default: a free one)")
    parser.add_argument("--chain-id", type=int, default=DEFAULT_CHAIN_ID)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(_serve(args.port, args.chain_id))


if __name__ == "__main__":
    sys.exit(main())
