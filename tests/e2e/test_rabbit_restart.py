"""RabbitMQ restarting under a running worker: 30 refunds on a PRIVATE node (the machine's broker
is never touched), the node stopped and started mid-run; every refund ends with exactly one
credit memo (nothing lost in the restart, nothing refunded twice on redelivery)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path

import pytest

from refund_worker.simulator import SimulatorState
from refund_worker.testing.rabbit import PrivateRabbit, private_rabbit
from tests.conftest import need_binary
from tests.e2e.conftest import make_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]


def test_nothing_lost_or_doubled_across_a_rabbitmq_restart(
    pg_url: str, tmp_path: Path, sim_state: SimulatorState
) -> None:
    need_binary(PrivateRabbit.available(),
                "rabbitmq-server is not installed: the test restarts a private node")
    with private_rabbit(tmp_path) as node, contextlib.contextmanager(make_stack)(
        pg_url, node.url(), tmp_path, sim_state
    ) as stack:
        orders = [
            stack.state.add_order({"payment_method": "braintree", "shipped": True,
                                   "items": [{"sku": "CAP", "qty": 1, "price": 10}]})
            for _ in range(30)
        ]
        # Slow calls keep refunds in flight (delivered, unacknowledged) when the node stops.
        stack.state.add_fault({"route": "order_get", "kind": "latency", "ms": 300, "count": 20})
        worker = stack.start_worker(4)
        receipts = stack.enqueue(*({"idempotency_key": f"rabbit-restart-{n}",
                                    "order_id": order["order_id"]}
                                   for n, order in enumerate(orders)))
        deadline = time.monotonic() + 30
        while not stack.state.creditmemos():
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.1)
        node.restart(1.0)
        views = stack.wait_settled([r.refund_id for r in receipts], timeout=90)
        assert worker.poll() is None, f"the worker exited ({worker.returncode}):\n{stack.logs()}"
        assert {view.status.value for view in views.values()} == {"succeeded"}
        memos = Counter(memo["order_id"] for memo in stack.state.creditmemos())
        assert memos == Counter({order["order_id"]: 1 for order in orders})
