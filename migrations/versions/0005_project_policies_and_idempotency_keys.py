"""project policies and idempotency keys

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 12:04:39.911496
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "project_policies",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("default_region", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("allowed_categories", sa.JSON(), nullable=False),
        sa.Column("blocked_terms", sa.JSON(), nullable=False),
        sa.Column("allowed_domains", sa.JSON(), nullable=False),
        sa.Column("updated_at", app.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("project_policies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_project_policies_project_id"), ["project_id"], unique=True
        )

    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            "uq_requests_idempotency", ["project_id", "idempotency_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_constraint("uq_requests_idempotency", type_="unique")

    with op.batch_alter_table("project_policies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_project_policies_project_id"))

    op.drop_table("project_policies")
