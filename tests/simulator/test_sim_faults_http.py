"""Each fault kind over a real socket, including commit-then-fail (the credit memo exists)."""

from __future__ import annotations

import time

import httpx
import pytest

from refund_worker.simulator import SimulatorState
from tests.simulator.sim_support import order

DROPPED = (httpx.RemoteProtocolError, httpx.ReadError)
REFUND = {"items": [{"order_item_id": 4, "qty": 1}], "arguments": {"shipping_amount": 0}}


def test_fixed_latency_on_one_route(
    client: httpx.Client, control: httpx.Client, state: SimulatorState
) -> None:
    state.add_fault({"route": "order_get", "kind": "latency", "ms": 150})
    started = time.perf_counter()
    assert client.get("/V1/orders/1").status_code == 200
    assert time.perf_counter() - started >= 0.15
    assert client.get("/V1/creditmemo/1").status_code == 200
    durations = {r["route"]: r["duration_ms"] for r in control.get("/requests").json()}
    assert durations["order_get"] >= 150
    assert durations["creditmemo_get"] < 150  # the other route is not delayed


def test_latency_adds_to_another_fault(client: httpx.Client, state: SimulatorState) -> None:
    state.add_fault({"route": "*", "kind": "latency", "ms": 100})
    state.add_fault({"route": "order_get", "kind": "status", "status": 503})
    started = time.perf_counter()
    assert client.get("/V1/orders/1").status_code == 503
    assert time.perf_counter() - started >= 0.1


def test_status_500_is_magentos_internal_error(client: httpx.Client, state: SimulatorState) -> None:
    state.add_fault({"route": "order_refund", "kind": "status", "status": 500, "count": 1})
    response = client.post("/V1/order/2/refund", json=REFUND)
    assert response.status_code == 500
    assert response.json()["message"].startswith(
        "Internal Error. Details are available in Magento log file. Report ID: webapi-"
    )
    assert len(state.creditmemos()) == 2  # nothing committed
    assert client.post("/V1/order/2/refund", json=REFUND).status_code == 200  # count spent
    assert state.faults.list() == []


@pytest.mark.parametrize("status", [502, 503])
def test_gateway_errors_are_html(client: httpx.Client, state: SimulatorState, status: int) -> None:
    state.add_fault({"route": "creditmemo_search", "kind": "status", "status": status})
    response = client.get("/V1/creditmemos", params={"searchCriteria": ""})
    assert response.status_code == status
    assert response.headers["content-type"] == "text/html"
    assert str(status) in response.text


def test_429_has_retry_after(client: httpx.Client, state: SimulatorState) -> None:
    state.add_fault({"route": "order_refund", "kind": "status", "status": 429, "retry_after": 2})
    response = client.post("/V1/order/2/refund", json=REFUND)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.json() == {"message": "Too Many Requests"}


def test_reset_drops_the_connection_and_commits_nothing(
    client: httpx.Client, state: SimulatorState
) -> None:
    state.add_fault({"route": "order_refund", "kind": "reset", "count": 1})
    with pytest.raises(DROPPED):
        client.post("/V1/order/2/refund", json=REFUND)
    assert len(state.creditmemos()) == 2
    assert order(client, 2).get("total_refunded") is None  # null until a refund


def test_hang_until_the_client_gives_up(client: httpx.Client, state: SimulatorState) -> None:
    state.add_fault({"route": "order_refund", "kind": "hang", "hang_seconds": 5})
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        client.post("/V1/order/2/refund", json=REFUND, timeout=0.3)
    assert time.perf_counter() - started < 2
    assert len(state.creditmemos()) == 2


def test_hang_ends_after_hang_seconds(client: httpx.Client, state: SimulatorState) -> None:
    state.add_fault({"route": "order_get", "kind": "hang", "hang_seconds": 0.2})
    started = time.perf_counter()
    with pytest.raises(DROPPED):
        client.get("/V1/orders/1", timeout=3)
    assert 0.2 <= time.perf_counter() - started < 2


def test_commit_then_500(client: httpx.Client, state: SimulatorState) -> None:
    state.add_fault({"route": "order_refund", "kind": "commit_then_500", "count": 1})
    response = client.post("/V1/order/2/refund", json=REFUND)
    assert response.status_code == 500
    memos = state.creditmemos()
    assert [m["order_id"] for m in memos] == [4, 9, 2]
    assert order(client, 2)["total_refunded"] == 7.0


def test_commit_then_drop(client: httpx.Client, state: SimulatorState) -> None:
    state.add_fault({"route": "invoice_refund", "kind": "commit_then_drop"})
    with pytest.raises(DROPPED):
        client.post("/V1/invoice/1/refund", json={"isOnline": True})
    assert state.creditmemos()[-1]["invoice_id"] == 1
    assert order(client, 1)["state"] == "closed"


def test_commit_then_hang(client: httpx.Client, state: SimulatorState) -> None:
    state.add_fault({"route": "creditmemo_refund", "kind": "commit_then_hang", "hang_seconds": 5})
    body = {"creditmemo": {"order_id": 2, "items": [], "base_grand_total": 10}}
    with pytest.raises(httpx.ReadTimeout):
        client.post("/V1/creditmemo/refund", json=body, timeout=0.3)
    assert state.creditmemos()[-1]["base_grand_total"] == 10


def test_commit_then_fail_waits_for_a_success(client: httpx.Client, state: SimulatorState) -> None:
    state.add_fault({"route": "order_refund", "kind": "commit_then_500", "count": 1})
    rejected = client.post("/V1/order/5/refund", json={})
    assert rejected.status_code == 400  # not committed: the fault is not spent
    assert client.post("/V1/order/2/refund", json=REFUND).status_code == 500
    assert client.post("/V1/order/2/refund", json=REFUND).status_code == 200


def test_restricted_to_one_order(client: httpx.Client, state: SimulatorState) -> None:
    state.add_fault({"route": "order_refund", "kind": "status", "status": 503, "order_id": 2})
    assert client.post("/V1/order/7/refund", json={}).status_code == 200
    assert client.post("/V1/order/2/refund", json={}).status_code == 503


def test_invoice_and_memo_routes_match_the_order_too(
    client: httpx.Client, state: SimulatorState
) -> None:
    state.add_fault({"kind": "status", "status": 502, "order_id": 4})
    assert client.get("/V1/invoices/4").status_code == 502
    assert client.get("/V1/creditmemo/1").status_code == 502  # credit memo 1 is order 4's
    assert client.get("/V1/creditmemo/2").status_code == 200
    body = {"creditmemo": {"order_id": 4, "items": [], "base_grand_total": 1}}
    assert client.post("/V1/creditmemo/refund", json=body).status_code == 502


def test_restricted_to_one_invoice_or_memo(client: httpx.Client, state: SimulatorState) -> None:
    state.add_fault({"route": "invoice_get", "kind": "status", "status": 503, "invoice_id": 2})
    state.add_fault(
        {"route": "creditmemo_get", "kind": "status", "status": 503, "creditmemo_id": 2}
    )
    assert client.get("/V1/invoices/1").status_code == 200
    assert client.get("/V1/invoices/2").status_code == 503
    assert client.get("/V1/creditmemo/1").status_code == 200
    assert client.get("/V1/creditmemo/2").status_code == 503


def test_probability_is_reproducible(client: httpx.Client, state: SimulatorState) -> None:
    def run() -> list[int]:
        state.clear_faults()
        state.add_fault(
            {"route": "order_get", "kind": "status", "status": 503, "probability": 0.5, "seed": 7}
        )
        return [client.get("/V1/orders/1").status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert 0 < first.count(503) < 20


def test_faults_show_in_stats_and_the_request_log(
    client: httpx.Client, control: httpx.Client, state: SimulatorState
) -> None:
    state.add_fault({"route": "order_get", "kind": "status", "status": 503, "count": 1})
    state.add_fault({"route": "order_refund", "kind": "reset", "count": 1})
    client.get("/V1/orders/1")
    with pytest.raises(DROPPED):
        client.post("/V1/order/2/refund", json={})
    client.get("/V1/orders/1")
    stats = control.get("/stats").json()
    assert stats["by_route"]["order_get"] == {"200": 1, "503": 1}
    assert stats["by_route"]["order_refund"] == {"0": 1}
    log = [r for r in control.get("/requests").json() if r["route"] != "_simulator"]
    assert [(r["route"], r["status"], r["fault"]) for r in log] == [
        ("order_get", 503, "status"),
        ("order_refund", 0, "reset"),
        ("order_get", 200, None),
    ]
