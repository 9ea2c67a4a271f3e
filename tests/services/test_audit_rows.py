"""Every Magento call of every attempt leaves one audit row (``magento_calls``), with its
attempt, operation, status and a creation time, for refunds and emails alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from refund_worker.magento import CallRecord
from refund_worker.models import MagentoCall, RefundEvent, utcnow
from refund_worker.store import insert_calls
from tests.services.conftest import Env


def audit(env: Env, refund_id: str) -> list[MagentoCall]:
    with env.database.session_scope() as session:
        rows = list(session.scalars(
            select(MagentoCall).where(MagentoCall.refund_id == refund_id).order_by(MagentoCall.id)))
        session.expunge_all()
        return rows


def test_each_call_of_each_attempt_is_audited(env: Env) -> None:
    order = env.order()
    env.state.add_fault({"route": "order_refund", "kind": "commit_then_500", "count": 1})
    refund_id = env.enqueue(order_id=order["order_id"], notify_customer=True)
    service = env.refunds()
    before = utcnow()
    first = service.process(refund_id)
    assert first.retry_in is not None
    env.clock.advance(first.retry_in)
    assert service.process(refund_id).detail.startswith("reconciled")
    assert env.notifications().send(refund_id).status == "sent"

    rows = audit(env, refund_id)
    # Attempt 1: order, refund (committed, then 500); attempt 2: the search; then the email's 1.
    assert [(r.attempt, r.operation) for r in rows] == [
        (1, "order_get"), (1, "order_refund"), (2, "creditmemo_search"), (1, "creditmemo_emails")]
    assert [(r.method, r.path, r.http_status, r.duration_ms, r.error) for r in rows] == [
        (c.method, c.path, c.http_status, c.duration_ms, c.error) for c in env.calls]
    for row in rows:
        assert before - timedelta(seconds=1) <= row.created_at <= utcnow()
    # Each row is stamped when its call started, so they come in the order they were made.
    assert [row.created_at for row in rows] == [call.started_at for call in env.calls]
    with env.database.session_scope() as session:
        kinds = session.scalars(select(RefundEvent.kind).where(RefundEvent.refund_id == refund_id))
        assert list(kinds) == ["reconciled"]


@pytest.mark.parametrize("count", [1, 3, 8, 9, 20])
def test_an_attempts_calls_are_stored_in_order_however_many(env: Env, count: int) -> None:
    """One INSERT for all of an attempt's calls: every row, in the order of the calls."""
    refund_id = env.enqueue(order_id=env.order()["order_id"])
    calls = [
        CallRecord(operation=f"op{i}", method="GET" if i % 2 else "POST", path=f"/V1/x/{i}",
                   http_status=None if i == 2 else 200 + i, duration_ms=i / 4,
                   error="boom" if i == 2 else None)
        for i in range(count)
    ]
    before = utcnow()
    with env.database.connection_scope() as connection:
        insert_calls(connection, refund_id, 7, calls)
    rows = audit(env, refund_id)
    assert [(r.attempt, r.operation, r.method, r.path, r.http_status, r.duration_ms, r.error)
            for r in rows] == [
        (7, c.operation, c.method, c.path, c.http_status, c.duration_ms, c.error) for c in calls]
    assert all(before - timedelta(seconds=1) <= row.created_at <= utcnow() for row in rows)
