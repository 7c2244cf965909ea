"""Settling through a standard x402 facilitator instead of our own relayer.

`POST {SIMWIRE_FACILITATOR_URL}/settle` with `{x402Version, paymentPayload,
paymentRequirements}` answers `{success, transaction, network, payer, errorReason?}` (the
`x402` package's `SettleResponse`). The facilitator submits the EIP-3009 transfer and pays
its gas; we still verify locally and reserve the authorization before asking it, and after it
reports success we confirm the transaction through our own node before anything is recorded.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from pydantic import ValidationError
from x402.schemas import PaymentPayload, PaymentRequirements, SettleResponse, SupportedResponse
from x402.schemas.v1 import PaymentPayloadV1, PaymentRequirementsV1

from app.payments.chain import ChainClient, Settlement, TxHashHook
from app.payments.errors import ChainUnavailable, SettlementFailed
from app.payments.requirements import PaymentRequirement
from app.payments.wire import SCHEME_EXACT, DecodedPayment

_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_REASON = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
# Failure reasons that do not say the money stayed where it was.
_PENDING_REASONS = {"settlement_pending"}


class FacilitatorMismatch(RuntimeError):
    """The configured facilitator cannot settle on our network: a start-up error."""


class FacilitatorClient:
    """Settles authorizations on `chain.network` through the facilitator at its
    `facilitator_url`; `chain` (our node) confirms what the facilitator reports.

    `settle` raises the same errors as `ChainClient.settle_authorization`:
    `SettlementFailed(errorReason)` when the facilitator refuses (nothing moved),
    `ChainUnavailable("facilitator_unavailable")` when it cannot be reached or gives no usable
    answer while the authorization is still unused on chain, `ChainUnavailable(
    "settlement_unknown")` when it gives no usable answer but the authorization is used (or
    says the settlement is pending), and `ChainUnavailable("receipt_timeout", tx_hash=...)`
    when our node does not confirm its transaction in time.
    """

    def __init__(
        self,
        chain: ChainClient,
        *,
        url: str | None = None,
        request_timeout_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = url or chain.network.facilitator_url
        if not url:
            raise ValueError(f"{chain.network.network} has no facilitator URL")
        self.url = url.rstrip("/")
        self.chain = chain
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(request_timeout_s, connect=5.0), transport=transport
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def check_supported(self) -> bool:
        """Asks the facilitator's `GET /supported` whether it settles `exact` payments on our
        network (x402 v2). Raises `FacilitatorMismatch` when it answers without our network
        (naming what it offers instead) or answers something that is not a `/supported`
        list: a server that cannot settle through it must not start. False when it cannot be
        reached now (each payment then answers 503 `facilitator_unavailable` until it can)."""
        network = self.chain.network.network
        try:
            response = await self._http.get(f"{self.url}/supported", timeout=10.0)
        except httpx.HTTPError:
            return False
        try:
            response.raise_for_status()
            supported = SupportedResponse.model_validate(response.json())
        except (httpx.HTTPError, ValueError, ValidationError) as exc:
            raise FacilitatorMismatch(
                f"SIMWIRE_FACILITATOR_URL={self.url}: GET /supported did not answer the list "
                f"of what it settles ({exc!r}); a standard x402 facilitator must"
            ) from exc
        kinds = [(k.x402_version, k.scheme, k.network) for k in supported.kinds]
        if not any(v == 2 and s == SCHEME_EXACT and n == network for v, s, n in kinds):
            offered = ", ".join(f"v{v} {s} on {n}" for v, s, n in kinds) or "nothing"
            raise FacilitatorMismatch(
                f"SIMWIRE_FACILITATOR_URL={self.url} does not settle x402 v2 `exact` payments "
                f"on {network} (it supports: {offered}); point it at a facilitator for "
                f"{network} or change SIMWIRE_CHAIN_ID"
            )
        return True

    async def settle(
        self,
        payment: DecodedPayment,
        requirement: PaymentRequirement,
        on_signed: TxHashHook | None = None,
    ) -> Settlement:
        """Ask the facilitator to settle `payment` (already verified against `requirement`),
        then wait for our node to confirm its transaction (`on_signed(tx_hash)` first)."""
        body = settle_request(payment, requirement)
        try:
            response = await self._http.post(f"{self.url}/settle", json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # The request never reached it: nothing can have moved.
            raise ChainUnavailable(
                "facilitator_unavailable", f"the facilitator cannot be reached: {exc!r}"
            ) from exc
        except httpx.HTTPError as exc:
            raise await self._no_answer(
                payment, f"no answer from the facilitator: {exc!r}"
            ) from exc
        result = _settle_response(response)
        if result is None:
            if response.status_code < 500:
                # It refused the request itself (auth, shape): it settled nothing.
                raise ChainUnavailable(
                    "facilitator_unavailable",
                    f"the facilitator refused the request ({response.status_code})",
                )
            raise await self._no_answer(payment, f"the facilitator failed ({response.status_code})")
        transaction = result.transaction if _TX_HASH.match(result.transaction or "") else None
        if not result.success:
            reason = result.error_reason or ""
            if reason in _PENDING_REASONS or (
                transaction and await self._used(payment, assume_used=False)
            ):
                raise ChainUnavailable(
                    "settlement_unknown",
                    f"the facilitator says {reason or 'failure'} but may have moved the money",
                    tx_hash=transaction,
                )
            reason = reason if _REASON.match(reason) else "facilitator_refused"
            raise SettlementFailed(
                reason, result.error_message or f"the facilitator refused the payment: {reason}"
            )
        if transaction is None:
            raise ChainUnavailable(
                "settlement_unknown",
                f"the facilitator reports success without a transaction hash "
                f"({result.transaction!r})",
            )
        if on_signed is not None:
            await on_signed(transaction)
        return await self.chain.confirm_settlement(transaction, payment)

    async def _no_answer(self, payment: DecodedPayment, message: str) -> ChainUnavailable:
        """The request may have reached the facilitator: ask the chain whether it moved."""
        if await self._used(payment, assume_used=True):
            return ChainUnavailable(
                "settlement_unknown", f"{message}; the authorization is used on chain"
            )
        return ChainUnavailable("facilitator_unavailable", message)

    async def _used(self, payment: DecodedPayment, *, assume_used: bool) -> bool:
        try:
            return await self.chain.authorization_used(payment.from_address, payment.nonce)
        except ChainUnavailable:
            return assume_used


def settle_request(payment: DecodedPayment, requirement: PaymentRequirement) -> dict[str, Any]:
    """The `/settle` body: `{x402Version, paymentPayload, paymentRequirements}`, built with
    the `x402` package's types as its `HTTPFacilitatorClient` sends them."""
    network = requirement.network
    inner = {
        "signature": "0x" + payment.signature.hex(),
        "authorization": {
            "from": payment.from_address,
            "to": payment.to,
            "value": str(payment.value),
            "validAfter": str(payment.valid_after),
            "validBefore": str(payment.valid_before),
            "nonce": payment.nonce,
        },
    }
    extra = dict(payment.accepted.extra or {}) if payment.accepted is not None else {}
    extra |= {"name": network.usdc_name, "version": network.usdc_version}
    payload: PaymentPayload | PaymentPayloadV1
    requirements: PaymentRequirements | PaymentRequirementsV1
    if payment.x402_version >= 2:
        requirements = PaymentRequirements(
            scheme=SCHEME_EXACT,
            network=network.network,
            asset=network.usdc_address,
            amount=str(requirement.amount_atomic),
            pay_to=network.pay_to,
            max_timeout_seconds=requirement.max_timeout_s,
            extra=extra,
        )
        payload = PaymentPayload(
            x402_version=2, payload=inner, accepted=payment.accepted or requirements
        )
    else:
        requirements = PaymentRequirementsV1(
            scheme=SCHEME_EXACT,
            network=payment.network,
            max_amount_required=str(requirement.amount_atomic),
            resource="",
            pay_to=network.pay_to,
            max_timeout_seconds=requirement.max_timeout_s,
            asset=network.usdc_address,
            extra=extra,
        )
        payload = PaymentPayloadV1(scheme=payment.scheme, network=payment.network, payload=inner)
    return {
        "x402Version": payment.x402_version,
        "paymentPayload": payload.model_dump(mode="json", by_alias=True, exclude_none=True),
        "paymentRequirements": requirements.model_dump(
            mode="json", by_alias=True, exclude_none=True
        ),
    }


def _settle_response(response: httpx.Response) -> SettleResponse | None:
    """The facilitator's `SettleResponse`, whatever the status (some answer a refusal with 400
    and the same body); None when the body is not one."""
    try:
        return SettleResponse.model_validate(response.json())
    except (ValueError, ValidationError):
        return None
