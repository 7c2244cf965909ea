"""payment recovery: what a reserved payment needs to be finished or released after a crash

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("header", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("header_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("valid_before", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("from_block", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True)
        )
        batch_op.add_column(sa.Column("order", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("response", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("lease_until", app.db.types.UTCDateTime(), nullable=True))
        batch_op.create_index("ix_payments_status", ["status"], unique=False)

    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.alter_column(
            "idempotency_key",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=200),
            type_=sqlmodel.sql.sqltypes.AutoString(length=255),
            existing_nullable=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.alter_column(
            "idempotency_key",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=255),
            type_=sqlmodel.sql.sqltypes.AutoString(length=200),
            existing_nullable=True,
        )

    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_status")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("response")
        batch_op.drop_column("order")
        batch_op.drop_column("request_id")
        batch_op.drop_column("from_block")
        batch_op.drop_column("valid_before")
        batch_op.drop_column("header_version")
        batch_op.drop_column("header")
