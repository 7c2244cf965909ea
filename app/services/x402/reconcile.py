"""The reconciliation sweep: every instance, at start and then periodically, resolves the
payments a crash or a slow chain left reserved — settled on chain → recorded and fulfilled,
unused past their validity → released — each under a lease, so one worker at a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

from app.db.repositories.payments import PaymentRepository
from app.domain.errors import SimwireError
from app.logs import get_logger
from app.services.ids import utcnow
from app.services.x402.common import UNRESOLVED
from app.services.x402.settlement import Settlements

log = get_logger("simwire.x402")

_BATCH = 50


async def reconcile_payments(settlements: Settlements) -> Counter[str]:
    """One pass over the unresolved payments no worker holds; counts what became of them."""
    async with settlements.db.sessions() as session:
        due = await PaymentRepository(session).unresolved_due(UNRESOLVED, utcnow(), _BATCH)
    counts: Counter[str] = Counter()
    for payment_id in due:
        try:
            counts[await settlements.reconcile(payment_id)] += 1
        except SimwireError as exc:  # the chain is down or cannot tell yet: a later pass
            counts["error"] += 1
            log.warning("x402_reconcile_failed", payment_id=payment_id, error=exc.code)
    if counts:
        log.info("x402_reconciled", **counts)
    return counts


async def run_reconciliation(settlements: Settlements, interval_s: float) -> None:
    """Runs `reconcile_payments` now and every `interval_s` until cancelled."""
    while True:
        try:
            await reconcile_payments(settlements)
        except Exception as exc:  # the database is away: log it and look again next time
            log.error("x402_reconcile_error", error_type=type(exc).__name__, exc_info=exc)
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def reconciliation_running(
    settlements: Settlements | None, interval_s: float
) -> AsyncIterator[None]:
    """Keeps `run_reconciliation` going in the background while the body runs (nothing when
    x402 is off: `settlements` is None)."""
    if settlements is None:
        yield
        return
    task = asyncio.create_task(run_reconciliation(settlements, interval_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
