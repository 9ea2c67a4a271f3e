"""Would an email table of its own win back the durable floor? The floor's four writes, timed.

A prototype measurement for issue #19's last figure (nothing in ``src/`` uses this layout): on a
private PostgreSQL database with today's schema, ``--refunds`` stored refunds each get the durable
floor's four writes by key (claim, success, the email's claim, the email sent), one autocommit
statement each on one connection, one step for all refunds before the next. ``refunds`` writes
the email's state on the refund's row, as the worker does; ``table`` writes it to a bare
``emails`` table (primary key, an index of live emails), so the email's two writes leave
``refunds`` and its nine indexes. ``BENCH_SRC`` runs ``refunds`` on another tree's schema.
Prints milliseconds (wall) per refund per step, alternating the variants ``--rounds`` times;
no results file.

    python bench/email_table.py --refunds 2000 --rounds 3
    BENCH_SRC=/tmp/snap-7e2fae1/src python bench/email_table.py --variants refunds
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import common
from sqlalchemy import bindparam, text, update
from sqlalchemy.engine import Connection

from refund_worker.db import Database, upgrade
from refund_worker.intake import enqueue_refunds
from refund_worker.models import Refund

VARIANTS = ("refunds", "table")
_EMAILS_DDL = (
    "CREATE TABLE emails (refund_id varchar(36) PRIMARY KEY REFERENCES refunds(id) "
    "ON DELETE CASCADE, status varchar(20) NOT NULL, attempts int NOT NULL)",
    "CREATE INDEX ix_emails_live ON emails (status) WHERE status NOT IN ('sent', 'failed')",
)


def _steps(variant: str) -> dict[str, Any]:
    refunds = Refund.__table__
    this = refunds.c.id == bindparam("refund_id")
    steps: dict[str, Any] = {
        "claim": update(refunds)
        .where(this)
        .values(status="processing", attempts=refunds.c.attempts + 1)
    }
    if variant == "refunds":
        steps["succeeded"] = (
            update(refunds)
            .where(this)
            .values(
                status="succeeded", creditmemo_id=bindparam("memo"), notification_status="pending"
            )
        )
        steps["email_claim"] = (
            update(refunds)
            .where(this)
            .values(notification_status="sending", notification_attempts=1)
        )
        steps["email_sent"] = update(refunds).where(this).values(notification_status="sent")
    else:
        steps["succeeded"] = text(
            "WITH s AS (UPDATE refunds SET status = 'succeeded', creditmemo_id = :memo "
            "WHERE id = :refund_id) "
            "INSERT INTO emails (refund_id, status, attempts) VALUES (:refund_id, 'pending', 0)"
        )
        steps["email_claim"] = text(
            "UPDATE emails SET status = 'sending', attempts = 1 WHERE refund_id = :refund_id"
        )
        steps["email_sent"] = text("UPDATE emails SET status = 'sent' WHERE refund_id = :refund_id")
    return steps


def one_run(variant: str, refunds: int) -> dict[str, float]:
    """Milliseconds per refund for each step of ``variant``, on a new private database."""
    with common.private_database("email_table") as url:
        database = Database.from_url(url, pool_size=1)
        try:
            upgrade(database.engine)
            if variant == "table":
                with database.engine.begin() as connection:
                    for ddl in _EMAILS_DDL:
                        connection.execute(text(ddl))
            requests = common.item_refunds(refunds, "email-table")
            results = enqueue_refunds(requests, database=database, publisher=common.NoPublisher())
            ids = [result.refund_id for result in results]  # type: ignore[union-attr]
            engine = database.engine.execution_options(isolation_level="AUTOCOMMIT")
            with engine.connect() as connection:
                return _timed(connection, _steps(variant), ids)
        finally:
            database.dispose()


def _timed(connection: Connection, steps: dict[str, Any], ids: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, statement in steps.items():
        start = time.perf_counter()
        for n, refund_id in enumerate(ids):
            connection.execute(statement, {"refund_id": refund_id, "memo": 10_000 + n})
        out[name] = round((time.perf_counter() - start) * 1000 / len(ids), 3)
    out["total"] = round(sum(out.values()), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refunds", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {sorted(unknown)}; choose from {VARIANTS}")
    for round_number in range(1, args.rounds + 1):
        for variant in variants:
            row = one_run(variant, args.refunds)
            steps = "  ".join(f"{name} {ms:.3f}" for name, ms in row.items())
            common.console.print(f"round {round_number} {variant:8} ms per refund: {steps}")


if __name__ == "__main__":
    main()
