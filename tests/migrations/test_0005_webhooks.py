"""Migration 0005 adds the webhook tables next to existing rows, and goes back down cleanly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, inspect, text

from refund_worker.db import current_revision, upgrade

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0005_adds_the_outbox_beside_existing_refunds(
    request: pytest.FixtureRequest, backend: str
) -> None:
    from alembic import command

    from refund_worker.db import alembic_config

    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    engine = create_engine(url)
    try:
        upgrade(engine, "0003")
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO refunds (id, tenant, idempotency_key, payload_hash, request_json,"
                " order_id, service_requested, status, attempts, in_doubt, version,"
                " notify_customer, notification_status, notification_attempts,"
                " notification_version, created_at, updated_at)"
                " VALUES ('r1', 'erp', 'k1', :h, '{}', 1, 'auto', 'succeeded', 1, false, 1,"
                " false, 'not_requested', 0, 0, :now, :now)"), {"h": "0" * 64, "now": NOW})
        upgrade(engine)
        assert current_revision(engine) == "0005"
        tables = set(inspect(engine).get_table_names())
        assert {"webhook_endpoints", "webhook_deliveries"} <= tables
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO webhook_endpoints (id, tenant, url, event_types, secret_salt, key_id,"
                " enabled, created_at, updated_at) VALUES ('e1', 'erp', 'https://x.example/h',"
                " ',refund.succeeded,', 's', 'k', true, :now, :now)"), {"now": NOW})
            insert = text(
                "INSERT INTO webhook_deliveries (event_id, event_type, refund_id, endpoint_id,"
                " data_json, status, attempts, version, created_at, updated_at) VALUES"
                " ('msg_1', 'refund.succeeded', 'r1', 'e1', '{}', 'pending', 0, 0, :now, :now)")
            connection.execute(insert, {"now": NOW})
        # One delivery per event and endpoint.
        with pytest.raises(Exception, match=r"(?i)unique"), engine.begin() as connection:
            connection.execute(insert, {"now": NOW})
        command.downgrade(alembic_config(engine), "0003")
        assert current_revision(engine) == "0003"
        assert "webhook_deliveries" not in set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM refunds")).scalar() == 1
    finally:
        engine.dispose()
