"""tenants, marker tokens, needs_attention, one refund per credit memo

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

* ``tenant``: existing rows belong to the key that created them (``created_by``), else
  ``default``; idempotency keys become unique per tenant.
* ``marker_token``: rows never attempted get one now; rows already attempted keep the legacy
  marker their credit memos may carry (``refund-worker:<id>``).
* ``creditmemo_id`` becomes unique. Should two rows already record the same credit memo, the
  earliest keeps it and each later one is set ``needs_attention`` with why, before the constraint.
* ``attention`` (why a person must look) and ``replayed_by``.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: SQLite's unnamed constraints get these names when the table is copied in batch mode.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}

refunds = sa.table(
    "refunds",
    sa.column("id", sa.String),
    sa.column("tenant", sa.String),
    sa.column("created_by", sa.String),
    sa.column("status", sa.String),
    sa.column("attempts", sa.Integer),
    sa.column("marker_token", sa.String),
    sa.column("creditmemo_id", sa.Integer),
    sa.column("attention", sa.Text),
    sa.column("created_at", sa.DateTime),
)


def upgrade() -> None:
    with op.batch_alter_table("refunds") as batch_op:
        batch_op.add_column(sa.Column("tenant", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("marker_token", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("attention", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("replayed_by", sa.String(length=64), nullable=True))

    connection = op.get_bind()
    connection.execute(
        refunds.update().values(tenant=sa.func.coalesce(refunds.c.created_by, "default"))
    )
    never_attempted = connection.execute(
        sa.select(refunds.c.id).where(
            refunds.c.attempts == 0, refunds.c.status.in_(("received", "queued"))
        )
    ).scalars()
    for refund_id in list(never_attempted):
        connection.execute(
            refunds.update()
            .where(refunds.c.id == refund_id)
            .values(marker_token=secrets.token_hex(16))
        )
    _flag_shared_creditmemos(connection)

    with op.batch_alter_table("refunds", naming_convention=NAMING) as batch_op:
        batch_op.alter_column("tenant", existing_type=sa.String(length=64), nullable=False)
        if connection.dialect.name == "sqlite":
            batch_op.drop_constraint("uq_refunds_idempotency_key", type_="unique")
        else:
            batch_op.drop_constraint("refunds_idempotency_key_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_refunds_tenant_idempotency_key", ["tenant", "idempotency_key"]
        )
        batch_op.create_unique_constraint("uq_refunds_creditmemo_id", ["creditmemo_id"])


def _flag_shared_creditmemos(connection: sa.Connection) -> None:
    shared = connection.execute(
        sa.select(refunds.c.creditmemo_id)
        .where(refunds.c.creditmemo_id.is_not(None))
        .group_by(refunds.c.creditmemo_id)
        .having(sa.func.count() > 1)
    ).scalars()
    for creditmemo_id in list(shared):
        rows = connection.execute(
            sa.select(refunds.c.id)
            .where(refunds.c.creditmemo_id == creditmemo_id)
            .order_by(refunds.c.created_at, refunds.c.id)
        ).scalars()
        first, *later = list(rows)
        for refund_id in later:
            connection.execute(
                refunds.update()
                .where(refunds.c.id == refund_id)
                .values(
                    status="needs_attention",
                    creditmemo_id=None,
                    attention=f"credit memo {creditmemo_id} was recorded for refund {first} "
                    "too (found by migration 0002); check in Magento what this refund became",
                )
            )


def downgrade() -> None:
    with op.batch_alter_table("refunds", naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint("uq_refunds_creditmemo_id", type_="unique")
        batch_op.drop_constraint("uq_refunds_tenant_idempotency_key", type_="unique")
        batch_op.create_unique_constraint("uq_refunds_idempotency_key", ["idempotency_key"])
        batch_op.drop_column("replayed_by")
        batch_op.drop_column("attention")
        batch_op.drop_column("marker_token")
        batch_op.drop_column("tenant")
