"""pending agent claims an organization knows of: which of its owners or admins opened an
agent's claim link, so its agents pages list the registration until it is claimed or expires

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 19:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db.types

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_claim_openings",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("registration_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("organization_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("opened_by", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("opened_at", app.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["registration_id"], ["agent_registrations.id"]),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.ForeignKeyConstraint(["opened_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint(
            "registration_id", "organization_id", name="uq_agent_claim_openings_registration_org"
        ),
    )
    with op.batch_alter_table("agent_claim_openings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agent_claim_openings_organization_id"),
            ["organization_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("agent_claim_openings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_claim_openings_organization_id"))
    op.drop_table("agent_claim_openings")
