"""refund counts kept by the database

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

``refund-worker stats`` counted a year of refunds on every call (380 ms at a million rows,
bench/db_scale.py). Now the database keeps the counts itself:

* ``refund_counts``: one row per change, ``refunds`` +1 for a refund's new group (shop, status,
  notification_status, attempts, in_doubt) and -1 for its old one. Append-only, so workers never
  wait on a shared counter row; the sweep folds the rows into one per group
  (``refund_worker.counts.compact``). A group's count is the sum of its rows.
* triggers on ``refunds`` write those rows on insert, delete, and an update that changes one of
  the five columns (PostgreSQL: one PL/pgSQL function; SQLite: three triggers).
* the upgrade fills the table from the refunds already there, in the same transaction as the
  triggers' creation (on PostgreSQL ``CREATE TRIGGER`` locks the table against writes until the
  migration commits, so no change falls between the fill and the first trigger).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

KEY = ("shop", "status", "notification_status", "attempts", "in_doubt")
COLUMNS = ", ".join(KEY)
CHANGED = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in KEY)  # SQLite's null-safe test


def _values(row: str, sign: int) -> str:
    return f"VALUES ({', '.join(f'{row}.{c}' for c in KEY)}, {sign})"


POSTGRESQL = [
    f"""CREATE FUNCTION refund_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO refund_counts ({COLUMNS}, refunds) {_values("OLD", -1)};
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO refund_counts ({COLUMNS}, refunds) {_values("NEW", 1)};
    END IF;
    RETURN NULL;
END $$""",
    "CREATE TRIGGER refund_counts_insert_delete AFTER INSERT OR DELETE ON refunds "
    "FOR EACH ROW EXECUTE FUNCTION refund_counts_track()",
    f"CREATE TRIGGER refund_counts_update AFTER UPDATE OF {COLUMNS} ON refunds FOR EACH ROW "
    f"WHEN (({', '.join(f'OLD.{c}' for c in KEY)}) IS DISTINCT FROM "
    f"({', '.join(f'NEW.{c}' for c in KEY)})) EXECUTE FUNCTION refund_counts_track()",
]

SQLITE = [
    f"CREATE TRIGGER refund_counts_insert AFTER INSERT ON refunds BEGIN "
    f"INSERT INTO refund_counts ({COLUMNS}, refunds) {_values('NEW', 1)}; END",
    f"CREATE TRIGGER refund_counts_delete AFTER DELETE ON refunds BEGIN "
    f"INSERT INTO refund_counts ({COLUMNS}, refunds) {_values('OLD', -1)}; END",
    f"CREATE TRIGGER refund_counts_update AFTER UPDATE OF {COLUMNS} ON refunds "
    f"WHEN {CHANGED} BEGIN "
    f"INSERT INTO refund_counts ({COLUMNS}, refunds) {_values('OLD', -1)}; "
    f"INSERT INTO refund_counts ({COLUMNS}, refunds) {_values('NEW', 1)}; END",
]


def upgrade() -> None:
    op.create_table(
        "refund_counts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("shop", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("notification_status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("in_doubt", sa.Boolean(), nullable=False),
        sa.Column("refunds", sa.BigInteger(), nullable=False),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRESQL if postgresql else SQLITE:
        op.execute(statement)
    op.execute(  # the names are this module's constants
        f"INSERT INTO refund_counts ({COLUMNS}, refunds) "  # noqa: S608
        f"SELECT {COLUMNS}, count(*) FROM refunds GROUP BY {COLUMNS}"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER refund_counts_update ON refunds")
        op.execute("DROP TRIGGER refund_counts_insert_delete ON refunds")
        op.execute("DROP FUNCTION refund_counts_track()")
    else:
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER refund_counts_{name}")
    op.drop_table("refund_counts")
