"""quotes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 11:56:04.175806
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quotes",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("body_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("encoding", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("segment_count", sa.Integer(), nullable=False),
        sa.Column("per_segment_rate_atomic", sa.BigInteger(), nullable=False),
        sa.Column("fees_atomic", sa.BigInteger(), nullable=False),
        sa.Column("total_atomic", sa.BigInteger(), nullable=False),
        sa.Column("purpose", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("asset", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("network", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("pay_to", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("used_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", app.db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("quotes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quotes_id"), ["id"], unique=True)
        batch_op.create_index(batch_op.f("ix_quotes_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("quotes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quotes_project_id"))
        batch_op.drop_index(batch_op.f("ix_quotes_id"))

    op.drop_table("quotes")
