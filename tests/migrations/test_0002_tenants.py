"""Migration 0002 carries every existing row over: tenants from their creator, marker tokens for
rows never attempted, one refund per credit memo (later duplicates flagged, not dropped)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import column, create_engine, insert, select, table, text
from sqlalchemy.exc import IntegrityError

from refund_worker.db import schema_revisions, upgrade
from refund_worker.models import Refund, UTCDateTime

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _row(refund_id: str, key: str, **values: object) -> dict[str, object]:
    return {
        "id": refund_id, "idempotency_key": key, "payload_hash": "0" * 64,
        "request_json": f'{{"idempotency_key":"{key}","order_id":1}}', "order_id": 1,
        "service_requested": "auto", "status": "queued", "attempts": 0, "in_doubt": False,
        "version": 0, "notify_customer": False, "notification_status": "not_requested",
        "notification_attempts": 0, "created_at": NOW, "updated_at": NOW, **values,
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rows_of_0001_are_carried_over(request: pytest.FixtureRequest, backend: str) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    engine = create_engine(url)
    try:
        upgrade(engine, "0001")
        names = [*_row("x", "x", created_by=None, creditmemo_id=None)]
        old = table("refunds", *(
            column(name, UTCDateTime() if name.endswith("_at") else None) for name in names
        ))
        rows = [
            _row("r-new", "k1", created_by="erp"),
            _row("r-attempted", "k2", status="retrying", attempts=2),
            _row("r-first", "k3", status="succeeded", creditmemo_id=7,
                 created_at=NOW - timedelta(hours=1)),
            _row("r-second", "k4", status="succeeded", creditmemo_id=7),
        ]
        with engine.begin() as connection:
            connection.execute(insert(old), [
                {"created_by": None, "creditmemo_id": None, **row} for row in rows
            ])

        upgrade(engine)

        assert schema_revisions(engine)[0] == schema_revisions(engine)[1]
        refunds = Refund.__table__
        with engine.connect() as connection:
            got = {r.id: r for r in connection.execute(select(
                refunds.c.id, refunds.c.tenant, refunds.c.marker_token, refunds.c.status,
                refunds.c.creditmemo_id, refunds.c.attention))}
        assert got["r-new"].tenant == "erp"
        assert got["r-attempted"].tenant == "default"
        assert len(got["r-new"].marker_token) == 32  # never attempted: gets a token
        assert got["r-attempted"].marker_token is None  # keeps the legacy marker
        assert (got["r-first"].status, got["r-first"].creditmemo_id) == ("succeeded", 7)
        assert (got["r-second"].status, got["r-second"].creditmemo_id) == ("needs_attention", None)
        assert "credit memo 7 was recorded for refund r-first" in got["r-second"].attention
        # The new constraints hold: a key per tenant, a credit memo per refund.
        with engine.begin() as connection:
            connection.execute(
                insert(refunds).values(_row("r-other-tenant", "k1", tenant="returns"))
            )
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(refunds).values(_row("r-dup", "k1", tenant="erp")))
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(refunds).values(
                _row("r-memo", "k9", tenant="erp", creditmemo_id=7)))
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM refunds")).scalar() == 5
    finally:
        engine.dispose()
