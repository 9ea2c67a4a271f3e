"""End to end, several shops: a real `refund-worker worker` process on the machine's Redis and
PostgreSQL, one simulator on a real socket serving two Magento installations under /eu and /us
(REFUND_WORKER_SHOPS). The same order ids in both; us misbehaves (429, 503, a commit the worker
never hears of); every refund lands in its own shop exactly once, emails too, and eu's refunds
go through at their first attempt."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from refund_worker.db import Database, upgrade
from refund_worker.settings import Settings
from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import running_simulator
from tests.e2e.conftest import FAST, SIM_TOKEN, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ORDERS = 6


@pytest.fixture
def shops_stack(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    states = {name: SimulatorState(tokens={SIM_TOKEN: None}) for name in ("eu", "us")}
    with running_simulator(SimulatorState(tokens={SIM_TOKEN: None}), shops=states) as sim:
        shops = [{"name": name, "url": f"{sim.url}/{name}", "token": SIM_TOKEN, "timeout": 2,
                  "rate_limit": 200, "max_in_flight": 3} for name in states]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REFUND_WORKER_")},
            **FAST,
            "REFUND_WORKER_BROKER_URL": redis_url,
            "REFUND_WORKER_DATABASE_URL": pg_url,
            "REFUND_WORKER_SHOPS": json.dumps(shops),
            "REFUND_WORKER_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        settings = Settings(_env_file=None, broker_url=redis_url, database_url=pg_url,
                            shops=shops, **{k.removeprefix("REFUND_WORKER_").lower(): v
                                            for k, v in FAST.items()})
        database = Database.from_url(pg_url)
        upgrade(database.engine)
        log_dir = tmp_path / "logs"
        log_dir.mkdir()
        stack = Stack(env=env, settings=settings, database=database, simulator=sim,
                      log_dir=log_dir)
        stack.states = states  # type: ignore[attr-defined]
        try:
            yield stack
        finally:
            stack.stop_all()
            database.dispose()


def test_two_shops_each_refund_in_its_own_shop_once(shops_stack: Stack) -> None:
    stack = shops_stack
    states: dict[str, SimulatorState] = stack.states  # type: ignore[attr-defined]
    made = {name: [state.add_order({"payment_method": "checkmo", "items": [
        {"sku": f"{name}-{n}", "qty": 1, "price": 10 + n}]}) for n in range(ORDERS)]
        for name, state in states.items()}
    assert [o["order_id"] for o in made["eu"]] == [o["order_id"] for o in made["us"]]
    us = states["us"]
    us.add_fault({"route": "order_get", "kind": "status", "status": 429, "retry_after": 2,
                  "count": 1})
    us.add_fault({"route": "order_get", "kind": "status", "status": 503, "count": 3})
    us.add_fault({"route": "order_refund", "kind": "commit_then_500", "count": 1})
    receipts = stack.enqueue(*(
        {"idempotency_key": f"{name}-{order['order_id']}", "shop": name,
         "order_id": order["order_id"], "notify_customer": True}
        for name in ("us", "eu") for order in made[name]))
    stack.start_worker(4)
    views = stack.wait_settled([receipt.refund_id for receipt in receipts], timeout=90)

    by_shop: dict[str, list[object]] = {"eu": [], "us": []}
    for view in views.values():
        assert view.status.value == "succeeded", (view.idempotency_key, view.last_error)
        assert view.notification_status.value == "sent"
        assert view.idempotency_key.startswith(f"{view.shop}-")
        by_shop[view.shop].append(view)
    for name, state in states.items():
        memos = state.creditmemos()
        assert len(memos) == ORDERS  # one per order, none twice, none in the other shop
        assert sorted(m["order_id"] for m in memos) == sorted(o["order_id"] for o in made[name])
        assert {int(m["grand_total"]) for m in memos} == {10 + n for n in range(ORDERS)}
        assert all(m.get("email_sent") for m in memos)
        recorded = {view.creditmemo_id for view in by_shop[name]}  # type: ignore[attr-defined]
        assert recorded == {m["entity_id"] for m in memos}
    assert all(view.attempts == 1 for view in by_shop["eu"])  # type: ignore[attr-defined]
    assert sum(view.attempts for view in by_shop["us"]) > ORDERS  # type: ignore[attr-defined]
    # Every slot of the in-flight caps was given back.
    client = redis.Redis.from_url(stack.settings.broker_dsn)
    try:
        assert client.zcard("refund-worker:inflight:eu") == 0
        assert client.zcard("refund-worker:inflight:us") == 0
    finally:
        client.close()
    assert SIM_TOKEN not in stack.logs()
