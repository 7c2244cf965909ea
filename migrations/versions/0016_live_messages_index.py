"""a partial index of the messages the hub's sweep watches (queued, sending, accepted), so its
rounds every second read those few rows instead of the whole messages table

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 08:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# As app/db/models.py LIVE_MESSAGE: SQLite uses the index only for this condition verbatim.
_LIVE = "status IN ('queued', 'sending', 'accepted')"


def upgrade() -> None:
    op.create_index(
        "ix_messages_live_status",
        "messages",
        ["status"],
        sqlite_where=sa.text(_LIVE),
        postgresql_where=sa.text(_LIVE),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_live_status", table_name="messages")
