"""Orders named by increment id, against the simulator: resolved once (GET /V1/orders) and
stored; none or several matching fail clearly; a busy order defers the resolved refund; an
earlier attempt's credit memo is reconciled against the lines Magento was sent (a configurable's
parent, a dynamic bundle's children), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from refund_worker.errors import IdempotencyConflict
from refund_worker.intake import enqueue_refund
from tests.services.conftest import Env

LIBRARY = Path(__file__).resolve().parents[1] / "data" / "orders"


def library(env: Env, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((LIBRARY / f"{name}.json").read_text())
    env.state.add_order(data)
    return data["order"]


def searches(env: Env) -> int:
    return sum(1 for call in env.calls if call.operation == "order_search")


def test_resolved_once_and_stored(env: Env) -> None:
    order = env.order(increment_id="000000777")
    env.state.add_fault({"route": "order_refund", "kind": "status", "status": 503, "count": 1})
    refund_id = env.enqueue(order_increment_id="000000777")
    assert env.row(refund_id).order_id is None
    service = env.refunds()

    first = service.process(refund_id)
    assert first.status == "retrying"
    row = env.row(refund_id)
    assert (row.order_id, row.order_increment_id) == (order["order_id"], "000000777")
    env.clock.advance(first.retry_in or 0)
    assert service.process(refund_id).status == "succeeded"
    assert searches(env) == 1  # the second attempt read the order from the row
    assert [memo["order_id"] for memo in env.memos()] == [order["order_id"]]


def test_no_order_with_that_increment_id_fails_permanently(env: Env) -> None:
    refund_id = env.enqueue(order_increment_id="000404404")
    result = env.refunds().process(refund_id)
    assert result.status == "failed"
    row = env.row(refund_id)
    assert row.last_error == (
        "order_increment_id: no order with increment id '000404404' in shop 'default'; nothing "
        "was refunded"
    )
    assert row.order_id is None
    assert env.refund_calls() == 0


def test_several_orders_with_that_increment_id_fail_naming_them(env: Env) -> None:
    first = env.order(increment_id="000000500")
    second = env.order(increment_id="000000500")  # another store view's sequence
    refund_id = env.enqueue(order_increment_id="000000500")
    assert env.refunds().process(refund_id).status == "failed"
    error = env.row(refund_id).last_error or ""
    assert error.startswith("order_increment_id: 2 orders have increment id '000000500'")
    assert f"order {first['order_id']} (store 1)" in error
    assert f"order {second['order_id']} (store 1)" in error
    assert "send order_id" in error
    assert env.refund_calls() == 0


def test_a_busy_order_defers_the_resolved_refund_uncounted(env: Env) -> None:
    order = env.order(increment_id="000000888")
    by_id = env.enqueue(order_id=order["order_id"], idempotency_key="by-id")
    by_number = env.enqueue(order_increment_id="000000888", idempotency_key="by-number",
                            items=[{"order_item_id": order["items"][1]["item_id"], "qty": 1}])
    service = env.refunds()
    # The first refund holds the order's lock while the second resolves.
    env.overrides["find_orders"] = lambda original, *a, **k: (
        service.store.claim(by_id, token="held", now=env.clock.now, due_by=env.clock.now,
                            lease_until=env.clock.now.replace(year=env.clock.now.year + 1)),
        original(*a, **k),
    )[1]
    deferred = service.process(by_number)
    env.overrides.clear()
    assert deferred.status == "retrying"
    assert deferred.detail == f"order {order['order_id']} has a refund in flight"
    row = env.row(by_number)
    assert (row.order_id, row.attempts) == (order["order_id"], 0)
    assert env.refund_calls() == 0


@pytest.mark.parametrize(("name", "named", "sent"), [
    ("configurable-braintree", 1005, {1004: 1.0, 1005: 1.0}),  # the child named: parent sent
    ("bundle-dynamic-stripe", 1011, {1011: 1.0, 1012: 1.0, 1013: 2.0}),  # the parent named
])
def test_an_earlier_attempt_is_reconciled_against_the_lines_sent(
    env: Env, name: str, named: int, sent: dict[int, float]
) -> None:
    order = library(env, name)
    env.state.add_fault({"route": "invoice_refund", "kind": "commit_then_500", "count": 1})
    refund_id = env.enqueue(order_increment_id=order["increment_id"],
                            items=[{"order_item_id": named, "qty": 1}])
    service = env.refunds()
    first = service.process(refund_id)
    assert first.status == "retrying"
    env.clock.advance(first.retry_in or 0)
    second = service.process(refund_id)
    assert second.status == "succeeded", env.row(refund_id).last_error
    assert second.detail.startswith("reconciled: credit memo")
    (memo,) = env.memos(order["entity_id"])
    assert {line["order_item_id"]: line["qty"] for line in memo["items"]} == sent
    assert env.refund_calls() == 1
    assert searches(env) == 1


def test_the_same_key_and_increment_id_is_a_duplicate_per_tenant(env: Env) -> None:
    payload = {"idempotency_key": "rma-9", "order_increment_id": "000000123"}
    first = enqueue_refund(payload, database=env.database, publisher=env.publisher)
    again = enqueue_refund(payload, database=env.database, publisher=env.publisher)
    assert (again.refund_id, again.duplicate) == (first.refund_id, True)
    # Another tenant's same key is its own refund; neither sees the other's.
    other = enqueue_refund(payload, database=env.database, publisher=env.publisher,
                           tenant="erp-2")
    assert other.refund_id != first.refund_id
    assert not other.duplicate
    # The same key naming the order by id instead is another payload: a conflict.
    with pytest.raises(IdempotencyConflict):
        enqueue_refund({"idempotency_key": "rma-9", "order_id": 123}, database=env.database,
                       publisher=env.publisher)
