"""Network configuration: known USDC defaults, checksummed addresses, no secret in repr."""

from __future__ import annotations

import pytest

from app.payments.networks import BASE, BASE_SEPOLIA, NetworkConfig, network_config

PAY_TO = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc"
SECRET = "0x" + "42" * 32


def test_known_networks_fill_in_usdc_and_v1_names() -> None:
    base = network_config("eip155:8453", rpc_url="https://rpc.example", pay_to=PAY_TO)
    sepolia = network_config("eip155:84532", rpc_url="https://rpc.example", pay_to=PAY_TO)
    assert (base.usdc_address, base.usdc_name, base.usdc_version, base.v1_name) == (
        "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        "USD Coin",
        "2",
        "base",
    )
    assert (sepolia.usdc_address, sepolia.usdc_name, sepolia.v1_name) == (
        "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "USDC",
        "base-sepolia",
    )
    assert base.chain_id == BASE.chain_id and sepolia.chain_id == BASE_SEPOLIA.chain_id
    assert base.pay_to == "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def test_relayer_key_never_shows_in_repr() -> None:
    config = network_config(
        "eip155:84532", rpc_url="https://rpc.example", pay_to=PAY_TO, relayer_key=SECRET
    )
    assert config.relayer_key == SECRET
    assert SECRET not in repr(config) and "42424242" not in str(config)


def test_unknown_network_needs_its_usdc_and_a_matching_chain_id() -> None:
    with pytest.raises(ValueError):
        network_config("eip155:31337", rpc_url="http://127.0.0.1:8545", pay_to=PAY_TO)
    with pytest.raises(ValueError):
        NetworkConfig(
            network="eip155:1",
            chain_id=2,
            rpc_url="x",
            usdc_address=PAY_TO,
            usdc_name="USDC",
            usdc_version="2",
            pay_to=PAY_TO,
        )
