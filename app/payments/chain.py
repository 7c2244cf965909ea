"""The chain, seen from our side: read USDC state, settle EIP-3009 authorizations, prove transfers.

One `ChainClient` per network and process. It owns the relayer's nonce sequence, so many
settlements can be in flight at once; do not share the relayer key with another sender.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3RPCError,
)

from app.faults import crash_point
from app.payments.errors import ChainUnavailable, PaymentInvalid, SettlementFailed
from app.payments.networks import NetworkConfig
from app.payments.wire import DecodedPayment

T = TypeVar("T")
TxHashHook = Callable[[str], Awaitable[None]]

# Errors that mean "the node did not answer", as opposed to "the node said no".
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
    ProviderConnectionError,
    TimeExhausted,
)

_TRANSFER_TOPIC = keccak(text="Transfer(address,address,uint256)")
_AUTHORIZATION_USED_TOPIC = keccak(text="AuthorizationUsed(address,bytes32)")
_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")

# Revert strings of the token (Circle's FiatToken says the same after a "FiatTokenV2: " prefix).
_REVERT_REASONS = (
    ("authorization is used or canceled", "authorization_used"),
    ("authorization is expired", "authorization_expired"),
    ("authorization is not yet valid", "authorization_not_yet_valid"),
    ("invalid signature", "invalid_signature"),
    ("exceeds balance", "insufficient_balance"),
    ("blacklisted", "account_blacklisted"),
    ("paused", "token_paused"),
)

_GAS_HEADROOM = 1.25
_FEE_BUMP = 1.25
_SEND_ATTEMPTS = 5


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


_AUTHORIZATION_STATE = _selector("authorizationState(address,bytes32)")
_BALANCE_OF = _selector("balanceOf(address)")
_TRANSFER_WITH_AUTHORIZATION = _selector(
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
)


@dataclass(frozen=True)
class Settlement:
    """An authorization settled on chain: `amount` (USDC atomic units) moved from `payer`."""

    tx_hash: str
    block_number: int
    payer: str
    amount: int
    network: str


@dataclass(frozen=True)
class TransferProof:
    """A confirmed plain USDC transfer of `amount` from `payer` to our pay-to address, mined
    in `block` at `mined_at` (unix seconds)."""

    tx_hash: str
    payer: str
    amount: int
    block: int
    mined_at: int


class ChainClient:
    """Async access to one network's USDC through JSON-RPC (`AsyncWeb3` over HTTP).

    Every method raises `ChainUnavailable("rpc_unavailable")` when the node cannot be reached
    after a few retries. Reads are retried; a settlement is sent once per nonce and then
    followed by hash, so retries never pay twice.
    """

    def __init__(
        self,
        network: NetworkConfig,
        *,
        request_timeout_s: float = 10.0,
        receipt_timeout_s: float = 120.0,
        poll_interval_s: float = 0.05,
        rpc_attempts: int = 3,
    ) -> None:
        self.network = network
        self._w3 = AsyncWeb3(
            AsyncHTTPProvider(
                network.rpc_url,
                request_kwargs={"timeout": aiohttp.ClientTimeout(total=request_timeout_s)},
                # We retry ourselves (tenacity, below), with limits we choose per call.
                exception_retry_configuration=None,
            )
        )
        self._relayer: LocalAccount | None = (
            Account.from_key(network.relayer_key) if network.relayer_key else None
        )
        self._receipt_timeout_s = receipt_timeout_s
        self._poll_interval_s = poll_interval_s
        self._rpc_attempts = rpc_attempts
        self._nonce_lock = asyncio.Lock()
        self._next_nonce: int | None = None
        self._fees_lock = asyncio.Lock()
        self._fees: tuple[float, int, int] | None = None  # (fetched at, base fee, tip), wei

    @property
    def w3(self) -> AsyncWeb3:
        return self._w3

    @property
    def relayer_address(self) -> str | None:
        return self._relayer.address if self._relayer else None

    async def close(self) -> None:
        """Close the HTTP session; the client is unusable afterwards."""
        await self._w3.provider.disconnect()

    async def __aenter__(self) -> ChainClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------- reads

    async def authorization_used(self, payer: str, nonce: str | bytes) -> bool:
        """Whether the token has used or canceled `payer`'s authorization `nonce`."""
        nonce_bytes = bytes.fromhex(nonce[2:]) if isinstance(nonce, str) else nonce
        data = _AUTHORIZATION_STATE + abi_encode(
            ["address", "bytes32"], [to_checksum_address(payer), nonce_bytes]
        )
        result = await self._eth_call(data)
        return bool(abi_decode(["bool"], result)[0])

    async def usdc_balance(self, address: str) -> int:
        """USDC balance of `address`, in atomic units (6 decimals)."""
        data = _BALANCE_OF + abi_encode(["address"], [to_checksum_address(address)])
        return int(abi_decode(["uint256"], await self._eth_call(data))[0])

    async def check_payable(self, payment: DecodedPayment) -> None:
        """Ask the token whether `payment` could settle now.

        Raises `PaymentInvalid` with reason `authorization_used` (nonce used or canceled) or
        `insufficient_balance` (the payer holds less than the authorized value).
        """
        used, balance = await asyncio.gather(
            self.authorization_used(payment.from_address, payment.nonce),
            self.usdc_balance(payment.from_address),
        )
        if used:
            raise PaymentInvalid("authorization_used", "this authorization was already used")
        if balance < payment.value:
            raise PaymentInvalid(
                "insufficient_balance",
                f"payer holds {balance}, the authorization moves {payment.value}",
            )

    async def block_number(self) -> int:
        """The newest block's number."""
        return int(await self._rpc(lambda: self._w3.eth.block_number))

    async def block_timestamp(self, block: int | str = "latest") -> int:
        """A block's timestamp (unix seconds); the token compares `validBefore` with it."""
        found = await self._rpc(lambda: self._w3.eth.get_block(block))  # type: ignore[arg-type]
        return int(found["timestamp"])

    async def find_authorization_tx(self, payer: str, nonce: str, from_block: int) -> str | None:
        """The hash of the transaction that used `payer`'s authorization `nonce` (our USDC's
        `AuthorizationUsed` log), searching from `from_block`; None when there is none."""
        topics: list[Any] = [
            "0x" + _AUTHORIZATION_USED_TOPIC.hex(),
            "0x" + bytes(12).hex() + to_checksum_address(payer)[2:].lower(),
            nonce.lower(),
        ]
        logs = await self._rpc(
            lambda: self._w3.eth.get_logs(
                {
                    "address": self.network.usdc_address,  # type: ignore[typeddict-item]
                    "topics": topics,
                    "fromBlock": max(from_block, 0),
                    "toBlock": "latest",
                }
            )
        )
        for log in logs:
            return HexBytes(log["transactionHash"]).to_0x_hex()
        return None

    async def _eth_call(self, data: bytes) -> bytes:
        tx = {"to": self.network.usdc_address, "data": data}
        return bytes(await self._rpc(lambda: self._w3.eth.call(tx)))  # type: ignore[arg-type]

    async def _rpc(self, call: Callable[[], Awaitable[T]]) -> T:
        """One read with retries on connection errors; `ChainUnavailable` when they run out."""
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._rpc_attempts),
                wait=wait_exponential(multiplier=0.1, max=1.0),
                retry=retry_if_exception_type(_CONNECTION_ERRORS),
                reraise=True,
            ):
                with attempt:
                    return await call()
        except _CONNECTION_ERRORS as exc:
            raise ChainUnavailable("rpc_unavailable", f"{self.network.network} RPC: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -------------------------------------------------------------------- settlement

    async def settle_authorization(
        self, payment: DecodedPayment, on_signed: TxHashHook | None = None
    ) -> Settlement:
        """Submit `transferWithAuthorization` from the relayer and wait for it to confirm.

        Call after `eip3009.verify_authorization`. The transaction is simulated first, so a
        revert costs no gas and leaves the authorization unused. `on_signed(tx_hash)` is
        awaited before each signed transaction is broadcast, so its hash can be recorded
        first (a crash after broadcasting then leaves the hash to look up). Returns once the
        receipt has `network.confirmations` confirmations.

        Raises `SettlementFailed(reason)` when the token refuses (`authorization_used`,
        `authorization_expired`, `authorization_not_yet_valid`, `invalid_signature`,
        `insufficient_balance`, `transaction_reverted`), and `ChainUnavailable(reason)` when
        the node is down (`rpc_unavailable`), the relayer cannot pay gas
        (`relayer_out_of_gas`), none is configured (`no_relayer`) or the receipt does not
        come in time (`receipt_timeout`, with `tx_hash`: it may still be mined).
        """
        relayer = self._require_relayer()
        tx: dict[str, Any] = {
            "from": relayer.address,
            "to": self.network.usdc_address,
            "data": _transfer_with_authorization_data(payment),
            "value": 0,
            "chainId": self.network.chain_id,
        }
        gas = await self._estimate_gas(tx)
        tx["gas"] = int(gas * _GAS_HEADROOM)
        tx_hash = await self._send(relayer, tx, on_signed)
        crash_point("settle.broadcast")
        receipt = await self._wait_for_receipt(tx_hash)
        if receipt["status"] != 1:
            # Lost a race after the simulation (the same authorization settled elsewhere).
            used = await self.authorization_used(payment.from_address, payment.nonce)
            raise SettlementFailed(
                "authorization_used" if used else "transaction_reverted", tx_hash=tx_hash
            )
        block_number = int(receipt["blockNumber"])
        await self._wait_for_confirmations(block_number, tx_hash)
        return Settlement(
            tx_hash=tx_hash,
            block_number=block_number,
            payer=payment.from_address,
            amount=payment.value,
            network=self.network.network,
        )

    async def confirm_settlement(self, tx_hash: str, payment: DecodedPayment) -> Settlement:
        """Confirm through our own node that `tx_hash` (sent by someone else, e.g. an x402
        facilitator) settled `payment`: a successful receipt with our USDC's
        `AuthorizationUsed(payer, nonce)` and a `Transfer` of exactly `payment.value` from the
        payer to the payee, with `network.confirmations`.

        Raises `ChainUnavailable("receipt_timeout", tx_hash=...)` when it does not come in
        time (it may still be mined), `SettlementFailed("transaction_reverted")` when it
        reverted with the authorization unused, and `ChainUnavailable("settlement_unknown",
        tx_hash=...)` when the transaction does not show the transfer but the authorization
        is used on chain (the money moved in some transaction: reconcile by hand).
        """
        receipt = await self._wait_for_receipt(tx_hash)
        expected = (payment.from_address, payment.to, payment.value)
        if (
            receipt["status"] != 1
            or expected not in map(self._usdc_transfer, receipt["logs"])
            or not any(self._uses_authorization(log, payment) for log in receipt["logs"])
        ):
            if await self.authorization_used(payment.from_address, payment.nonce):
                raise ChainUnavailable(
                    "settlement_unknown",
                    f"{tx_hash} does not show the transfer, but the authorization is used",
                    tx_hash=tx_hash,
                )
            raise SettlementFailed(
                "transaction_reverted", f"{tx_hash} did not settle the authorization"
            )
        block_number = int(receipt["blockNumber"])
        await self._wait_for_confirmations(block_number, tx_hash)
        return Settlement(
            tx_hash=tx_hash.lower(),
            block_number=block_number,
            payer=payment.from_address,
            amount=payment.value,
            network=self.network.network,
        )

    def _require_relayer(self) -> LocalAccount:
        if self._relayer is None:
            raise ChainUnavailable("no_relayer", f"{self.network.network} has no relayer key")
        return self._relayer

    async def _estimate_gas(self, tx: dict[str, Any]) -> int:
        try:
            return int(await self._rpc(lambda: self._w3.eth.estimate_gas(tx)))  # type: ignore[arg-type]
        except ContractLogicError as exc:
            reason = _revert_reason(str(exc))
            raise SettlementFailed(reason, f"the token refused the authorization: {exc}") from exc
        except Web3RPCError as exc:
            raise _send_error(exc) from exc

    async def _send(
        self, relayer: LocalAccount, tx: dict[str, Any], on_signed: TxHashHook | None = None
    ) -> str:
        """Sign with the next nonce and send; handle nonce races and fee bumps."""
        bump = 0
        nonce: int | None = None
        for _ in range(_SEND_ATTEMPTS):
            if nonce is None:
                nonce = await self._allocate_nonce(relayer.address)
            base_fee, tip = await self._current_fees()
            factor = _FEE_BUMP**bump
            tip = int(tip * factor)
            signed = relayer.sign_transaction(
                {
                    **{k: v for k, v in tx.items() if k != "from"},
                    "nonce": nonce,
                    "type": 2,
                    "maxPriorityFeePerGas": tip,
                    "maxFeePerGas": int(2 * base_fee * factor) + tip,
                }
            )
            tx_hash = signed.hash.to_0x_hex()
            if on_signed is not None:
                await on_signed(tx_hash)
            try:
                await self._send_raw(signed.raw_transaction)
                return tx_hash
            except Web3RPCError as exc:
                message = str(exc).lower()
                if "already known" in message or "already imported" in message:
                    return tx_hash
                if "insufficient funds" in message:
                    await self._forget_nonce()
                    raise ChainUnavailable(
                        "relayer_out_of_gas",
                        f"relayer {relayer.address} cannot pay gas on {self.network.network}",
                    ) from exc
                if "nonce too low" in message or "nonce has already been used" in message:
                    await self._forget_nonce()
                    nonce = None
                    continue
                if "replacement" in message:
                    # Someone else holds this nonce in the pool: take a fresh one rather than
                    # replace a transaction that may be another settlement.
                    await self._forget_nonce()
                    nonce = None
                    bump += 1
                    continue
                if "underpriced" in message or "fee" in message:
                    bump += 1
                    self._fees = None
                    continue
                await self._forget_nonce()
                raise _send_error(exc) from exc
            except ChainUnavailable:
                await self._forget_nonce()
                raise
        await self._forget_nonce()
        raise ChainUnavailable("send_failed", f"could not send after {_SEND_ATTEMPTS} attempts")

    async def _send_raw(self, raw: bytes) -> None:
        try:
            await self._rpc(lambda: self._w3.eth.send_raw_transaction(raw))
        except Web3RPCError as exc:
            # A resend after a lost answer finds our own transaction already there.
            if "nonce too low" in str(exc).lower() and await self._known(keccak(raw)):
                return
            raise

    async def transaction_pending(self, tx_hash: str) -> bool:
        """Whether the node holds `tx_hash` unmined (in its pool)."""
        try:
            await self._rpc(lambda: self._w3.eth.get_transaction_receipt(tx_hash))  # type: ignore[arg-type]
            return False
        except TransactionNotFound:
            return await self._known(bytes.fromhex(tx_hash[2:]))

    async def _known(self, tx_hash: bytes) -> bool:
        try:
            await self._rpc(lambda: self._w3.eth.get_transaction(HexBytes(tx_hash)))
            return True
        except TransactionNotFound:
            return False

    async def _allocate_nonce(self, address: str) -> int:
        async with self._nonce_lock:
            if self._next_nonce is None:
                self._next_nonce = int(
                    await self._rpc(
                        lambda: self._w3.eth.get_transaction_count(address, "pending")  # type: ignore[arg-type]
                    )
                )
            nonce = self._next_nonce
            self._next_nonce += 1
            return nonce

    async def _forget_nonce(self) -> None:
        """Resync from the node's pending count on the next send (after an unsent nonce)."""
        async with self._nonce_lock:
            self._next_nonce = None

    async def _current_fees(self) -> tuple[int, int]:
        """(base fee, priority tip) in wei, cached for a second: every send needs them."""
        async with self._fees_lock:
            now = time.monotonic()
            if self._fees is None or now - self._fees[0] > 1.0:
                block, tip = await asyncio.gather(
                    self._rpc(lambda: self._w3.eth.get_block("latest")),
                    self._rpc(lambda: self._w3.eth.max_priority_fee),
                )
                base_fee = int(block.get("baseFeePerGas") or 0)
                self._fees = (now, base_fee, max(int(tip), 1))
            return self._fees[1], self._fees[2]

    async def _wait_for_receipt(self, tx_hash: str) -> Any:
        deadline = time.monotonic() + self._receipt_timeout_s
        interval = self._poll_interval_s
        while True:
            try:
                return await self._rpc(lambda: self._w3.eth.get_transaction_receipt(tx_hash))  # type: ignore[arg-type]
            except TransactionNotFound:
                pass
            if time.monotonic() > deadline:
                raise ChainUnavailable(
                    "receipt_timeout", f"no receipt for {tx_hash} yet", tx_hash=tx_hash
                )
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 1.0)

    async def _wait_for_confirmations(self, block_number: int, tx_hash: str) -> None:
        deadline = time.monotonic() + self._receipt_timeout_s
        while await self._confirmations(block_number) < self.network.confirmations:
            if time.monotonic() > deadline:
                raise ChainUnavailable(
                    "receipt_timeout", f"{tx_hash} is not confirmed yet", tx_hash=tx_hash
                )
            await asyncio.sleep(min(self._poll_interval_s * 4, 1.0))

    async def _confirmations(self, block_number: int) -> int:
        return await self.block_number() - block_number + 1

    # ---------------------------------------------------------------- transfer proofs

    async def verify_transfer_tx(
        self, tx_hash: str, min_amount: int, pay_to: str | None = None
    ) -> TransferProof:
        """Prove that `tx_hash` is a confirmed USDC transfer of at least `min_amount` to us.

        Looks for one `Transfer` log of our USDC contract to `pay_to` (default: the network's)
        with value ≥ `min_amount` in a successful receipt with `network.confirmations`.
        Whether the hash was used before is the caller's to check.

        Raises `PaymentInvalid` with reason `malformed_payment` (not a tx hash),
        `tx_not_found`, `tx_failed`, `no_transfer_to_pay_to`, `amount_too_low` or
        `insufficient_confirmations` (also for a transaction still pending).
        """
        if not isinstance(tx_hash, str) or not _TX_HASH.match(tx_hash):
            raise PaymentInvalid("malformed_payment", "transaction hash is not 32 bytes of hex")
        recipient = to_checksum_address(pay_to or self.network.pay_to)
        try:
            receipt = await self._rpc(lambda: self._w3.eth.get_transaction_receipt(tx_hash))  # type: ignore[arg-type]
        except TransactionNotFound:
            if await self._known(bytes.fromhex(tx_hash[2:])):
                raise PaymentInvalid(
                    "insufficient_confirmations", f"{tx_hash} is not mined yet", confirmations=0
                ) from None
            raise PaymentInvalid(
                "tx_not_found", f"{tx_hash} is not on {self.network.network}"
            ) from None
        if receipt["status"] != 1:
            raise PaymentInvalid("tx_failed", f"{tx_hash} reverted")
        transfers = [
            t for t in map(self._usdc_transfer, receipt["logs"]) if t and t[1] == recipient
        ]
        if not transfers:
            raise PaymentInvalid("no_transfer_to_pay_to", f"{tx_hash} pays no USDC to {recipient}")
        payer, _, amount = max(transfers, key=lambda t: t[2])
        if amount < min_amount:
            raise PaymentInvalid(
                "amount_too_low",
                f"{tx_hash} pays {amount}, at least {min_amount} is required",
                amount_atomic=amount,
                required_atomic=min_amount,
            )
        block = int(receipt["blockNumber"])
        confirmations = await self._confirmations(block)
        if confirmations < self.network.confirmations:
            raise PaymentInvalid(
                "insufficient_confirmations",
                f"{tx_hash} has {confirmations} of {self.network.confirmations} confirmations",
                confirmations=confirmations,
            )
        return TransferProof(
            tx_hash=tx_hash.lower(),
            payer=payer,
            amount=amount,
            block=block,
            mined_at=await self.block_timestamp(block),
        )

    def _uses_authorization(self, log: Any, payment: DecodedPayment) -> bool:
        """Whether `log` is our USDC's `AuthorizationUsed` for `payment`'s payer and nonce."""
        topics = log["topics"]
        return (
            to_checksum_address(log["address"]) == self.network.usdc_address
            and len(topics) == 3
            and bytes(topics[0]) == _AUTHORIZATION_USED_TOPIC
            and to_checksum_address(bytes(topics[1])[-20:]) == payment.from_address
            and bytes(topics[2]) == payment.nonce_bytes
        )

    def _usdc_transfer(self, log: Any) -> tuple[str, str, int] | None:
        """(from, to, value) of a USDC `Transfer` log; None for any other log."""
        topics = log["topics"]
        if (
            to_checksum_address(log["address"]) != self.network.usdc_address
            or len(topics) != 3
            or bytes(topics[0]) != _TRANSFER_TOPIC
        ):
            return None
        sender = to_checksum_address(bytes(topics[1])[-20:])
        recipient = to_checksum_address(bytes(topics[2])[-20:])
        return sender, recipient, int.from_bytes(bytes(log["data"]), "big")


def _transfer_with_authorization_data(payment: DecodedPayment) -> bytes:
    signature = payment.signature
    if len(signature) != 65:
        raise PaymentInvalid("invalid_signature", "signature is not 65 bytes")
    v = signature[64] + 27 if signature[64] < 27 else signature[64]
    return _TRANSFER_WITH_AUTHORIZATION + abi_encode(
        [
            "address",
            "address",
            "uint256",
            "uint256",
            "uint256",
            "bytes32",
            "uint8",
            "bytes32",
            "bytes32",
        ],
        [
            payment.from_address,
            payment.to,
            payment.value,
            payment.valid_after,
            payment.valid_before,
            payment.nonce_bytes,
            v,
            signature[:32],
            signature[32:64],
        ],
    )


def _revert_reason(message: str) -> str:
    lowered = message.lower()
    for needle, reason in _REVERT_REASONS:
        if needle in lowered:
            return reason
    return "transaction_reverted"


def _send_error(exc: Web3RPCError) -> ChainUnavailable | SettlementFailed:
    message = str(exc).lower()
    if "insufficient funds" in message:
        return ChainUnavailable("relayer_out_of_gas", "the relayer cannot pay gas")
    if "revert" in message:
        return SettlementFailed(_revert_reason(message), f"the token refused: {exc}")
    return ChainUnavailable("rpc_error", f"the node refused the transaction: {exc}")
