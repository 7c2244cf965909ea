"""owner accounts (users, memberships, invites, sessions with their refresh tokens, failed
logins) and agent self-registrations awaiting or past their human claim

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 04:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db.types

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_registrations",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("description", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.Column("agent_metadata", sa.JSON(), nullable=True),
        sa.Column("callback_url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column(
            "callback_webhook_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True
        ),
        sa.Column("callback_secret_sealed", sa.Text(), nullable=True),
        sa.Column("key_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("display_prefix", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("claim_token", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("claim_url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column("code_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("wrong_codes", sa.Integer(), nullable=False),
        sa.Column("registered_from", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", app.db.types.UTCDateTime(), nullable=False),
        sa.Column("claimed_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("organization_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("key_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("agent_registrations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agent_registrations_claim_token"), ["claim_token"], unique=True
        )
        batch_op.create_index(
            batch_op.f("ix_agent_registrations_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            "ix_agent_registrations_from_at", ["registered_from", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_agent_registrations_id"), ["id"], unique=True)
        batch_op.create_index(
            batch_op.f("ix_agent_registrations_key_hash"), ["key_hash"], unique=True
        )
        batch_op.create_index(
            batch_op.f("ix_agent_registrations_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "invites",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("code_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("organization_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", app.db.types.UTCDateTime(), nullable=False),
        sa.Column("used_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("used_by", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("invites", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invites_code_hash"), ["code_hash"], unique=True)
        batch_op.create_index(batch_op.f("ix_invites_id"), ["id"], unique=True)

    op.create_table(
        "login_failures",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_failures_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            "ix_login_failures_subject_at", ["subject", "created_at"], unique=False
        )

    op.create_table(
        "users",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_users_email"), ["email"], unique=True)
        batch_op.create_index(batch_op.f("ix_users_id"), ["id"], unique=True)

    op.create_table(
        "memberships",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("organization_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("user_id", "organization_id", name="uq_memberships_user_org"),
    )
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_memberships_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_memberships_user_id"), ["user_id"], unique=False)

    op.create_table(
        "user_sessions",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("user_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", app.db.types.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", app.db.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_sessions_id"), ["id"], unique=True)
        batch_op.create_index(batch_op.f("ix_user_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "refresh_tokens",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("session_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.Column("used_at", app.db.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["user_sessions.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_session_id"), ["session_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_refresh_tokens_token_hash"), ["token_hash"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_token_hash"))
        batch_op.drop_index(batch_op.f("ix_refresh_tokens_session_id"))

    op.drop_table("refresh_tokens")
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_sessions_user_id"))
        batch_op.drop_index(batch_op.f("ix_user_sessions_id"))

    op.drop_table("user_sessions")
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_memberships_user_id"))
        batch_op.drop_index(batch_op.f("ix_memberships_organization_id"))

    op.drop_table("memberships")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_id"))
        batch_op.drop_index(batch_op.f("ix_users_email"))

    op.drop_table("users")
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_login_failures_subject_at")
        batch_op.drop_index(batch_op.f("ix_login_failures_created_at"))

    op.drop_table("login_failures")
    with op.batch_alter_table("invites", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invites_id"))
        batch_op.drop_index(batch_op.f("ix_invites_code_hash"))

    op.drop_table("invites")
    with op.batch_alter_table("agent_registrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_registrations_project_id"))
        batch_op.drop_index(batch_op.f("ix_agent_registrations_key_hash"))
        batch_op.drop_index(batch_op.f("ix_agent_registrations_id"))
        batch_op.drop_index("ix_agent_registrations_from_at")
        batch_op.drop_index(batch_op.f("ix_agent_registrations_expires_at"))
        batch_op.drop_index(batch_op.f("ix_agent_registrations_claim_token"))

    op.drop_table("agent_registrations")
