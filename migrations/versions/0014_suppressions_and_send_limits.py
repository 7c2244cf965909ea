"""recipient consent and send limits: the suppression list of each project, per-number limits
and high-cost destinations in project policies, and the indexes that count a number's and a
wallet's recent sends

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 05:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db.types

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("number", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("project_id", "number", name="uq_suppressions_project_number"),
    )
    with op.batch_alter_table("project_policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient_per_hour", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("recipient_per_day", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "allow_high_cost_destinations",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
            )
        )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_to_created", ["to_number", "created_at"], unique=False)
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.create_index("ix_requests_payer_created", ["payer", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index("ix_requests_payer_created")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_to_created")
    with op.batch_alter_table("project_policies", schema=None) as batch_op:
        batch_op.drop_column("allow_high_cost_destinations")
        batch_op.drop_column("recipient_per_day")
        batch_op.drop_column("recipient_per_hour")
    op.drop_table("suppressions")
