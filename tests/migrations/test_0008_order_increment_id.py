"""Migration 0008 (orders named by increment id): ``order_increment_id`` is added, ``order_id``
becomes nullable until resolved; rows, indexes and constraints survive; the downgrade refuses
while a refund is unresolved and restores 0007's shape once none is."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import create_engine, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from refund_worker.db import alembic_config, schema_revisions, upgrade
from refund_worker.models import Refund

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _row(refund_id: str, key: str, **values: object) -> dict[str, object]:
    return {
        "id": refund_id, "tenant": "default", "idempotency_key": key, "payload_hash": "0" * 64,
        "request_json": "{}", "service_requested": "auto", "status": "queued", "attempts": 0,
        "in_doubt": False, "version": 0, "notify_customer": False,
        "notification_status": "not_requested", "notification_attempts": 0,
        "notification_version": 0, "created_at": NOW, "updated_at": NOW, **values,
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0008_makes_order_id_nullable_and_keeps_rows(
    request: pytest.FixtureRequest, backend: str
) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    engine = create_engine(url)
    refunds = Refund.__table__
    try:
        upgrade(engine, "0007")
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO refunds (id, tenant, idempotency_key, shop, payload_hash, "
                "request_json, order_id, service_requested, status, attempts, in_doubt, "
                "version, notify_customer, notification_status, notification_attempts, "
                "notification_version, creditmemo_id, created_at, updated_at) VALUES "
                "('old', 'default', 'k1', 'default', :hash, '{}', 5, 'auto', 'succeeded', 1, "
                "false, 1, false, 'not_requested', 0, 0, 7, :now, :now)"
            ), {"hash": "0" * 64, "now": NOW.replace(tzinfo=None)})
            with pytest.raises(IntegrityError), connection.begin_nested():
                connection.execute(insert(refunds).values(_row("early", "k0", order_id=None)))
        indexes_before = {i["name"] for i in inspect(engine).get_indexes("refunds")}

        upgrade(engine, "0008")

        assert schema_revisions(engine)[0] == "0008"
        columns = {c["name"]: c for c in inspect(engine).get_columns("refunds")}
        assert columns["order_id"]["nullable"]
        assert columns["order_increment_id"]["nullable"]
        assert {i["name"] for i in inspect(engine).get_indexes("refunds")} == indexes_before
        with engine.begin() as connection:
            connection.execute(insert(refunds).values(
                _row("new", "k2", order_id=None, order_increment_id="000000123")))
            rows = connection.execute(
                select(refunds.c.id, refunds.c.order_id, refunds.c.order_increment_id)
                .order_by(refunds.c.id)).all()
        assert rows == [("new", None, "000000123"), ("old", 5, None)]
        # The tenant's idempotency keys and the shop's credit memos are still unique.
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(refunds).values(_row("dup", "k2", order_id=1)))
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(refunds).values(_row("memo", "k3", order_id=1,
                                                           creditmemo_id=7)))

        # Down: refused while "new" is unresolved; fine once it has its order.
        with pytest.raises(RuntimeError, match="1 refunds name their order by increment id"):
            command.downgrade(alembic_config(engine), "0007")
        with engine.begin() as connection:
            connection.execute(refunds.update().where(refunds.c.id == "new").values(order_id=9))
        command.downgrade(alembic_config(engine), "0007")
        assert schema_revisions(engine)[0] == "0007"
        columns = {c["name"]: c for c in inspect(engine).get_columns("refunds")}
        assert "order_increment_id" not in columns
        assert not columns["order_id"]["nullable"]
    finally:
        engine.dispose()
