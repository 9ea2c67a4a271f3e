"""Migration 0010 (fewer index entries per write): the head has the indexes models.py declares,
on PostgreSQL partial ones the reads still use; its statement triggers keep the counts through
bulk inserts and deletes; the downgrade restores 0009's indexes and row triggers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import UniqueConstraint, create_engine, delete, insert, inspect, text, update
from sqlalchemy.engine import Engine

from refund_worker import counts
from refund_worker.db import alembic_config, current_revision, upgrade
from refund_worker.models import Base, Refund

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
refunds = Refund.__table__


def _row(n: int, status: str) -> dict[str, object]:
    return {
        "id": f"r{n:03d}", "tenant": "default", "idempotency_key": f"k{n}", "shop": "default",
        "payload_hash": "0" * 64, "request_json": "{}", "order_id": n,
        "service_requested": "auto", "status": status, "attempts": 1, "in_doubt": False,
        "version": 0, "notify_customer": False, "notification_status": "not_requested",
        "notification_attempts": 0, "notification_version": 0, "created_at": NOW,
        "updated_at": NOW,
    }  # fmt: skip


def _index_shapes(engine: Engine) -> set[tuple[str, tuple[str, ...], bool]]:
    inspector = inspect(engine)
    shapes = {
        (str(i["name"]), tuple(str(c) for c in i["column_names"]), bool(i.get("unique")))
        for i in inspector.get_indexes("refunds")
    }
    shapes |= {
        (str(u["name"]), tuple(u["column_names"]), True)
        for u in inspector.get_unique_constraints("refunds")
    }
    return shapes


def _declared() -> set[tuple[str, tuple[str, ...], bool]]:
    table = Base.metadata.tables["refunds"]
    shapes = {
        (str(i.name), tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes
    }
    shapes |= {
        (str(c.name), tuple(col.name for col in c.columns), True)
        for c in table.constraints
        if isinstance(c, UniqueConstraint)
    }
    return shapes


def _groups(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        found: dict[str, int] = {}
        for group in counts.groups(connection):
            found[group.status] = found.get(group.status, 0) + group.refunds
        return {status: n for status, n in found.items() if n}


def _raw(engine: Engine) -> dict[str, int]:
    """The counts table's sums by status, as stored."""
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT status, sum(refunds) FROM refund_counts GROUP BY status"))
        return {str(status): int(n) for status, n in rows if n}


def _plan(engine: Engine, sql: str, **params: Any) -> str:
    with engine.connect() as connection:
        connection.execute(text("SET enable_seqscan = off"))  # a tiny table: ask for the index
        rows = connection.execute(text("EXPLAIN " + sql), params)
        return "\n".join(str(r[0]) for r in rows)


def test_0010_keeps_the_counts_through_bulk_writes_and_downgrades(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        upgrade(engine, "0009")
        with engine.begin() as connection:
            connection.execute(insert(refunds), [_row(n, "succeeded") for n in range(5)])
        upgrade(engine, "0010")
        assert current_revision(engine) == "0010"
        assert _index_shapes(engine) == _declared()  # the migrations build what models.py says

        with engine.begin() as connection:  # one statement each: a statement trigger's work
            connection.execute(insert(refunds), [_row(n, "received") for n in range(5, 65)])
        assert _groups(engine) == {"succeeded": 5, "received": 60}  # counted apart again
        assert _raw(engine) == {"succeeded": 5, "queued": 60}  # as the triggers count them
        with engine.begin() as connection:
            connection.execute(update(refunds).where(refunds.c.status == "received")
                               .values(status="queued"))
            connection.execute(delete(refunds).where(refunds.c.order_id >= 55))
            connection.execute(delete(refunds).where(refunds.c.order_id < 0))  # deletes none
        assert _groups(engine) == {"succeeded": 5, "queued": 50}
        with engine.begin() as connection:
            duplicate = {**_row(99, "received"), "idempotency_key": "k1"}
            with pytest.raises(Exception, match=r"(?i)unique"):
                connection.execute(insert(refunds).values(duplicate))

        with engine.begin() as connection:
            connection.execute(insert(refunds), [_row(n, "received") for n in range(80, 82)])
        assert _groups(engine) == {"succeeded": 5, "queued": 50, "received": 2}

        command.downgrade(alembic_config(engine), "0009")
        assert _raw(engine) == {"succeeded": 5, "queued": 50, "received": 2}  # 0009's way
        with engine.begin() as connection:  # 0009's row triggers are back
            connection.execute(insert(refunds), [_row(n, "failed") for n in range(70, 73)])
        assert _raw(engine) == {"succeeded": 5, "queued": 50, "received": 2, "failed": 3}
        upgrade(engine)
        assert _index_shapes(engine) == _declared()
    finally:
        engine.dispose()


def test_0010s_partial_indexes_serve_the_reads_they_are_for(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        upgrade(engine)
        failed = "SELECT id FROM refunds WHERE status = 'failed' ORDER BY created_at DESC LIMIT 50"
        assert "ix_refunds_status_created_at_id" in _plan(engine, failed)
        mine = ("SELECT id FROM refunds WHERE tenant = 't' AND status = 'needs_attention' "
                "ORDER BY created_at DESC LIMIT 50")
        assert "ix_refunds_tenant_status_created_at_id" in _plan(engine, mine)
        emails = "SELECT id FROM refunds WHERE notification_status = 'failed'"
        assert "ix_refunds_notification_status" in _plan(engine, emails)
        by_key = "SELECT id FROM refunds WHERE idempotency_key = 'k'"
        assert "uq_refunds_idempotency_key_tenant" in _plan(engine, by_key)
        memo = "SELECT id FROM refunds WHERE shop = 's' AND creditmemo_id = 7"
        assert "uq_refunds_shop_creditmemo_id" in _plan(engine, memo)
    finally:
        engine.dispose()
