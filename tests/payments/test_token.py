"""TestUSDC itself: the EIP-3009 entry points the chain client does not use are also sound."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.logs import DISCARD

from app.payments.devchain import ARTIFACT, DEV_KEYS, PAY_TO_KEY, RELAYER_KEY, DevChain

pytest_plugins = ["tests.support.devchain"]

AMOUNT = 1_234_567


def _sign(devchain: DevChain, payer: LocalAccount, primary: str, message: dict[str, Any]) -> bytes:
    fields = {
        "CancelAuthorization": [
            {"name": "authorizer", "type": "address"},
            {"name": "nonce", "type": "bytes32"},
        ]
    }.get(
        primary,
        [
            {"name": "from", "type": "address"},
            {"name": "to", "type": "address"},
            {"name": "value", "type": "uint256"},
            {"name": "validAfter", "type": "uint256"},
            {"name": "validBefore", "type": "uint256"},
            {"name": "nonce", "type": "bytes32"},
        ],
    )
    signed = Account.sign_typed_data(
        payer.key,
        domain_data={
            "name": devchain.usdc_name,
            "version": devchain.usdc_version,
            "chainId": devchain.chain_id,
            "verifyingContract": devchain.usdc,
        },
        message_types={primary: fields},
        message_data=message,
    )
    return bytes(signed.signature)


def _authorization(payer: LocalAccount, to: str) -> dict[str, Any]:
    return {
        "from": payer.address,
        "to": to,
        "value": AMOUNT,
        "validAfter": 0,
        "validBefore": int(time.time()) + 600,
        "nonce": os.urandom(32),
    }


async def _transact(devchain: DevChain, key: str, function: Any) -> Any:
    sender = Account.from_key(key)
    w3 = devchain.w3
    tx = await function.build_transaction(
        {
            "from": sender.address,
            "nonce": await w3.eth.get_transaction_count(sender.address, "pending"),
            "gas": 200_000,
        }
    )
    tx_hash = await w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    return await w3.eth.wait_for_transaction_receipt(tx_hash, poll_latency=0.01)


@pytest.fixture(scope="module")
def token(devchain: DevChain) -> Any:
    abi = json.loads(ARTIFACT.read_text())["abi"]
    return devchain.w3.eth.contract(address=devchain.usdc, abi=abi)


async def test_token_reports_usdc_metadata(token: Any) -> None:
    assert await token.functions.decimals().call() == 6
    assert await token.functions.name().call() == "USDC"
    assert await token.functions.version().call() == "2"


async def test_bytes_signature_overload_moves_funds_once(
    devchain: DevChain, token: Any, funded_payer: LocalAccount
) -> None:
    auth = _authorization(funded_payer, devchain.pay_to)
    signature = _sign(devchain, funded_payer, "TransferWithAuthorization", auth)
    function = token.get_function_by_signature(
        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
    )(*auth.values(), signature)
    receipt = await _transact(devchain, RELAYER_KEY, function)
    assert receipt["status"] == 1
    used = token.events.AuthorizationUsed().process_receipt(receipt, errors=DISCARD)
    assert used[0]["args"]["authorizer"] == funded_payer.address
    assert await token.functions.authorizationState(funded_payer.address, auth["nonce"]).call()
    with pytest.raises(Exception, match="authorization is used or canceled"):
        await function.estimate_gas({"from": Account.from_key(RELAYER_KEY).address})


async def test_receive_with_authorization_only_by_the_payee(
    devchain: DevChain, token: Any, funded_payer: LocalAccount
) -> None:
    auth = _authorization(funded_payer, devchain.pay_to)
    signature = _sign(devchain, funded_payer, "ReceiveWithAuthorization", auth)
    v, r, s = signature[64], signature[:32], signature[32:64]
    function = token.functions.receiveWithAuthorization(*auth.values(), v, r, s)
    with pytest.raises(Exception, match="caller must be the payee"):
        await function.estimate_gas({"from": Account.from_key(DEV_KEYS[0]).address})
    before = await token.functions.balanceOf(devchain.pay_to).call()
    assert (await _transact(devchain, PAY_TO_KEY, function))["status"] == 1
    assert await token.functions.balanceOf(devchain.pay_to).call() == before + AMOUNT


async def test_canceled_authorization_cannot_be_used(
    devchain: DevChain, token: Any, funded_payer: LocalAccount
) -> None:
    auth = _authorization(funded_payer, devchain.pay_to)
    cancel = _sign(
        devchain,
        funded_payer,
        "CancelAuthorization",
        {"authorizer": funded_payer.address, "nonce": auth["nonce"]},
    )
    await _transact(
        devchain,
        RELAYER_KEY,
        token.functions.cancelAuthorization(
            funded_payer.address, auth["nonce"], cancel[64], cancel[:32], cancel[32:64]
        ),
    )
    signature = _sign(devchain, funded_payer, "TransferWithAuthorization", auth)
    function = token.functions.transferWithAuthorization(
        *auth.values(), signature[64], signature[:32], signature[32:64]
    )
    with pytest.raises(Exception, match="authorization is used or canceled"):
        await function.estimate_gas({"from": Account.from_key(RELAYER_KEY).address})


async def test_only_the_owner_mints(devchain: DevChain, token: Any) -> None:
    outsider = Account.from_key(RELAYER_KEY).address
    with pytest.raises(Exception, match="caller is not the owner"):
        await token.functions.mint(outsider, 1).estimate_gas({"from": outsider})
