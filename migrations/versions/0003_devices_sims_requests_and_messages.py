"""devices, sims, requests and messages

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 11:56:22.705876
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import app.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("token_prefix", sqlmodel.sql.sqltypes.AutoString(length=24), nullable=False),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("os", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("app_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("battery", sa.Integer(), nullable=True),
        sa.Column("charging", sa.Boolean(), nullable=True),
        sa.Column("signal", sa.Integer(), nullable=True),
        sa.Column("instance_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("connected_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("last_seen_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_id"), ["id"], unique=True)
        batch_op.create_index(batch_op.f("ix_devices_instance_id"), ["instance_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_devices_token_hash"), ["token_hash"], unique=True)

    op.create_table(
        "messages",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("direction", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("to_number", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("from_number", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("body", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("encoding", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("segment_count", sa.Integer(), nullable=False),
        sa.Column("price_atomic", sa.BigInteger(), nullable=False),
        sa.Column("billing", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("refunded", sa.Boolean(), nullable=False),
        sa.Column("tag", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("sim_selector", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("sim_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("phone_message_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_code", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("error_message", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("dispatched_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("accepted_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("sent_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("delivered_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("failed_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("device_time", app.db.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("device_id", "phone_message_id", name="uq_messages_phone_id"),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_device_id"), ["device_id"], unique=False)
        batch_op.create_index("ix_messages_dispatch", ["project_id", "status", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_from_number"), ["from_number"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_id"), ["id"], unique=True)
        batch_op.create_index(batch_op.f("ix_messages_request_id"), ["request_id"], unique=False)
        batch_op.create_index("ix_messages_sim_window", ["sim_id", "dispatched_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_tag"), ["tag"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_to_number"), ["to_number"], unique=False)

    op.create_table(
        "requests",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("billing", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("payer", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("network", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("payment_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("total_atomic", sa.BigInteger(), nullable=False),
        sa.Column("segment_count", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("request_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_requests_id"), ["id"], unique=True)
        batch_op.create_index(batch_op.f("ix_requests_project_id"), ["project_id"], unique=False)

    op.create_table(
        "sims",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("device_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("number", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("carrier", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("iccid", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("live", sa.Boolean(), nullable=False),
        sa.Column("locked", sa.Boolean(), nullable=False),
        sa.Column("last_seen_at", app.db.types.UTCDateTime(), nullable=True),
        sa.Column("created_at", app.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("device_id", "slot", name="uq_sims_device_slot"),
    )
    with op.batch_alter_table("sims", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sims_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sims_id"), ["id"], unique=True)
        batch_op.create_index(batch_op.f("ix_sims_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sims_project_id"))
        batch_op.drop_index(batch_op.f("ix_sims_id"))
        batch_op.drop_index(batch_op.f("ix_sims_device_id"))

    op.drop_table("sims")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_requests_project_id"))
        batch_op.drop_index(batch_op.f("ix_requests_id"))

    op.drop_table("requests")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_to_number"))
        batch_op.drop_index(batch_op.f("ix_messages_tag"))
        batch_op.drop_index("ix_messages_sim_window")
        batch_op.drop_index(batch_op.f("ix_messages_request_id"))
        batch_op.drop_index(batch_op.f("ix_messages_id"))
        batch_op.drop_index(batch_op.f("ix_messages_from_number"))
        batch_op.drop_index("ix_messages_dispatch")
        batch_op.drop_index(batch_op.f("ix_messages_device_id"))

    op.drop_table("messages")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_token_hash"))
        batch_op.drop_index(batch_op.f("ix_devices_project_id"))
        batch_op.drop_index(batch_op.f("ix_devices_instance_id"))
        batch_op.drop_index(batch_op.f("ix_devices_id"))

    op.drop_table("devices")
