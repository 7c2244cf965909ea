"""`scripts/devchain` prints one JSON line describing a working chain and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from web3 import Web3

from app.payments.devchain import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "devchain"


def test_devchain_script_prints_its_chain_and_stops_on_sigterm() -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(SCRIPT), "--port", str(port), "--chain-id", "1337"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        assert info["rpc_url"] == f"http://127.0.0.1:{port}"
        assert info["chain_id"] == 1337 and info["network"] == "eip155:1337"
        assert (info["usdc_name"], info["usdc_version"]) == ("USDC", "2")
        assert len(info["payers"]) == 4
        w3 = Web3(Web3.HTTPProvider(info["rpc_url"]))
        assert w3.eth.chain_id == 1337
        token = w3.eth.contract(
            address=info["usdc"],
            abi=[
                {
                    "name": "balanceOf",
                    "type": "function",
                    "stateMutability": "view",
                    "inputs": [{"name": "a", "type": "address"}],
                    "outputs": [{"name": "", "type": "uint256"}],
                }
            ],
        )
        for payer in info["payers"]:
            assert token.functions.balanceOf(payer["address"]).call() == 100_000_000
        relayer = w3.eth.account.from_key(info["relayer_key"]).address
        assert w3.eth.get_balance(relayer) > 0

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert not w3.is_connected()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
