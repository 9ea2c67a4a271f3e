"""Migration 0009 (refund counts kept by the database): the upgrade fills the counts from the
refunds already there and its triggers keep them; the downgrade drops table and triggers, and
the upgrade runs again."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import create_engine, insert, inspect, update

from refund_worker import counts
from refund_worker.db import alembic_config, schema_revisions, upgrade
from refund_worker.models import Refund

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _row(refund_id: str, status: str, attempts: int) -> dict[str, object]:
    return {
        "id": refund_id, "tenant": "default", "idempotency_key": refund_id, "shop": "default",
        "payload_hash": "0" * 64, "request_json": "{}", "order_id": 1,
        "service_requested": "auto", "status": status, "attempts": attempts, "in_doubt": False,
        "version": 0, "notify_customer": False, "notification_status": "not_requested",
        "notification_attempts": 0, "notification_version": 0, "created_at": NOW,
        "updated_at": NOW,
    }


def _groups(engine: object) -> dict[tuple[str, int], int]:
    with engine.connect() as connection:  # type: ignore[attr-defined]
        return {(g.status, g.attempts): g.refunds for g in counts.groups(connection)}


def test_0009_fills_the_counts_and_its_downgrade_drops_them(database_url: str) -> None:
    engine = create_engine(database_url)
    refunds = Refund.__table__
    try:
        upgrade(engine, "0008")
        with engine.begin() as connection:
            connection.execute(insert(refunds), [
                _row("a", "succeeded", 1), _row("b", "succeeded", 1), _row("c", "failed", 3),
            ])
        upgrade(engine, "0009")
        assert _groups(engine) == {("succeeded", 1): 2, ("failed", 3): 1}
        with engine.begin() as connection:
            connection.execute(update(refunds).where(refunds.c.id == "c")
                               .values(status="queued", attempts=0))
        assert _groups(engine) == {("succeeded", 1): 2, ("queued", 0): 1}

        command.downgrade(alembic_config(engine), "0008")
        assert schema_revisions(engine)[0] == "0008"
        assert "refund_counts" not in inspect(engine).get_table_names()
        with engine.begin() as connection:  # no trigger left to write to the missing table
            connection.execute(insert(refunds).values(_row("d", "queued", 0)))
        upgrade(engine, "0009")
        assert _groups(engine) == {("succeeded", 1): 2, ("queued", 0): 2}
    finally:
        engine.dispose()
