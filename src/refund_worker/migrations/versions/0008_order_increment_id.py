"""orders named by their increment id

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

* ``refunds.order_increment_id``: the order number a caller gave instead of ``order_id``
  (Magento's ``sales_order.increment_id``, varchar(50)); shown by the status views.
* ``refunds.order_id`` becomes nullable: a refund named by increment id has no order id until
  the worker resolves it in the refund's shop (once; then it is stored). Every existing row has
  one. The downgrade refuses while a row is still unresolved, rather than invent an order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("refunds") as batch_op:
        batch_op.add_column(sa.Column("order_increment_id", sa.String(length=50), nullable=True))
        batch_op.alter_column("order_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    unresolved = op.get_bind().execute(
        sa.text("SELECT count(*) FROM refunds WHERE order_id IS NULL")
    ).scalar()
    if unresolved:
        raise RuntimeError(
            f"{unresolved} refunds name their order by increment id only (order_id is not "
            "resolved yet): settle or delete them before downgrading below 0008"
        )
    with op.batch_alter_table("refunds") as batch_op:
        batch_op.alter_column("order_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("order_increment_id")
