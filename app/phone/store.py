"""The phone's durable memory: outbox of send commands, inbox of received SMS, small metadata.

Every write is committed before the method returns (WAL, synchronous=FULL), so a frame that
promises something to the server (`accepted`, a result) is only sent after it is on disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from app.phone.radios import InboundSms

# Outbox states:
# - `held`: stored and `accepted` sent (or due), but the server has not confirmed that this phone
#   holds the message (`accept_ack`). Never handed to the radio; asked about again on reconnect.
# - `accepted`: confirmed by the server, radio not called yet.
# - `sending`: radio call started, outcome not yet stored. A row found in `sending` at start-up is
#   a radio call whose outcome was lost in a crash: it must never be retried.
# - `sent` and `failed` (final): the outcome, reported to the server until it is acknowledged.
# - `reassigned` (final): the server answered `stale_command` (another phone holds the message, or
#   it is finished). Never sent and never reported: there is nothing to report.
HELD = "held"
ACCEPTED = "accepted"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
REASSIGNED = "reassigned"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    to_number TEXT NOT NULL,
    body TEXT NOT NULL,
    slot INTEGER,
    sim TEXT,
    expires_at TEXT,
    state TEXT NOT NULL,
    error TEXT,
    result_acked INTEGER NOT NULL DEFAULT 0,
    delivered INTEGER,
    delivered_at_ms INTEGER,
    delivery_acked INTEGER NOT NULL DEFAULT 0,
    accepted_at_ms INTEGER NOT NULL,
    radio_at_ms INTEGER,
    result_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state);
CREATE TABLE IF NOT EXISTS inbox (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    body TEXT NOT NULL,
    date_ms INTEGER NOT NULL,
    sim_slot INTEGER,
    acked INTEGER NOT NULL DEFAULT 0,
    stored_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
"""


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    """One `send_sms` command as the phone stored it, with what became of it."""

    id: str
    to: str
    body: str
    slot: int | None
    sim: str | None
    expires_at: str | None
    state: str
    error: str | None
    result_acked: bool
    delivered: bool | None
    delivered_at_ms: int | None
    delivery_acked: bool

    @property
    def has_result(self) -> bool:
        return self.state in (SENT, FAILED)


_OUTBOX_COLUMNS = (
    "id, to_number, body, slot, sim, expires_at, state, error, result_acked, delivered,"
    " delivered_at_ms, delivery_acked"
)


def _outbound(row: aiosqlite.Row | tuple) -> OutboundRecord:
    return OutboundRecord(
        id=row[0],
        to=row[1],
        body=row[2],
        slot=row[3],
        sim=row[4],
        expires_at=row[5],
        state=row[6],
        error=row[7],
        result_acked=bool(row[8]),
        delivered=None if row[9] is None else bool(row[9]),
        delivered_at_ms=row[10],
        delivery_acked=bool(row[11]),
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


class PhoneStore:
    """Async access to the phone's SQLite file. Open with `await PhoneStore.open(path)`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: str | Path) -> PhoneStore:
        path = Path(path).expanduser()
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.executescript(_SCHEMA)
        return cls(db)

    async def close(self) -> None:
        await self._db.close()

    # --- outbox ---------------------------------------------------------------------------

    async def add_outbound(
        self,
        *,
        id: str,
        to: str,
        body: str,
        slot: int | None,
        sim: str | None,
        expires_at: str | None,
        state: str = HELD,
        error: str | None = None,
    ) -> bool:
        """Store a new command (`held` unless told otherwise); False (and nothing changed) when
        the id is already known."""
        now = _now_ms()
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO outbox (id, to_number, body, slot, sim, expires_at, state,"
            " error, accepted_at_ms, result_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                id,
                to,
                body,
                slot,
                sim,
                expires_at,
                state,
                error,
                now,
                now if state in (SENT, FAILED) else None,
            ),
        )
        return cursor.rowcount == 1

    async def get_outbound(self, id: str) -> OutboundRecord | None:
        async with self._db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE id = ?", (id,)
        ) as cursor:
            row = await cursor.fetchone()
        return _outbound(row) if row else None

    async def confirm(self, id: str) -> bool:
        """Move `held` → `accepted` on the server's `accept_ack`; False if it was not held."""
        cursor = await self._db.execute(
            "UPDATE outbox SET state = ? WHERE id = ? AND state = ?", (ACCEPTED, id, HELD)
        )
        return cursor.rowcount == 1

    async def mark_reassigned(self, id: str) -> bool:
        """Move `held` → `reassigned` on `stale_command`; False if it was not held (a confirmed
        command is never taken back)."""
        cursor = await self._db.execute(
            "UPDATE outbox SET state = ?, result_at_ms = ? WHERE id = ? AND state = ?",
            (REASSIGNED, _now_ms(), id, HELD),
        )
        return cursor.rowcount == 1

    async def reoffer(
        self, id: str, *, slot: int | None, sim: str | None, expires_at: str | None
    ) -> bool:
        """A new `send_sms` for a command never handed to the radio (`held` or `reassigned`):
        take the newer offer's SIM and expiry and hold it again. False for any other state."""
        cursor = await self._db.execute(
            "UPDATE outbox SET state = ?, slot = ?, sim = ?, expires_at = ?, result_at_ms = NULL"
            " WHERE id = ? AND state IN (?, ?)",
            (HELD, slot, sim, expires_at, id, HELD, REASSIGNED),
        )
        return cursor.rowcount == 1

    async def mark_sending(self, id: str) -> bool:
        """Move `accepted` → `sending` just before the radio call; False if it was not accepted."""
        cursor = await self._db.execute(
            "UPDATE outbox SET state = ?, radio_at_ms = ? WHERE id = ? AND state = ?",
            (SENDING, _now_ms(), id, ACCEPTED),
        )
        return cursor.rowcount == 1

    async def record_result(self, id: str, *, success: bool, error: str | None = None) -> None:
        """Store the final outcome of a command (only once: a final state is never overwritten)."""
        await self._db.execute(
            "UPDATE outbox SET state = ?, error = ?, result_at_ms = ?"
            " WHERE id = ? AND state IN (?, ?)",
            (
                SENT if success else FAILED,
                None if success else error,
                _now_ms(),
                id,
                ACCEPTED,
                SENDING,
            ),
        )

    async def record_delivery(self, id: str, *, delivered: bool, at_ms: int) -> bool:
        """Store a delivery report; False when the id is unknown or already has one."""
        cursor = await self._db.execute(
            "UPDATE outbox SET delivered = ?, delivered_at_ms = ?"
            " WHERE id = ? AND delivered IS NULL",
            (int(delivered), at_ms, id),
        )
        return cursor.rowcount == 1

    async def ack_result(self, id: str) -> None:
        await self._db.execute(
            "UPDATE outbox SET result_acked = 1 WHERE id = ? AND state IN (?, ?)",
            (id, SENT, FAILED),
        )

    async def ack_delivery(self, id: str) -> None:
        await self._db.execute(
            "UPDATE outbox SET delivery_acked = 1 WHERE id = ? AND delivered IS NOT NULL", (id,)
        )

    async def fail_interrupted(self, error: str = "unknown_after_restart") -> list[str]:
        """Fail every command whose radio call started but whose outcome was never stored."""
        async with self._db.execute("SELECT id FROM outbox WHERE state = ?", (SENDING,)) as cursor:
            ids = [row[0] for row in await cursor.fetchall()]
        if ids:
            await self._db.execute(
                "UPDATE outbox SET state = ?, error = ?, result_at_ms = ? WHERE state = ?",
                (FAILED, error, _now_ms(), SENDING),
            )
        return ids

    async def outbound_in_state(self, *states: str) -> list[OutboundRecord]:
        marks = ", ".join("?" for _ in states)
        async with self._db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE state IN ({marks})"
            " ORDER BY accepted_at_ms",
            states,
        ) as cursor:
            return [_outbound(row) for row in await cursor.fetchall()]

    async def unacked_results(self) -> list[OutboundRecord]:
        async with self._db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE state IN (?, ?) AND result_acked = 0"
            " ORDER BY result_at_ms",
            (SENT, FAILED),
        ) as cursor:
            return [_outbound(row) for row in await cursor.fetchall()]

    async def unacked_deliveries(self) -> list[OutboundRecord]:
        async with self._db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE delivered IS NOT NULL"
            " AND delivery_acked = 0 ORDER BY delivered_at_ms",
        ) as cursor:
            return [_outbound(row) for row in await cursor.fetchall()]

    async def prune(self, *, older_than_ms: int) -> int:
        """Forget finished, fully acknowledged commands, commands that were never confirmed
        (`held`, `reassigned`: never sent, nothing to report) and inbound SMS older than the
        cut-off."""
        cursor = await self._db.execute(
            "DELETE FROM outbox WHERE (state IN (?, ?) AND result_acked = 1"
            " AND (delivered IS NULL OR delivery_acked = 1) OR state IN (?, ?))"
            " AND accepted_at_ms < ?",
            (SENT, FAILED, HELD, REASSIGNED, older_than_ms),
        )
        removed = cursor.rowcount
        cursor = await self._db.execute(
            "DELETE FROM inbox WHERE acked = 1 AND stored_at_ms < ?", (older_than_ms,)
        )
        return removed + cursor.rowcount

    # --- inbox ----------------------------------------------------------------------------

    async def add_inbound(self, sms: InboundSms) -> bool:
        """Store a received SMS; False when its id was already stored."""
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO inbox (id, address, body, date_ms, sim_slot, stored_at_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (sms.id, sms.address, sms.body, sms.date_ms, sms.sim_slot, _now_ms()),
        )
        return cursor.rowcount == 1

    async def ack_inbound(self, id: str) -> None:
        await self._db.execute("UPDATE inbox SET acked = 1 WHERE id = ?", (id,))

    async def is_inbound_acked(self, id: str) -> bool:
        async with self._db.execute("SELECT acked FROM inbox WHERE id = ?", (id,)) as cursor:
            row = await cursor.fetchone()
        return bool(row and row[0])

    async def unacked_inbound(self) -> list[InboundSms]:
        async with self._db.execute(
            "SELECT id, address, body, date_ms, sim_slot FROM inbox WHERE acked = 0"
            " ORDER BY stored_at_ms, date_ms"
        ) as cursor:
            return [InboundSms(*row) for row in await cursor.fetchall()]

    # --- refusals -------------------------------------------------------------------------

    async def note_refusal(self, kind: str, id: str) -> int:
        """Count one more refusal by the server of the item `id` (`inbound`, `send_result`,
        `delivery_report`); returns how many there have been, across restarts."""
        async with self._db.execute(
            "INSERT INTO refusals (kind, id, count) VALUES (?, ?, 1)"
            " ON CONFLICT (kind, id) DO UPDATE SET count = count + 1 RETURNING count",
            (kind, id),
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 1

    async def drop_refused(self, kind: str, id: str) -> None:
        """Give up on an item the server keeps refusing: mark it acknowledged, so it is never
        offered again and nothing queued behind it waits for it."""
        if kind == "inbound":
            await self.ack_inbound(id)
        elif kind == "send_result":
            await self.ack_result(id)
        elif kind == "delivery_report":
            await self.ack_delivery(id)
        await self._db.execute("DELETE FROM refusals WHERE kind = ? AND id = ?", (kind, id))

    # --- meta (radio cursors) -------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        async with self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
