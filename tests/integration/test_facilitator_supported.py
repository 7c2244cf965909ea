"""With SIMWIRE_FACILITATOR_URL set, the server asks the facilitator's `GET /supported` at
start: one that does not settle x402 v2 `exact` on our network stops the start with an error
naming what it offers instead; one that does lets it start."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar, get
from pydantic import SecretStr

from app.payments.facilitator import FacilitatorMismatch
from app.services.x402_runtime import PaymentRuntime
from tests.support.live import live_server, serve_app

NETWORK = "eip155:31337"


def _facilitator(kinds: list[dict[str, Any]]) -> Litestar:
    @get("/supported")
    async def supported() -> dict[str, Any]:
        return {"kinds": kinds, "extensions": [], "signers": {}}

    return Litestar([supported])


def _paid(settings, url: str):
    return settings.model_copy(
        update={
            "chain_rpc_url": "http://127.0.0.1:9",  # never reached: the check comes first
            "chain_id": 31337,
            "usdc_address": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
            "pay_to": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "relayer_key": SecretStr(""),
            "facilitator_url": url,
        }
    )


async def test_a_facilitator_for_another_network_is_a_start_up_error(settings) -> None:
    # The app's lifespan runs this check before serving (app/api/app.py): uvicorn then stops
    # with "Application startup failed" after this error.
    other = _facilitator([{"x402Version": 2, "scheme": "exact", "network": "eip155:8453"}])
    async with serve_app(other) as url:
        runtime = PaymentRuntime(_paid(settings, url))
        try:
            with pytest.raises(FacilitatorMismatch) as raised:
                await runtime.check_facilitator()
        finally:
            await runtime.close()
    assert NETWORK in str(raised.value) and "v2 exact on eip155:8453" in str(raised.value)


async def test_a_facilitator_for_our_network_lets_the_server_start(settings, db) -> None:
    ours = _facilitator([{"x402Version": 2, "scheme": "exact", "network": NETWORK}])
    async with serve_app(ours) as url, live_server(_paid(settings, url), db) as server:
        assert server.url.startswith("http://127.0.0.1:")


async def test_a_facilitator_unreachable_at_start_lets_the_server_start(settings, db) -> None:
    """A facilitator down for a moment is not a mismatch: payments answer 503 until it is back
    (tests/integration/test_x402_facilitator.py holds that answer)."""
    from tests.support.live import loopback_socket

    with loopback_socket() as unused:
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"  # bound, never listening
        async with live_server(_paid(settings, url), db) as server:
            assert server.url.startswith("http://127.0.0.1:")
