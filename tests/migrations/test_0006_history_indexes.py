"""Migration 0006 adds the history indexes (built concurrently on PostgreSQL, so valid and
outside any transaction), keeps every row, and its downgrade drops them again. (0010 reshapes
them; test_0010 checks the head against models.py.)"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import column, create_engine, insert, inspect, table, text

from refund_worker.db import current_revision, upgrade

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
#: The tables whose indexes 0006 concerns (the webhook tables come with 0005 and follow it).
HISTORY_TABLES = ("refunds", "magento_calls", "refund_events", "order_locks")
NEW_INDEXES = {
    ("refunds", "ix_refunds_idempotency_key", ("idempotency_key",)),
    ("refunds", "ix_refunds_created_at_id", ("created_at", "id")),
    ("refunds", "ix_refunds_status_created_at_id", ("status", "created_at", "id")),
    ("refunds", "ix_refunds_tenant_status_created_at_id", ("tenant", "status", "created_at", "id")),
    ("refund_events", "ix_refund_events_created_at", ("created_at",)),
}


def _indexes(engine: object) -> set[tuple[str, str, tuple[str, ...]]]:
    inspector = inspect(engine)
    return {
        (name, index["name"], tuple(index["column_names"]))
        for name in HISTORY_TABLES
        for index in inspector.get_indexes(name)
        if not index.get("unique")
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0006_adds_the_declared_indexes_and_drops_them_on_downgrade(
    request: pytest.FixtureRequest, backend: str
) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    engine = create_engine(url)
    try:
        upgrade(engine, "0003")
        before = _indexes(engine)
        assert not before & NEW_INDEXES
        refunds = table("refunds", *(column(c) for c in (
            "id", "tenant", "idempotency_key", "payload_hash", "request_json", "order_id",
            "service_requested", "status", "attempts", "in_doubt", "version", "notify_customer",
            "notification_status", "notification_attempts", "notification_version",
            "created_at", "updated_at")))
        with engine.begin() as connection:
            connection.execute(insert(refunds), [{
                "id": f"r{n}", "tenant": "default", "idempotency_key": f"k{n}",
                "payload_hash": "0" * 64, "request_json": "{}", "order_id": n,
                "service_requested": "auto", "status": "failed", "attempts": 1,
                "in_doubt": False, "version": 1, "notify_customer": False,
                "notification_status": "not_requested", "notification_attempts": 0,
                "notification_version": 0, "created_at": NOW, "updated_at": NOW,
            } for n in range(3)])

        upgrade(engine, "0006")

        assert current_revision(engine) == "0006"
        after = _indexes(engine)
        assert after - before == NEW_INDEXES
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM refunds")).scalar() == 3
            if backend == "postgresql":
                invalid = connection.execute(text(
                    "SELECT count(*) FROM pg_index WHERE NOT indisvalid")).scalar()
                assert invalid == 0

        upgrade_down(engine, "0003")
        assert _indexes(engine) == before
    finally:
        engine.dispose()


def upgrade_down(engine: object, revision: str) -> None:
    from alembic import command

    from refund_worker.db import alembic_config

    command.downgrade(alembic_config(engine), revision)  # type: ignore[arg-type]
