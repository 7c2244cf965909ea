"""Payments: reserving an authorization, recording its settlement, leases for the sweep."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.models import Payment


class PaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, payment_id: str) -> Payment | None:
        result = await self.session.execute(select(Payment).where(col(Payment.id) == payment_id))
        return result.scalar_one_or_none()

    async def find_authorization(self, network: str, payer: str, nonce: str) -> Payment | None:
        result = await self.session.execute(
            select(Payment).where(
                col(Payment.network) == network,
                col(Payment.payer) == payer,
                col(Payment.nonce) == nonce,
            )
        )
        return result.scalar_one_or_none()

    async def find_identifier(self, network: str, payer: str, identifier: str) -> Payment | None:
        """The payer's payment that carried this x402 payment identifier."""
        result = await self.session.execute(
            select(Payment).where(
                col(Payment.network) == network,
                col(Payment.payer) == payer,
                col(Payment.payment_identifier) == identifier,
            )
        )
        return result.scalar_one_or_none()

    async def tx_recorded(self, network: str, tx_hash: str) -> bool:
        result = await self.session.execute(
            select(col(Payment.id)).where(
                col(Payment.network) == network, col(Payment.tx_hash) == tx_hash
            )
        )
        return result.first() is not None

    def add(self, payment: Payment) -> None:
        self.session.add(payment)

    async def set_fields(self, payment_id: str, **values: Any) -> None:
        await self.session.execute(
            update(Payment).where(col(Payment.id) == payment_id).values(**values)
        )

    async def claim_settled(
        self, payment_id: str, unresolved: Sequence[str], tx_hash: str, now: datetime
    ) -> bool:
        """Marks an unresolved payment `settled`; False when it was resolved already (by
        another request or instance), which then must not fulfil it again."""
        result = await self.session.execute(
            update(Payment)
            .where(col(Payment.id) == payment_id, col(Payment.status).in_(unresolved))
            .values(status="settled", tx_hash=tx_hash, settled_at=now, lease_until=None)
            .returning(col(Payment.id))
        )
        return result.scalar_one_or_none() is not None

    async def delete_unresolved(self, payment_id: str, unresolved: Sequence[str]) -> bool:
        result = await self.session.execute(
            delete(Payment)
            .where(col(Payment.id) == payment_id, col(Payment.status).in_(unresolved))
            .returning(col(Payment.id))
        )
        return result.scalar_one_or_none() is not None

    async def take_lease(self, payment_id: str, now: datetime, until: datetime) -> bool:
        """Claims the payment for one worker until `until`, unless another holds it."""
        result = await self.session.execute(
            update(Payment)
            .where(
                col(Payment.id) == payment_id,
                col(Payment.status) != "settled",
                or_(col(Payment.lease_until).is_(None), col(Payment.lease_until) <= now),
            )
            .values(lease_until=until)
            .returning(col(Payment.id))
        )
        return result.scalar_one_or_none() is not None

    async def unresolved_due(
        self, unresolved: Sequence[str], now: datetime, limit: int
    ) -> list[str]:
        """Ids of unresolved authorization payments no worker holds, oldest first (a row
        without its signed header predates crash recovery and is left to the operator)."""
        result = await self.session.execute(
            select(col(Payment.id))
            .where(
                col(Payment.status).in_(unresolved),
                col(Payment.header).is_not(None),
                or_(col(Payment.lease_until).is_(None), col(Payment.lease_until) <= now),
            )
            .order_by(col(Payment.seq))
            .limit(limit)
        )
        return list(result.scalars())
