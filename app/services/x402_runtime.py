"""The process-wide side of x402: the configured network, the one chain client (it owns the
relayer's nonces), who settles (our relayer or an x402 facilitator), and the project whose
phones deliver paid anonymous messages."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlmodel import col

from app.db.engine import Database
from app.db.models import Organization, Project
from app.domain.errors import Unavailable
from app.logs import get_logger
from app.payments.chain import ChainClient, Settlement, TxHashHook
from app.payments.facilitator import FacilitatorClient
from app.payments.networks import NetworkConfig, network_config
from app.payments.requirements import PaymentRequirement
from app.payments.wire import DecodedPayment
from app.services.ids import new_id, utcnow
from app.settings import Settings

log = get_logger("simwire.x402")


def network_from_settings(settings: Settings) -> NetworkConfig | None:
    """The configured network, or None while x402 is off (no RPC, USDC or pay-to address)."""
    if not settings.payments_enabled:
        return None
    network = settings.chain_network or (
        f"eip155:{settings.chain_id}" if settings.chain_id else None
    )
    if network is None:
        raise ValueError("x402 needs SIMWIRE_CHAIN_ID (or SIMWIRE_CHAIN_NETWORK=eip155:<id>)")
    assert settings.chain_rpc_url and settings.pay_to
    return network_config(
        network,
        rpc_url=settings.chain_rpc_url,
        pay_to=settings.pay_to,
        relayer_key=settings.relayer_key.get_secret_value() if settings.relayer_key else None,
        facilitator_url=settings.facilitator_url,
        confirmations=settings.confirmations,
        usdc_address=settings.usdc_address,
        usdc_name=settings.usdc_name,
        usdc_version=settings.usdc_version,
        v1_name=settings.chain_v1_name,
    )


class PaymentRuntime:
    """The process's one `ChainClient` (it owns the relayer's nonces), and a
    `FacilitatorClient` when `SIMWIRE_FACILITATOR_URL` is set: opened with the app, closed on
    shutdown. `enabled` is False while no chain is configured."""

    def __init__(self, settings: Settings) -> None:
        self.network = network_from_settings(settings)
        self._chain: ChainClient | None = None
        self._facilitator: FacilitatorClient | None = None

    @property
    def enabled(self) -> bool:
        return self.network is not None

    @property
    def uses_facilitator(self) -> bool:
        """Settlements go through the facilitator whenever its URL is set (a relayer key set
        as well is then not used); else through our relayer."""
        return self.network is not None and bool(self.network.facilitator_url)

    def start(self) -> None:
        if self.network is not None and self._chain is None:
            self._chain = ChainClient(self.network)
            if self.uses_facilitator:
                self._facilitator = FacilitatorClient(self._chain)

    async def check_facilitator(self) -> None:
        """With a facilitator configured, checks at start that it supports our network
        (raises `FacilitatorMismatch` otherwise)."""
        self.start()
        if self._facilitator is not None and not await self._facilitator.check_supported():
            log.warning(
                "facilitator_unreachable_at_start",
                url=self._facilitator.url,
                note="payments answer 503 facilitator_unavailable until it can be reached",
            )

    async def settle(
        self,
        payment: DecodedPayment,
        requirement: PaymentRequirement,
        on_signed: TxHashHook | None = None,
    ) -> Settlement:
        """Settle a verified, reserved authorization: the one place that picks the facilitator
        or our relayer. Both raise `SettlementFailed` / `ChainUnavailable`, and both call
        `on_signed(tx_hash)` as soon as the settling transaction's hash is known (before our
        relayer broadcasts it; as soon as the facilitator names it)."""
        chain = self.chain
        if self._facilitator is not None:
            return await self._facilitator.settle(payment, requirement, on_signed)
        return await chain.settle_authorization(payment, on_signed)

    @property
    def chain(self) -> ChainClient:
        if self._chain is None:
            # An app used without its lifespan (tests over ASGI) opens it on first use.
            self.start()
        if self._chain is None:
            raise Unavailable("x402 is not enabled on this server")
        return self._chain

    async def close(self) -> None:
        chain, self._chain = self._chain, None
        facilitator, self._facilitator = self._facilitator, None
        if facilitator is not None:
            await facilitator.close()
        if chain is not None:
            await chain.close()


_project_ids: dict[str, str] = {}
_project_lock = asyncio.Lock()


async def x402_project_id(db: Database, settings: Settings) -> str:
    """The project whose phones deliver paid anonymous messages: `settings.x402_project`, else
    project "x402" of organization "operator", created on first use."""
    if settings.x402_project:
        return settings.x402_project
    cached = _project_ids.get(db.url)
    if cached:
        return cached
    async with _project_lock:
        if db.url in _project_ids:
            return _project_ids[db.url]
        async with db.transaction() as session:
            org = (
                await session.execute(
                    select(Organization)
                    .where(col(Organization.name) == "operator")
                    .order_by(col(Organization.seq))
                    .limit(1)
                )
            ).scalar_one_or_none()
            if org is None:
                org = Organization(id=new_id("org"), name="operator", created_at=utcnow())
                session.add(org)
                await session.flush()
            project = (
                await session.execute(
                    select(Project)
                    .where(col(Project.organization_id) == org.id, col(Project.name) == "x402")
                    .order_by(col(Project.seq))
                    .limit(1)
                )
            ).scalar_one_or_none()
            if project is None:
                project = Project(
                    id=new_id("prj"), organization_id=org.id, name="x402", created_at=utcnow()
                )
                session.add(project)
        _project_ids[db.url] = project.id
        return project.id
