"""Refunds of one order are serialized: never more refunded than paid, whoever calls."""

from __future__ import annotations

import asyncio
import threading

import httpx

from refund_worker.simulator import SimulatorState
from refund_worker.simulator.errors import MagentoError
from refund_worker.simulator.testing import RunningSimulator

ONE = {"items": [], "arguments": {"shipping_amount": 0}}


def test_threads_refunding_one_order(state: SimulatorState) -> None:
    made = state.add_order({"shipped": True, "items": [{"sku": "X", "qty": 40, "price": 1}]})
    body = {"items": [{"order_item_id": made["items"][0]["item_id"], "qty": 1}]}
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            try:
                state.refund_order(made["order_id"], body)
                result = "ok"
            except MagentoError:
                result = "rejected"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 40
    data = state.order(made["order_id"])
    assert (data["total_refunded"], data["items"][0]["qty_refunded"], data["state"]) == (
        40.0,
        40.0,
        "closed",
    )
    assert len(state.creditmemos()) == 2 + 40


def test_concurrent_http_refunds(sim: RunningSimulator, state: SimulatorState) -> None:
    made = state.add_order({"shipped": True, "items": [{"sku": "X", "qty": 25, "price": 2}]})
    item_id = made["items"][0]["item_id"]
    body = {"items": [{"order_item_id": item_id, "qty": 1}]}

    async def run() -> list[int]:
        headers = {"Authorization": "Bearer sim-token"}
        async with httpx.AsyncClient(base_url=f"{sim.url}/rest", headers=headers) as http:
            responses = await asyncio.gather(
                *[http.post(f"/V1/order/{made['order_id']}/refund", json=body) for _ in range(50)]
            )
        return [response.status_code for response in responses]

    statuses = asyncio.run(run())
    assert (statuses.count(200), statuses.count(400)) == (25, 25)
    assert state.order(made["order_id"])["total_refunded"] == 50.0
