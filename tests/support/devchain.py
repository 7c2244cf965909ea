"""Pytest plugin: one anvil dev chain per session, funded payers and signed x402 payments.

Use with `pytest_plugins = ["tests.support.devchain"]`; test modules may also import
`sign_payment` from here. PYTEST_DONT_REWRITE (no asserts here; lets modules import it first).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402 import x402Client
from x402.http import encode_payment_signature_header
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.schemas import PaymentPayload, PaymentRequirements
from x402.schemas.v1 import PaymentPayloadV1

from app.payments.chain import ChainClient
from app.payments.devchain import DevChain, start_devchain
from app.payments.networks import NetworkConfig
from app.payments.requirements import PaymentRequirement


@pytest.fixture(scope="session")
async def devchain() -> AsyncIterator[DevChain]:
    """A running anvil with TestUSDC, shared by the whole test session."""
    chain = await start_devchain()
    try:
        yield chain
    finally:
        await chain.aclose()


@pytest.fixture(scope="session")
def devchain_network(devchain: DevChain) -> NetworkConfig:
    """The dev chain as a `NetworkConfig` (relayer: dev account #1, v1 name `local`)."""
    return devchain.network_config()


@pytest.fixture
async def funded_payer(devchain: DevChain) -> LocalAccount:
    """A fresh account holding 100 USDC and no ETH (x402 payers need none)."""
    return await devchain.new_payer()


@pytest.fixture(scope="session")
async def chain_client(devchain_network: NetworkConfig) -> AsyncIterator[ChainClient]:
    """The session's client for the dev chain; its relayer is dev account #1."""
    client = ChainClient(devchain_network)
    try:
        yield client
    finally:
        await client.close()


def official_client(account: LocalAccount, network: NetworkConfig) -> x402Client:
    """The x402 package's own client, paying as `account`, allowed to spend the dev USDC."""
    client = x402Client()
    register_exact_evm_client(client, account)
    allowed = [{"network": network.network, "asset": network.usdc_address}]
    if network.v1_name:
        allowed.append({"network": network.v1_name, "asset": network.usdc_address})
    client.set_spend_controls({"allowed_assets": allowed})  # type: ignore[typeddict-item]
    return client


def sign_payment(
    account: LocalAccount,
    requirement: PaymentRequirement,
    *,
    x402_version: int = 2,
    value: int | None = None,
    to: str | None = None,
    valid_after: int | None = None,
    valid_before: int | None = None,
    nonce: bytes | None = None,
    network: str | None = None,
    asset: str | None = None,
    chain_id: int | None = None,
    scheme: str = "exact",
) -> str:
    """A payment header value (`PAYMENT-SIGNATURE` for v2, `X-PAYMENT` for v1) paying
    `requirement`, with any field overridden to build a wrong one. The EIP-712 domain follows
    `asset` and `chain_id` when given, so a payment for another token or chain is signed as
    such a client would sign it.
    """
    config = requirement.network
    now = int(time.time())
    authorization = {
        "from": account.address,
        "to": to or config.pay_to,
        "value": requirement.amount_atomic if value is None else value,
        "validAfter": (now - 60) if valid_after is None else valid_after,
        "validBefore": (now + requirement.max_timeout_s) if valid_before is None else valid_before,
        "nonce": nonce or os.urandom(32),
    }
    signed = Account.sign_typed_data(
        account.key,
        domain_data={
            "name": config.usdc_name,
            "version": config.usdc_version,
            "chainId": chain_id or config.chain_id,
            "verifyingContract": asset or config.usdc_address,
        },
        message_types={
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"},
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"},
                {"name": "nonce", "type": "bytes32"},
            ]
        },
        message_data=authorization,
    )
    inner: dict[str, Any] = {
        "authorization": {
            **{k: str(v) for k, v in authorization.items() if k not in ("nonce", "from", "to")},
            "from": authorization["from"],
            "to": authorization["to"],
            "nonce": "0x" + authorization["nonce"].hex(),
        },
        "signature": signed.signature.to_0x_hex(),
    }
    if x402_version == 1:
        payload_v1 = PaymentPayloadV1(
            scheme=scheme, network=network or config.v1_name or "local", payload=inner
        )
        return encode_payment_signature_header(payload_v1)
    payload = PaymentPayload(
        x402_version=2,
        payload=inner,
        accepted=PaymentRequirements(
            scheme=scheme,
            network=network or config.network,
            asset=asset or config.usdc_address,
            amount=str(requirement.amount_atomic),
            pay_to=to or config.pay_to,
            max_timeout_seconds=requirement.max_timeout_s,
            extra={"name": config.usdc_name, "version": config.usdc_version},
        ),
    )
    return encode_payment_signature_header(payload)
