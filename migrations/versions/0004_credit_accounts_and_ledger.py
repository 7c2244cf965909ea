"""credit accounts and ledger

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 11:56:34.968570
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_accounts",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("payer", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("network", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("balance_atomic", sa.BigInteger(), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint("balance_atomic >= 0", name="ck_credit_accounts_not_negative"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("payer", "network", name="uq_credit_accounts_payer"),
        sa.UniqueConstraint("project_id", name="uq_credit_accounts_project"),
    )
    with op.batch_alter_table("credit_accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credit_accounts_id"), ["id"], unique=True)

    op.create_table(
        "ledger_entries",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("amount_atomic", sa.BigInteger(), nullable=False),
        sa.Column("balance_after_atomic", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("tx_hash", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["credit_accounts.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("message_id"),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_account_seq", ["account_id", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_entries_id"), ["id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entries_id"))
        batch_op.drop_index("ix_ledger_account_seq")

    op.drop_table("ledger_entries")
    with op.batch_alter_table("credit_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_accounts_id"))

    op.drop_table("credit_accounts")
