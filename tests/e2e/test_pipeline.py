"""End to end: a real `refund-worker worker` process on the machine's Redis, the simulator on a
real socket, SQLite and PostgreSQL. Each Magento service, and each failure class."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from refund_worker.simulator import SimulatorState
from tests.e2e.conftest import Stack
from tests.magento_schema import body_errors

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def orders(state: SimulatorState) -> dict[str, dict[str, object]]:
    return {
        "online": state.add_order({"payment_method": "braintree", "shipping": 10,
                                   "shipped": True,
                                   "items": [{"sku": "HOODIE", "qty": 2, "price": 50}]}),
        "offline": state.add_order({"payment_method": "checkmo", "shipping": 5, "shipped": True,
                                    "items": [{"sku": "BAG", "qty": 1, "price": 30}]}),
        "partial": state.add_order({"payment_method": "stripe_payments", "shipping": 7,
                                    "items": [{"sku": "TEE", "qty": 3, "price": 20},
                                              {"sku": "SOCK", "qty": 2, "price": 5}]}),
        "lowlevel": state.add_order({"payment_method": "banktransfer", "shipped": True,
                                     "items": [{"sku": "MUG", "qty": 2, "price": 12}]}),
        "record": state.add_order({"payment_method": "purchaseorder", "shipped": True,
                                   "items": [{"sku": "DESK", "qty": 1, "price": 300}]}),
    }


def item(order: dict[str, object], index: int = 0) -> int:
    return int(order["items"][index]["item_id"])  # type: ignore[index]


def test_each_service_end_to_end(stack: Stack) -> None:
    made = orders(stack.state)
    receipts = stack.enqueue(
        {"idempotency_key": "online", "order_id": made["online"]["order_id"],
         "notify_customer": True},
        {"idempotency_key": "offline", "order_id": made["offline"]["order_id"],
         "invoice_id": made["offline"]["invoice_id"]},
        {"idempotency_key": "partial", "order_id": made["partial"]["order_id"],
         "items": [{"order_item_id": item(made["partial"]), "qty": 1}],
         "return_to_stock": True},
        {"idempotency_key": "lowlevel", "order_id": made["lowlevel"]["order_id"],
         "service": "creditmemo", "offline_requested": True,
         "creditmemo": {"items": [{"order_item_id": item(made["lowlevel"]), "qty": 1,
                                   "price": 12, "base_price": 12, "row_total": 12,
                                   "base_row_total": 12}],
                        "subtotal": 12, "base_subtotal": 12, "grand_total": 12,
                        "base_grand_total": 12}},
        {"idempotency_key": "record", "order_id": made["record"]["order_id"],
         "service": "record_only"},
    )
    stack.start_worker()
    views = stack.wait_settled([r.refund_id for r in receipts])
    by_key = {view.idempotency_key: view for view in views.values()}
    assert {k: (v.status.value, v.service) for k, v in by_key.items()} == {
        "online": ("succeeded", "invoice"),
        "offline": ("succeeded", "order"),
        "partial": ("succeeded", "invoice"),
        "lowlevel": ("succeeded", "creditmemo"),
        "record": ("succeeded", "record_only"),
    }
    memos = {memo["entity_id"]: memo for memo in stack.state.creditmemos()}
    assert len(memos) == 5
    for view in by_key.values():
        memo = memos[view.creditmemo_id]
        assert any(f"refund-worker:{view.id}" in c["comment"] for c in memo["comments"])
        assert view.attempts == 1
        refund_calls = [c.operation for c in view.calls if c.operation in (
            "invoice_refund", "order_refund", "creditmemo_refund", "creditmemo_save")]
        assert len(refund_calls) == 1
    # Totals moved as Magento moves them; the record-only memo moved nothing.
    online = stack.state.order(int(made["online"]["order_id"]))
    assert online["state"] == "closed"
    assert float(online["total_refunded"]) == pytest.approx(110.0)
    partial = stack.state.order(int(made["partial"]["order_id"]))
    assert float(partial["total_refunded"]) == pytest.approx(20.0)  # no shipping on a partial
    record = stack.state.order(int(made["record"]["order_id"]))
    assert float(record.get("total_refunded") or 0) == 0
    # The notification went out once, as its own task.
    assert by_key["online"].notification_status.value == "sent"
    assert [e["creditmemo_id"] for e in stack.state.emails()] == [by_key["online"].creditmemo_id]
    # Every body the worker sent validates against Adobe's schema.
    bodies = stack.request_bodies()
    assert len(bodies) == 5
    for body in bodies:
        assert body_errors(body["route"], body["body"]) == [], body


def test_failure_classes(stack: Stack) -> None:
    state = stack.state
    held = state.add_order({"payment_method": "checkmo", "state": "holded",
                            "items": [{"sku": "LAMP", "qty": 1, "price": 80}]})
    flaky = state.add_order({"payment_method": "checkmo", "shipped": True,
                             "items": [{"sku": "RICE", "qty": 2, "price": 4}]})
    limited = state.add_order({"payment_method": "checkmo", "shipped": True,
                               "items": [{"sku": "TEA", "qty": 2, "price": 6}]})
    down = state.add_order({"payment_method": "checkmo", "shipped": True,
                            "items": [{"sku": "OIL", "qty": 1, "price": 9}]})
    small = state.add_order({"payment_method": "checkmo", "shipped": True,
                             "items": [{"sku": "SALT", "qty": 2, "price": 1}]})
    state.add_fault({"route": "order_refund", "kind": "status", "status": 503,
                     "order_id": flaky["order_id"], "count": 2})
    state.add_fault({"route": "order_refund", "kind": "status", "status": 429, "retry_after": 1,
                     "order_id": limited["order_id"], "count": 1})
    state.add_fault({"route": "order_get", "kind": "status", "status": 502,
                     "order_id": down["order_id"]})  # never recovers
    receipts = stack.enqueue(
        {"idempotency_key": "held", "order_id": held["order_id"]},
        {"idempotency_key": "unknown-order", "order_id": 999999},
        {"idempotency_key": "flaky", "order_id": flaky["order_id"]},
        {"idempotency_key": "limited", "order_id": limited["order_id"]},
        {"idempotency_key": "down", "order_id": down["order_id"]},
        {"idempotency_key": "too-much", "order_id": small["order_id"],
         "items": [{"order_item_id": item(small), "qty": 5}]},
    )
    stack.start_worker()
    views = {v.idempotency_key: v for v in
             stack.wait_settled([r.refund_id for r in receipts], timeout=90).values()}
    assert views["held"].status.value == "failed"
    assert views["held"].attempts == 1
    assert "A creditmemo can not be created when an order has a status of holded" in (
        views["held"].last_error or "")
    assert views["unknown-order"].status.value == "failed"
    assert "doesn't exist" in (views["unknown-order"].last_error or "")
    assert views["flaky"].status.value == "succeeded"
    assert views["flaky"].attempts == 3
    assert views["limited"].status.value == "succeeded"
    assert views["limited"].attempts == 2
    assert views["down"].status.value == "failed"
    assert views["down"].attempts == stack.settings.max_attempts
    assert "gave up after" in (views["down"].last_error or "")
    assert views["too-much"].status.value == "failed"
    assert "must not be greater than the unrefunded quantity" in (
        views["too-much"].last_error or "")
    # The 503s were unknown outcomes: each retry reconciled first and found nothing.
    flaky_ops = [c.operation for c in views["flaky"].calls]
    assert flaky_ops.count("creditmemo_search") == 2
    assert flaky_ops.count("order_refund") == 3
    assert len([m for m in state.creditmemos()
                if m["order_id"] == flaky["order_id"]]) == 1


def test_emails_do_not_wait_behind_the_refund_backlog(stack: Stack) -> None:
    """Emails have their own queue, which a worker takes from in turn with the refunds queue: the
    first refund's email goes out long before a backlog of refunds is done (in one queue it
    would go out after the whole backlog)."""
    made = [
        stack.state.add_order(
            {"payment_method": "braintree", "shipped": True,
             "items": [{"sku": "CAP", "qty": 1, "price": 10}]}
        )
        for _ in range(40)
    ]
    receipts = stack.enqueue(
        *({"idempotency_key": f"backlog-{n}", "order_id": order["order_id"],
           "notify_customer": True} for n, order in enumerate(made))
    )
    stack.start_worker(1)  # one thread: tasks run one at a time, in the order they are taken
    views = stack.wait_settled([r.refund_id for r in receipts], timeout=120)
    assert {view.notification_status.value for view in views.values()} == {"sent"}
    with stack.database.engine.connect() as connection:
        operations = list(
            connection.execute(
                text("SELECT operation FROM magento_calls ORDER BY id")
            ).scalars()
        )
    refunds_before_first_email = operations[: operations.index("creditmemo_emails")].count(
        "invoice_refund"
    )
    # At most the refunds prefetched (4 per thread) and the one running when it was published.
    assert refunds_before_first_email <= 6, operations


def test_a_prefork_worker_refunds_and_emails_each_once(stack: Stack) -> None:
    """The pool docs/performance.md suggests for CPU-bound work: each child process opens its
    own database and HTTP connections after the fork (``worker_process_init``)."""
    made = [
        stack.state.add_order(
            {"payment_method": "braintree", "shipped": True,
             "items": [{"sku": "CUP", "qty": 1, "price": 10 + n}]}
        )
        for n in range(12)
    ]
    receipts = stack.enqueue(
        *({"idempotency_key": f"prefork-{n}", "order_id": order["order_id"],
           "notify_customer": True} for n, order in enumerate(made))
    )
    stack.start_worker(3, "--pool", "prefork")
    views = stack.wait_settled([r.refund_id for r in receipts], timeout=90)
    assert {(v.status.value, v.notification_status.value) for v in views.values()} == {
        ("succeeded", "sent")
    }
    assert len(stack.state.creditmemos()) == 12
    assert sorted(e["creditmemo_id"] for e in stack.state.emails()) == sorted(
        v.creditmemo_id for v in views.values()
    )
    logs = "".join(path.read_text(errors="replace") for path in stack.log_dir.glob("*.log"))
    assert "concurrency: 3 (prefork)" in logs
    assert "ForkPoolWorker" in logs
