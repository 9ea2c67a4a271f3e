"""Migration 0007 (several shops): every existing refund is of the shop ``default``; credit memo
ids become unique per shop; order locks are per shop and order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from refund_worker.db import SCHEMA_HEAD, alembic_config, schema_revisions, upgrade
from refund_worker.models import OrderLock, Refund

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _row(refund_id: str, key: str, **values: object) -> dict[str, object]:
    return {
        "id": refund_id, "tenant": "default", "idempotency_key": key, "payload_hash": "0" * 64,
        "request_json": f'{{"idempotency_key":"{key}","order_id":1}}', "order_id": 1,
        "service_requested": "auto", "status": "succeeded", "attempts": 1, "in_doubt": False,
        "version": 1, "notify_customer": False, "notification_status": "not_requested",
        "notification_attempts": 0, "notification_version": 0, "created_at": NOW,
        "updated_at": NOW, **values,
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rows_of_0003_become_the_default_shop(request: pytest.FixtureRequest, backend: str) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    engine = create_engine(url)
    try:
        upgrade(engine, "0003")
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO refunds (id, tenant, idempotency_key, payload_hash, request_json, "
                "order_id, service_requested, status, attempts, in_doubt, version, "
                "notify_customer, notification_status, notification_attempts, "
                "notification_version, creditmemo_id, created_at, updated_at) VALUES "
                "('old', 'default', 'k1', :hash, '{}', 5, 'auto', 'succeeded', 1, false, 1, "
                "false, 'not_requested', 0, 0, 7, :now, :now)"
            ), {"hash": "0" * 64, "now": NOW.replace(tzinfo=None)})
            connection.execute(text(
                "INSERT INTO order_locks (order_id, refund_id, expires_at) VALUES (5, 'old', :now)"
            ), {"now": NOW.replace(tzinfo=None)})

        upgrade(engine)

        assert schema_revisions(engine)[0] == schema_revisions(engine)[1] == SCHEMA_HEAD  # 0007+
        refunds, locks = Refund.__table__, OrderLock.__table__
        with engine.connect() as connection:
            assert connection.execute(select(refunds.c.id, refunds.c.shop)).all() == [
                ("old", "default")]
            assert connection.execute(select(locks)).all() == []  # transient: recreated empty
        # Credit memo 7 again, in another shop: allowed; in the same shop: refused.
        with engine.begin() as connection:
            connection.execute(insert(refunds).values(_row("eu-7", "k2", shop="eu",
                                                           creditmemo_id=7)))
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(refunds).values(_row("dup-7", "k3", creditmemo_id=7)))
        # Order 5's lock, per shop.
        with engine.begin() as connection:
            connection.execute(insert(locks), [
                {"shop": "default", "order_id": 5, "refund_id": "old", "expires_at": NOW},
                {"shop": "eu", "order_id": 5, "refund_id": "eu-7", "expires_at": NOW},
            ])
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(locks).values(
                shop="eu", order_id=5, refund_id="x", expires_at=NOW))

        # And back: 0007's downgrade restores 0003's shape (once no two shops share a memo id).
        with engine.begin() as connection:
            connection.execute(refunds.delete().where(refunds.c.id == "eu-7"))
        command.downgrade(alembic_config(engine), "0003")
        assert schema_revisions(engine)[0] == "0003"
    finally:
        engine.dispose()
