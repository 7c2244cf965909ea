"""The chain client against a real anvil: settlement moves exactly the amount, replays and
reverts are refused with reasons, concurrent settlements share one relayer, a relayer
without gas fails before using the authorization, and plain transfers are proven."""

from __future__ import annotations

import asyncio
import time

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from app.payments.chain import ChainClient
from app.payments.devchain import DevChain, free_port
from app.payments.eip3009 import verify_authorization
from app.payments.errors import ChainUnavailable, PaymentInvalid, SettlementFailed
from app.payments.networks import NetworkConfig
from app.payments.requirements import PaymentRequirement
from app.payments.wire import DecodedPayment, decode_payment
from tests.support.devchain import sign_payment
from tests.support.live import eventually, watch_calls

pytest_plugins = ["tests.support.devchain"]

PRICE = 25_000


@pytest.fixture
def requirement(devchain_network: NetworkConfig) -> PaymentRequirement:
    return PaymentRequirement(devchain_network, amount_atomic=PRICE)


def _payment(
    payer: LocalAccount, requirement: PaymentRequirement, **changes: object
) -> DecodedPayment:
    payment = decode_payment(sign_payment(payer, requirement, **changes))  # type: ignore[arg-type]
    verify_authorization(payment, requirement, int(time.time()))
    return payment


async def test_settlement_moves_exactly_the_amount(
    chain_client: ChainClient, funded_payer: LocalAccount, requirement: PaymentRequirement
) -> None:
    pay_to = requirement.network.pay_to
    payment = _payment(funded_payer, requirement)
    payer_before = await chain_client.usdc_balance(funded_payer.address)
    pay_to_before = await chain_client.usdc_balance(pay_to)
    await chain_client.check_payable(payment)

    settlement = await chain_client.settle_authorization(payment)

    assert settlement.payer == funded_payer.address and settlement.amount == PRICE
    assert settlement.tx_hash.startswith("0x") and len(settlement.tx_hash) == 66
    assert settlement.network == requirement.network.network
    assert await chain_client.usdc_balance(funded_payer.address) == payer_before - PRICE
    assert await chain_client.usdc_balance(pay_to) == pay_to_before + PRICE
    assert await chain_client.authorization_used(funded_payer.address, payment.nonce)


async def test_replay_after_settlement_is_refused(
    chain_client: ChainClient, funded_payer: LocalAccount, requirement: PaymentRequirement
) -> None:
    payment = _payment(funded_payer, requirement)
    await chain_client.settle_authorization(payment)
    balance = await chain_client.usdc_balance(funded_payer.address)

    with pytest.raises(PaymentInvalid) as checked:
        await chain_client.check_payable(payment)
    assert checked.value.reason == "authorization_used"
    with pytest.raises(SettlementFailed) as settled:
        await chain_client.settle_authorization(payment)
    assert settled.value.reason == "authorization_used"
    assert settled.value.code == "settlement_failed"
    assert await chain_client.usdc_balance(funded_payer.address) == balance


async def test_payer_without_funds_is_refused_before_and_at_settlement(
    chain_client: ChainClient, devchain: DevChain, requirement: PaymentRequirement
) -> None:
    poor = await devchain.new_payer(usdc_atomic=PRICE - 1)
    payment = _payment(poor, requirement)
    with pytest.raises(PaymentInvalid) as checked:
        await chain_client.check_payable(payment)
    assert checked.value.reason == "insufficient_balance"
    with pytest.raises(SettlementFailed) as settled:
        await chain_client.settle_authorization(payment)
    assert settled.value.reason == "insufficient_balance"
    assert not await chain_client.authorization_used(poor.address, payment.nonce)


async def test_token_refuses_an_authorization_that_is_not_yet_valid(
    chain_client: ChainClient, funded_payer: LocalAccount, requirement: PaymentRequirement
) -> None:
    # Skips our own verifier, to prove the token and our revert mapping agree with it.
    later = int(time.time()) + 3600
    payment = decode_payment(sign_payment(funded_payer, requirement, valid_after=later))
    with pytest.raises(SettlementFailed) as settled:
        await chain_client.settle_authorization(payment)
    assert settled.value.reason == "authorization_not_yet_valid"


async def test_ten_concurrent_settlements_from_one_relayer_all_land(
    chain_client: ChainClient, devchain: DevChain, requirement: PaymentRequirement
) -> None:
    payers = await asyncio.gather(*(devchain.new_payer() for _ in range(10)))
    payments = [_payment(p, requirement) for p in payers]
    pay_to_before = await chain_client.usdc_balance(requirement.network.pay_to)

    settlements = await asyncio.gather(*(chain_client.settle_authorization(p) for p in payments))

    assert len({s.tx_hash for s in settlements}) == 10
    assert await chain_client.usdc_balance(requirement.network.pay_to) == pay_to_before + 10 * PRICE
    for payer in payers:
        assert await chain_client.usdc_balance(payer.address) == 100_000_000 - PRICE


async def test_relayer_without_gas_is_unavailable_and_leaves_the_authorization_unused(
    devchain_network: NetworkConfig, funded_payer: LocalAccount, requirement: PaymentRequirement
) -> None:
    broke = Account.create()
    payment = _payment(funded_payer, requirement)
    async with ChainClient(devchain_network.with_(relayer_key=broke.key.to_0x_hex())) as client:
        with pytest.raises(ChainUnavailable) as caught:
            await client.settle_authorization(payment)
        assert caught.value.reason == "relayer_out_of_gas"
        assert caught.value.code == "chain_unavailable"
        assert not await client.authorization_used(funded_payer.address, payment.nonce)
    # The same authorization still settles through a relayer that has gas.
    async with ChainClient(devchain_network) as client:
        await client.settle_authorization(payment)


async def test_no_relayer_key_is_unavailable(
    devchain_network: NetworkConfig, funded_payer: LocalAccount, requirement: PaymentRequirement
) -> None:
    async with ChainClient(devchain_network.with_(relayer_key=None)) as client:
        with pytest.raises(ChainUnavailable) as caught:
            await client.settle_authorization(_payment(funded_payer, requirement))
    assert caught.value.reason == "no_relayer"


async def test_unreachable_node_is_unavailable(
    devchain_network: NetworkConfig, funded_payer: LocalAccount, requirement: PaymentRequirement
) -> None:
    down = devchain_network.with_(rpc_url=f"http://127.0.0.1:{free_port()}")
    async with ChainClient(down, rpc_attempts=2) as client:
        with pytest.raises(ChainUnavailable) as read:
            await client.usdc_balance(funded_payer.address)
        with pytest.raises(ChainUnavailable) as settle:
            await client.settle_authorization(_payment(funded_payer, requirement))
    assert read.value.reason == settle.value.reason == "rpc_unavailable"


# ------------------------------------------------------------------------ transfer proofs


async def _transfer(
    devchain: DevChain, sender: LocalAccount, to: str, amount: int, gas: int | None = None
) -> str:
    from eth_abi import encode

    w3 = devchain.w3
    tx = {
        "to": devchain.usdc,
        "data": keccak(text="transfer(address,uint256)")[:4]
        + encode(["address", "uint256"], [to, amount]),
        "chainId": devchain.chain_id,
        "nonce": await w3.eth.get_transaction_count(sender.address, "pending"),
        "gasPrice": await w3.eth.gas_price,
        "gas": gas or 100_000,
    }
    tx_hash = await w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    await w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.01)
    return tx_hash.to_0x_hex()


@pytest.fixture
async def sender(devchain: DevChain) -> LocalAccount:
    return await devchain.new_payer(eth_wei=10**18)


async def test_plain_transfer_is_proven(
    chain_client: ChainClient, devchain: DevChain, sender: LocalAccount
) -> None:
    tx_hash = await _transfer(devchain, sender, devchain.pay_to, PRICE + 5)
    proof = await chain_client.verify_transfer_tx(tx_hash, PRICE)
    assert proof.payer == sender.address
    assert proof.amount == PRICE + 5
    assert proof.tx_hash == tx_hash.lower() and proof.block > 0


async def test_unknown_transaction_is_not_found(chain_client: ChainClient) -> None:
    with pytest.raises(PaymentInvalid) as caught:
        await chain_client.verify_transfer_tx("0x" + "ab" * 32, PRICE)
    assert caught.value.reason == "tx_not_found"


async def test_malformed_transaction_hash_is_refused(chain_client: ChainClient) -> None:
    with pytest.raises(PaymentInvalid) as caught:
        await chain_client.verify_transfer_tx("0x1234", PRICE)
    assert caught.value.reason == "malformed_payment"


async def test_reverted_transfer_is_refused(
    chain_client: ChainClient, devchain: DevChain, sender: LocalAccount
) -> None:
    tx_hash = await _transfer(devchain, sender, devchain.pay_to, 10**12, gas=100_000)
    with pytest.raises(PaymentInvalid) as caught:
        await chain_client.verify_transfer_tx(tx_hash, PRICE)
    assert caught.value.reason == "tx_failed"


async def test_transfer_to_someone_else_is_refused(
    chain_client: ChainClient, devchain: DevChain, sender: LocalAccount
) -> None:
    tx_hash = await _transfer(devchain, sender, Account.create().address, PRICE)
    with pytest.raises(PaymentInvalid) as caught:
        await chain_client.verify_transfer_tx(tx_hash, PRICE)
    assert caught.value.reason == "no_transfer_to_pay_to"


async def test_transfer_short_by_one_is_refused(
    chain_client: ChainClient, devchain: DevChain, sender: LocalAccount
) -> None:
    tx_hash = await _transfer(devchain, sender, devchain.pay_to, PRICE - 1)
    with pytest.raises(PaymentInvalid) as caught:
        await chain_client.verify_transfer_tx(tx_hash, PRICE)
    assert caught.value.reason == "amount_too_low"


async def test_transfer_needs_the_configured_confirmations(
    devchain: DevChain, devchain_network: NetworkConfig, sender: LocalAccount
) -> None:
    tx_hash = await _transfer(devchain, sender, devchain.pay_to, PRICE)
    async with ChainClient(devchain_network.with_(confirmations=3)) as client:
        with pytest.raises(PaymentInvalid) as caught:
            await client.verify_transfer_tx(tx_hash, PRICE)
        assert caught.value.reason == "insufficient_confirmations"
        await devchain.mine(2)
        assert (await client.verify_transfer_tx(tx_hash, PRICE)).amount == PRICE


async def test_settlement_waits_for_the_configured_confirmations(
    devchain: DevChain,
    devchain_network: NetworkConfig,
    funded_payer: LocalAccount,
    requirement: PaymentRequirement,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payment = _payment(funded_payer, requirement)
    async with ChainClient(devchain_network.with_(confirmations=2)) as client:
        # The client reads the block number only to count confirmations of a mined receipt.
        confirmation_checks = watch_calls(monkeypatch, client, "block_number")
        settling = asyncio.create_task(client.settle_authorization(payment))
        await eventually(lambda: settling.done() or len(confirmation_checks.calls) >= 2)
        assert not settling.done()  # mined, checked twice, still one confirmation short
        await devchain.mine(1)
        settlement = await asyncio.wait_for(settling, timeout=5)
    assert await devchain.w3.eth.block_number >= settlement.block_number + 1
