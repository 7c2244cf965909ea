"""payment identifiers and sign-in nonces: a paid retry naming its x402 payment identifier gets
the first outcome; each Sign-In-With-X nonce signs a wallet in once

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 04:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "payment_identifier", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True
            )
        )
        batch_op.create_unique_constraint(
            "uq_payments_identifier", ["network", "payer", "payment_identifier"]
        )

    op.create_table(
        "sign_in_nonces",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("nonce", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("used_at", app.db.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", app.db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("sign_in_nonces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sign_in_nonces_nonce"), ["nonce"], unique=True)
        batch_op.create_index(
            batch_op.f("ix_sign_in_nonces_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("sign_in_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sign_in_nonces_expires_at"))
        batch_op.drop_index(batch_op.f("ix_sign_in_nonces_nonce"))
    op.drop_table("sign_in_nonces")

    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_constraint("uq_payments_identifier", type_="unique")
        batch_op.drop_column("payment_identifier")
