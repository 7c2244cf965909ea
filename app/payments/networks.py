"""Where we get paid: one `NetworkConfig` per chain, with known USDC defaults for Base."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from eth_utils import to_checksum_address


@dataclass(frozen=True)
class NetworkConfig:
    """One chain we accept USDC on.

    `network` is CAIP-2 (`eip155:<chain_id>`), `v1_name` the legacy x402 v1 name (`base`,
    `base-sepolia`; None when v1 clients cannot address this chain). `usdc_name` and
    `usdc_version` are the token's EIP-712 domain. `relayer_key` signs settlement
    transactions and never appears in `repr`. `confirmations` counts the block that includes
    a transaction as the first.
    """

    network: str
    chain_id: int
    rpc_url: str
    usdc_address: str
    usdc_name: str
    usdc_version: str
    pay_to: str
    relayer_key: str | None = field(default=None, repr=False)
    facilitator_url: str | None = None
    confirmations: int = 1
    v1_name: str | None = None

    def __post_init__(self) -> None:
        if self.network != f"eip155:{self.chain_id}":
            raise ValueError(f"network {self.network!r} does not match chain id {self.chain_id}")
        if self.confirmations < 1:
            raise ValueError("confirmations must be at least 1")
        # Checksummed once here so every comparison downstream is a plain string equality.
        object.__setattr__(self, "usdc_address", to_checksum_address(self.usdc_address))
        object.__setattr__(self, "pay_to", to_checksum_address(self.pay_to))

    def with_(self, **changes: Any) -> NetworkConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class KnownNetwork:
    """The public facts about a chain: its id, names and canonical USDC."""

    network: str
    chain_id: int
    v1_name: str
    usdc_address: str
    usdc_name: str
    usdc_version: str


BASE = KnownNetwork(
    network="eip155:8453",
    chain_id=8453,
    v1_name="base",
    usdc_address="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    usdc_name="USD Coin",
    usdc_version="2",
)

BASE_SEPOLIA = KnownNetwork(
    network="eip155:84532",
    chain_id=84532,
    v1_name="base-sepolia",
    usdc_address="0x036CbD53842c5426634e7929541eC2318f3dCF7e",
    usdc_name="USDC",
    usdc_version="2",
)

KNOWN_NETWORKS: dict[str, KnownNetwork] = {n.network: n for n in (BASE, BASE_SEPOLIA)}


def network_config(
    network: str,
    *,
    rpc_url: str,
    pay_to: str,
    relayer_key: str | None = None,
    facilitator_url: str | None = None,
    confirmations: int = 1,
    usdc_address: str | None = None,
    usdc_name: str | None = None,
    usdc_version: str | None = None,
    v1_name: str | None = None,
) -> NetworkConfig:
    """Build a `NetworkConfig`, filling USDC and names from `KNOWN_NETWORKS` when not given.

    Raises ValueError for an unknown network without an explicit `usdc_address`.
    """
    known = KNOWN_NETWORKS.get(network)
    if not network.startswith("eip155:"):
        raise ValueError(f"unsupported network {network!r}: expected eip155:<chain_id>")
    chain_id = int(network.split(":", 1)[1])
    if known is None and usdc_address is None:
        raise ValueError(f"unknown network {network!r}: give usdc_address, usdc_name, usdc_version")
    return NetworkConfig(
        network=network,
        chain_id=chain_id,
        rpc_url=rpc_url,
        usdc_address=usdc_address or known.usdc_address,  # type: ignore[union-attr]
        usdc_name=usdc_name or (known.usdc_name if known else "USDC"),
        usdc_version=usdc_version or (known.usdc_version if known else "2"),
        pay_to=pay_to,
        relayer_key=relayer_key,
        facilitator_url=facilitator_url,
        confirmations=confirmations,
        v1_name=v1_name or (known.v1_name if known else None),
    )
