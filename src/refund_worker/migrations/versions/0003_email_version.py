"""the email's own version

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05

The customer email's state changes are compare-and-set on ``notification_version`` instead of
the refund's ``version``, so the refund and email state machines never fence each other.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("refunds") as batch_op:
        batch_op.add_column(
            sa.Column("notification_version", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("refunds") as batch_op:
        batch_op.drop_column("notification_version")
