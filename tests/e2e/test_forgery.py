"""Issue #18's two forgery paths, replayed against real processes: the HTTP API and a worker as
subprocesses, the simulator on a real socket, PostgreSQL. A second producer reads what it can
and writes the victim's marker where it can; the victim ends refunded once, on its own credit
memo, and never "succeeded" on someone else's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from refund_worker.api.keys import generate_api_key
from refund_worker.simulator import SimulatorState
from tests.e2e.conftest import SIM_TOKEN, Stack, make_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class World:
    """The stack, an API process, and a client per key."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.keys: dict[str, str] = {}
        entries = []
        for name, role in (("erp", "producer"), ("returns", "producer"), ("ops", "operator")):
            key, digest = generate_api_key()
            self.keys[name] = key
            entries.append({"name": name, "role": role, "sha256": digest})
        self.stack.env["REFUND_WORKER_API_KEYS"] = json.dumps(entries)
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.stack.start("api", "--host", "127.0.0.1", "--port", str(port), name="api")
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.stack.logs()
            time.sleep(0.2)

    def client(self, name: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.keys[name]}"}, timeout=30
        )

    def start_worker(self, token: str = SIM_TOKEN) -> subprocess.Popen[bytes]:
        env = {**self.stack.env, "REFUND_WORKER_MAGENTO_TOKEN": token}
        log = (self.stack.log_dir / f"worker-{len(self.stack.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "refund_worker.cli", "worker", "--concurrency", "4",
             "-n", f"forgery-{len(self.stack.processes)}-{os.getpid()}@%h",
             "--without-gossip", "--without-mingle"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.stack.processes.append(process)
        return process

    def wait(self, client: httpx.Client, refund_id: str, statuses: set[str]) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            view: dict[str, Any] = client.get(f"/v1/refunds/{refund_id}").json()
            if view.get("status") in statuses:
                return view
            assert time.monotonic() < deadline, f"{view}\n{self.stack.logs()}"
            time.sleep(0.2)


@pytest.fixture
def world(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[World]:
    state = SimulatorState(tokens={SIM_TOKEN: None})
    for stack in make_stack(pg_url, redis_url, tmp_path, state):
        yield World(stack)


def _order(world: World) -> tuple[int, int, int]:
    order = world.stack.state.add_order({
        "payment_method": "checkmo",
        "items": [{"sku": "TV", "qty": 1, "price": 900}, {"sku": "CABLE", "qty": 1, "price": 1}],
    })
    items = {item["sku"]: int(item["item_id"]) for item in order["items"]}
    return int(order["order_id"]), items["TV"], items["CABLE"]


def _forge(world: World, order_id: int, victim: str, cable: int, forger: httpx.Client) -> int:
    """Everything a second producer can try: read the victim, write its marker in a comment,
    then (with help from inside the shop) put the marker on its own credit memo."""
    assert forger.get(f"/v1/refunds/{victim}").status_code == 404
    assert forger.get("/v1/refunds", params={"idempotency_key": "tv-1"}).json()["refunds"] == []
    forged = forger.post("/v1/refunds", json={
        "idempotency_key": "tv-1", "order_id": order_id,
        "items": [{"order_item_id": cable, "qty": 1}],
        "comment": f"cable [refund-worker:{victim}]",
    })
    assert forged.status_code == 422
    assert forged.json()["detail"][0]["field"] == "comment"
    honest = forger.post("/v1/refunds", json={
        "idempotency_key": "tv-1", "order_id": order_id,
        "items": [{"order_item_id": cable, "qty": 1}], "comment": "cable",
    })
    assert honest.status_code == 202  # its own key space: "tv-1" is the victim's key too
    done = world.wait(forger, honest.json()["refund_id"], {"succeeded"})
    memo_id = int(done["creditmemo_id"])
    world.stack.state.add_creditmemo_comment({
        "parent_id": memo_id, "comment": f"[refund-worker:{victim}]",
        "is_visible_on_front": 0, "is_customer_notified": 0,
    })
    return memo_id


def _refunded_once_on_its_own_memo(world: World, view: dict[str, Any], order_id: int,
                                   forged_memo: int) -> None:
    assert view["status"] == "succeeded"
    assert view["creditmemo_id"] != forged_memo
    memo = world.stack.state.creditmemo(int(view["creditmemo_id"]))
    assert float(memo["grand_total"]) == pytest.approx(900)
    order = world.stack.state.order(order_id)
    assert float(order["total_refunded"]) == pytest.approx(901)  # 900 once, and the cable


def test_without_an_operator_the_victim_is_refunded_once(world: World) -> None:
    order_id, tv, cable = _order(world)
    world.stack.state.add_fault(
        {"route": "order_refund", "kind": "status", "status": 503, "count": 1})
    erp, returns = world.client("erp"), world.client("returns")
    victim = erp.post("/v1/refunds", json={
        "idempotency_key": "tv-1", "order_id": order_id,
        "items": [{"order_item_id": tv, "qty": 1}],
    }).json()["refund_id"]
    world.start_worker()
    world.wait(erp, victim, {"retrying", "succeeded"})  # the 503 came first

    forged_memo = _forge(world, order_id, victim, cable, returns)

    _refunded_once_on_its_own_memo(
        world, world.wait(erp, victim, {"succeeded", "failed", "needs_attention"}), order_id,
        forged_memo)


def test_through_replay_the_victim_is_refunded_once(world: World) -> None:
    order_id, tv, cable = _order(world)
    erp, returns, ops = world.client("erp"), world.client("returns"), world.client("ops")
    victim = erp.post("/v1/refunds", json={
        "idempotency_key": "tv-1", "order_id": order_id,
        "items": [{"order_item_id": tv, "qty": 1}],
    }).json()["refund_id"]
    bad = world.start_worker(token="a-wrong-token")
    failed = world.wait(erp, victim, {"failed"})
    assert "401" in str(failed["last_error"]) or "authoriz" in str(failed["last_error"]).lower()
    bad.terminate()
    bad.wait(30)
    world.start_worker()

    forged_memo = _forge(world, order_id, victim, cable, returns)
    replayed = ops.post(f"/v1/refunds/{victim}/replay", json={"reason": "token fixed"})
    assert replayed.status_code == 202

    view = world.wait(erp, victim, {"succeeded", "failed", "needs_attention"})
    _refunded_once_on_its_own_memo(world, view, order_id, forged_memo)
    assert view["replayed_by"] == "ops"
