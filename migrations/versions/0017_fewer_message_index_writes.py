"""fewer index writes per message: `ix_messages_device_id` is dropped (`uq_messages_phone_id`
leads with `device_id` and serves every lookup by it), and the columns an outbound message
leaves empty are indexed only where set (`sim_id`, `from_number`, `tag`, `in_reply_to`). An
outbound message without a tag now writes 8 index entries instead of 13.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 21:55:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# (index, its columns, the column that must be set)
_WHERE_SET = (
    ("ix_messages_sim_window", ["sim_id", "dispatched_at"], "sim_id"),
    ("ix_messages_from_number", ["from_number"], "from_number"),
    ("ix_messages_tag", ["tag"], "tag"),
    ("ix_messages_in_reply_to", ["in_reply_to"], "in_reply_to"),
)
_COVERED = (("ix_messages_device_id", ["device_id"]),)


def upgrade() -> None:
    for name, _ in _COVERED:
        op.drop_index(name, table_name="messages")
    for name, columns, column in _WHERE_SET:
        condition = sa.text(f"{column} IS NOT NULL")
        op.drop_index(name, table_name="messages")
        op.create_index(
            name, "messages", columns, sqlite_where=condition, postgresql_where=condition
        )


def downgrade() -> None:
    for name, columns, _ in _WHERE_SET:
        op.drop_index(name, table_name="messages")
        op.create_index(name, "messages", columns)
    for name, columns in _COVERED:
        op.create_index(name, "messages", columns)
