"""A server killed (SIGKILL, as `kill -9`) at each step of an x402 settlement loses no payment
in either direction: after a restart, the reconciliation sweep records what the chain settled
and queues its messages, releases what never moved once it can no longer move, and a retry of
the same payment header answers the original outcome instead of 409. Real processes, a real
anvil, both databases."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, select
from x402.http import decode_payment_required_header, encode_payment_signature_header

from app.db.engine import Database
from app.db.models import Message, MessageRequest, Payment, StoredQuote
from app.payments.chain import ChainClient
from app.payments.devchain import DevChain, start_devchain
from app.payments.wire import decode_payment
from tests.support.devchain import official_client
from tests.support.live import eventually
from tests.support.processes import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
SEND = {"to": "+14155550100", "message": "Your code is 4821"}
PRICE = 35_000


@pytest.fixture
async def chain() -> AsyncIterator[DevChain]:
    """An anvil of this test's own: the tests stop its mining and move its clock."""
    devchain = await start_devchain()
    try:
        yield devchain
    finally:
        await devchain.aclose()


class Server(ServerProcess):
    """A server paid on `chain`, with payment clocks made fast (and `env` on top)."""

    def __init__(self, database_url: str, chain: DevChain, **env: str) -> None:
        super().__init__(
            database_url,
            {
                "SIMWIRE_CHAIN_RPC_URL": chain.rpc_url,
                "SIMWIRE_CHAIN_ID": str(chain.chain_id),
                "SIMWIRE_USDC_ADDRESS": chain.usdc,
                "SIMWIRE_PAY_TO": chain.pay_to,
                "SIMWIRE_RELAYER_KEY": chain.relayer_key,
                "SIMWIRE_PAYMENT_LEASE_S": "1",
                "SIMWIRE_PAYMENT_RECONCILE_INTERVAL_S": "0.3",
                "SIMWIRE_PAYMENT_RETRY_WAIT_S": "3",
                "SIMWIRE_RATE_LIMITS": "false",
                **env,
            },
        )


async def paid_header(http: httpx.AsyncClient, payer: LocalAccount, chain: DevChain) -> str:
    """The header the official x402 client signs for a fresh 402 offer (it names the quote)."""
    offer = await http.post("/v1/messages", json=SEND)
    assert offer.status_code == 402, offer.text
    required = decode_payment_required_header(offer.headers["PAYMENT-REQUIRED"])
    client = official_client(payer, chain.network_config())
    return encode_payment_signature_header(await client.create_payment_payload(required))


async def pay(http: httpx.AsyncClient, header: str) -> httpx.Response:
    return await http.post("/v1/messages", json=SEND, headers={"PAYMENT-SIGNATURE": header})


async def set_automine(chain: DevChain, on: bool) -> None:
    await chain.w3.provider.make_request("evm_setAutomine", [on])  # type: ignore[arg-type]


async def payment_row(db: Database) -> Payment | None:
    async with db.sessions() as session:
        return (await session.execute(select(Payment))).scalar_one_or_none()


async def count(db: Database, table: Any) -> int:
    async with db.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


async def settled(db: Database) -> bool:
    row = await payment_row(db)
    return row is not None and row.status == "settled"


async def crash_at(step: str, db: Database, chain: DevChain, payer: LocalAccount) -> str:
    """Starts a server that dies at `step`, pays it, and returns the header it died on."""
    server = Server(db.url, chain, SIMWIRE_CRASH_AT=step)
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            header = await paid_header(http, payer, chain)
            with pytest.raises(httpx.TransportError):
                await pay(http, header)
        assert await server.exit_code() == -signal.SIGKILL
    finally:
        server.stop()
    return header


@pytest.mark.parametrize("step", ["settle.reserved", "settle.tx_recorded"])
async def test_killed_before_anything_moved_a_retry_settles_it_once(
    step: str, db: Database, chain: DevChain
) -> None:
    payer = await chain.new_payer()
    reader = ChainClient(chain.network_config())
    before = await reader.usdc_balance(payer.address)
    header = await crash_at(step, db, chain, payer)

    held = await payment_row(db)
    assert held is not None and held.status == "reserved" and held.order is not None
    if step == "settle.tx_recorded":
        # The hash was written down before the broadcast that never happened.
        assert held.tx_hash is not None
        assert not await reader.transaction_pending(held.tx_hash)
    assert await reader.usdc_balance(payer.address) == before

    server = Server(db.url, chain)
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            retried = await pay(http, header)
            again = await pay(http, header)
    finally:
        server.stop()
        await reader.close()

    assert retried.status_code == 202, retried.text
    assert again.status_code == 202 and again.json() == retried.json()
    assert retried.json()["request_id"] == held.request_id
    assert await settled(db)
    assert await count(db, Message) == 1 and await count(db, MessageRequest) == 1
    async with ChainClient(chain.network_config()) as check:
        assert await check.usdc_balance(payer.address) == before - PRICE


@pytest.mark.parametrize("step", ["settle.broadcast", "settle.confirmed"])
async def test_killed_after_the_money_moved_the_sweep_queues_it_and_a_retry_gets_the_outcome(
    step: str, db: Database, chain: DevChain
) -> None:
    payer = await chain.new_payer()
    reader = ChainClient(chain.network_config())
    before = await reader.usdc_balance(payer.address)
    if step == "settle.broadcast":
        await set_automine(chain, False)  # the settlement waits in the pool through the crash
    header = await crash_at(step, db, chain, payer)
    held = await payment_row(db)
    assert held is not None and held.status == "reserved" and held.tx_hash is not None

    server = Server(db.url, chain)
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            if step == "settle.broadcast":
                assert await reader.transaction_pending(held.tx_hash)
                waiting = await pay(http, header)
                assert waiting.status_code == 409, waiting.text
                assert waiting.json()["error"] == "settlement_in_progress"
                await set_automine(chain, True)
                await chain.mine()
            # Nobody retries: the sweep alone records it and queues the message.
            await eventually(lambda: settled(db), timeout_s=20)
            assert await count(db, Message) == 1
            retried = await pay(http, header)
    finally:
        server.stop()
        await set_automine(chain, True)

    assert retried.status_code == 202, retried.text
    assert retried.json()["request_id"] == held.request_id
    assert retried.json()["payment"]["transaction"] == held.tx_hash
    assert await count(db, Message) == 1 and await count(db, MessageRequest) == 1
    assert await reader.usdc_balance(payer.address) == before - PRICE
    await reader.close()


async def test_killed_before_broadcast_and_never_retried_the_sweep_releases_it_once_expired(
    db: Database, chain: DevChain
) -> None:
    payer = await chain.new_payer()
    reader = ChainClient(chain.network_config())
    before = await reader.usdc_balance(payer.address)
    header = await crash_at("settle.tx_recorded", db, chain, payer)
    held = await payment_row(db)
    assert held is not None and held.valid_before is not None

    server = Server(db.url, chain)
    try:
        await server.ready()
        # Still valid and unused: the sweep looks (its lease comes and goes) and leaves it,
        # so the payer's retry window stays open.
        await eventually(lambda: _visited_by_the_sweep(db), timeout_s=20)
        assert (await payment_row(db)).status == "reserved"  # type: ignore[union-attr]
        # The chain's clock passes validBefore: from then on the token refuses it.
        await chain.w3.provider.make_request(
            "evm_setNextBlockTimestamp",
            [held.valid_before + 1],  # type: ignore[arg-type]
        )
        await chain.mine()
        await eventually(lambda: _released(db, held.quote_id), timeout_s=20)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            retried = await pay(http, header)
    finally:
        server.stop()

    assert retried.status_code == 402 and retried.json()["error"] == "authorization_expired"
    assert await count(db, Message) == 0 and await count(db, MessageRequest) == 0
    assert await reader.usdc_balance(payer.address) == before
    assert not await reader.authorization_used(payer.address, held.nonce or "")
    await reader.close()
    assert time.time() < held.valid_before  # released by the chain's clock, not by ours


async def _visited_by_the_sweep(db: Database) -> bool:
    row = await payment_row(db)
    return row is not None and row.lease_until is None


async def _released(db: Database, quote_id: str) -> bool:
    async with db.sessions() as session:
        quote = (
            await session.execute(select(StoredQuote).where(StoredQuote.id == quote_id))  # type: ignore[arg-type]
        ).scalar_one()
    return await payment_row(db) is None and quote.used_at is None


async def test_an_authorization_settled_by_someone_else_is_found_on_chain_and_queued(
    db: Database, chain: DevChain
) -> None:
    """No hash of ours to follow (a facilitator that answered too late, the payer submitting
    it itself): the sweep finds the transaction by the token's `AuthorizationUsed` log."""
    payer = await chain.new_payer()
    header = await crash_at("settle.reserved", db, chain, payer)
    held = await payment_row(db)
    assert held is not None and held.tx_hash is None
    other_relayer = await chain.new_payer(usdc_atomic=0, eth_wei=10**18)
    async with ChainClient(chain.network_config(relayer_key=other_relayer.key.to_0x_hex())) as c:
        elsewhere = await c.settle_authorization(decode_payment(header))

    server = Server(db.url, chain)
    try:
        await server.ready()
        await eventually(lambda: settled(db), timeout_s=20)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            retried = await pay(http, header)
    finally:
        server.stop()

    recorded = await payment_row(db)
    assert recorded is not None and recorded.tx_hash == elsewhere.tx_hash
    assert retried.status_code == 202 and retried.json()["request_id"] == held.request_id
    assert await count(db, Message) == 1
