"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "order_locks",
        sa.Column("order_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("refund_id", sa.String(length=36), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("order_id"),
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=False),
        sa.Column("request_json", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=True),
        sa.Column("store_code", sa.String(length=32), nullable=True),
        sa.Column("service_requested", sa.String(length=16), nullable=False),
        sa.Column("service", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("creditmemo_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_kind", sa.String(length=16), nullable=True),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("in_doubt", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.String(length=36), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_call_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notify_customer", sa.Boolean(), nullable=False),
        sa.Column("notification_status", sa.String(length=16), nullable=False),
        sa.Column("notification_attempts", sa.Integer(), nullable=False),
        sa.Column("notification_error", sa.Text(), nullable=True),
        sa.Column("notification_lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notification_next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notification_published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index(
            "ix_refunds_notification_status", ["notification_status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_refunds_order_id"), ["order_id"], unique=False)
        batch_op.create_index(
            "ix_refunds_status_next_attempt_at", ["status", "next_attempt_at"], unique=False
        )

    op.create_table(
        "magento_calls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("refund_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["refund_id"], ["refunds.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("magento_calls", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_magento_calls_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_magento_calls_refund_id"), ["refund_id"], unique=False)

    op.create_table(
        "refund_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("refund_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["refund_id"], ["refunds.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("refund_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_refund_events_refund_id"), ["refund_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("refund_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_refund_events_refund_id"))

    op.drop_table("refund_events")
    with op.batch_alter_table("magento_calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_magento_calls_refund_id"))
        batch_op.drop_index(batch_op.f("ix_magento_calls_created_at"))

    op.drop_table("magento_calls")
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_status_next_attempt_at")
        batch_op.drop_index(batch_op.f("ix_refunds_order_id"))
        batch_op.drop_index("ix_refunds_notification_status")

    op.drop_table("refunds")
    op.drop_table("order_locks")
