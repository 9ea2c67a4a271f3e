"""Redis going away while a worker runs tasks: the worker stays up and reconnects.

kombu 5.7 crashed the worker here (``AttributeError: 'NoneType' object has no attribute
'hostname'``, exit code 1): after the connection error Celery collects the connection (which
drops the transport's client), then closes it, and the channel's close, trying to give the
running tasks' unacknowledged messages back, builds a Redis connection pool from the dropped
client. Found by ``bench/fault_run.py`` (a worker "exited on its own" after a Redis restart).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from refund_worker.simulator import SimulatorState
from refund_worker.testing.faults import PrivateRedis, private_redis
from tests.conftest import need_binary
from tests.e2e.conftest import make_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.redis]


def test_a_worker_survives_redis_dying_under_running_tasks(
    sqlite_url: str, tmp_path: Path, sim_state: SimulatorState
) -> None:
    need_binary(PrivateRedis.available(),
                "redis-server is not installed: the test kills a private instance")
    with private_redis(tmp_path) as broker, contextlib.contextmanager(make_stack)(
        sqlite_url, broker.url(), tmp_path, sim_state
    ) as stack:
        made = [
            stack.state.add_order({"payment_method": "braintree", "shipped": True,
                                   "items": [{"sku": "CAP", "qty": 1, "price": 10}]})
            for _ in range(4)
        ]
        # Each refund's first call waits 1.5 s (the client's timeout is 2 s): its message is
        # delivered and unacknowledged (tasks acknowledge late) while the consumer polls for more.
        stack.state.add_fault({"route": "order_get", "kind": "latency", "ms": 1500, "count": 3})
        worker = stack.start_worker(4)
        running = stack.enqueue(
            *({"idempotency_key": f"redis-loss-{n}", "order_id": order["order_id"]}
              for n, order in enumerate(made[:3]))
        )
        deadline = time.monotonic() + 30
        while stack.state.stats()["in_flight"] < len(running):
            assert time.monotonic() < deadline, stack.logs()
            time.sleep(0.05)
        broker.kill()  # the tasks finish while Redis is away; their acknowledgements fail
        stack.wait_settled([r.refund_id for r in running], timeout=30)
        time.sleep(1)
        broker.start()  # empty: no persistence
        # The worker is still there, reconnects, and takes new work.
        later = stack.enqueue({"idempotency_key": "after-redis-loss",
                               "order_id": made[3]["order_id"]})
        views = stack.wait_settled([r.refund_id for r in running + later], timeout=60)
        assert worker.poll() is None, f"the worker exited ({worker.returncode}):\n{stack.logs()}"
        assert {view.status.value for view in views.values()} == {"succeeded"}
        assert len(stack.state.creditmemos()) == len(made)
        assert "AttributeError" not in stack.logs()
