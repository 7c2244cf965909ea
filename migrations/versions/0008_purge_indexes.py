"""purge indexes: partial indexes over what the purge sweep looks for, so each round reads only
the rows it may still change

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 02:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# (index, table, column, condition) — the same conditions as app/db/models.py.
_INDEXES = [
    ("ix_quotes_unused_expiry", "quotes", "expires_at", "used_at IS NULL"),
    (
        "ix_requests_replay_retention",
        "requests",
        "created_at",
        "billing = 'credits' AND response IS NOT NULL",
    ),
    ("ix_messages_body_retention", "messages", "created_at", "body <> ''"),
    ("ix_messages_dedupe_retention", "messages", "created_at", "phone_message_id IS NOT NULL"),
]


def upgrade() -> None:
    for name, table, column, condition in _INDEXES:
        op.create_index(
            name,
            table,
            [column],
            sqlite_where=sa.text(condition),
            postgresql_where=sa.text(condition),
        )


def downgrade() -> None:
    for name, table, _, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
