"""several shops

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-06

* ``refunds.shop``: the Magento installation a refund is for; every existing row is the shop
  today's ``REFUND_WORKER_MAGENTO_*`` settings describe, ``default``.
* Credit memo ids are numbered by each Magento: ``creditmemo_id`` becomes unique per shop.
* ``order_locks`` are per shop and order (order 42 of two shops are two orders). The locks are
  transient (held for one attempt), so the table is recreated empty: an attempt in flight across
  the upgrade finds its lock gone, and its fenced renewal refuses the call (it retries).
* ``ix_refunds_shop_status``: the per-shop lists and stats.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    with op.batch_alter_table("refunds", naming_convention=NAMING) as batch_op:
        batch_op.add_column(
            sa.Column("shop", sa.String(length=32), nullable=False, server_default="default")
        )
        batch_op.drop_constraint("uq_refunds_creditmemo_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_refunds_shop_creditmemo_id", ["shop", "creditmemo_id"]
        )
        batch_op.create_index("ix_refunds_shop_status", ["shop", "status"])
    op.drop_table("order_locks")
    _order_locks(with_shop=True)


def downgrade() -> None:
    op.drop_table("order_locks")
    _order_locks(with_shop=False)
    with op.batch_alter_table("refunds", naming_convention=NAMING) as batch_op:
        batch_op.drop_index("ix_refunds_shop_status")
        batch_op.drop_constraint("uq_refunds_shop_creditmemo_id", type_="unique")
        batch_op.create_unique_constraint("uq_refunds_creditmemo_id", ["creditmemo_id"])
        batch_op.drop_column("shop")


def _order_locks(*, with_shop: bool) -> None:
    columns: list[sa.Column[object]] = []
    if with_shop:
        columns.append(
            sa.Column("shop", sa.String(length=32), nullable=False, server_default="default")
        )
    op.create_table(
        "order_locks",
        *columns,
        sa.Column("order_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("refund_id", sa.String(length=36), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*(["shop"] if with_shop else []), "order_id"),
    )
