"""The /_simulator control API, the Python API of SimulatorState, and the seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from refund_worker.simulator import SimulatorState
from refund_worker.simulator.orderspec import SpecError
from refund_worker.simulator.search import parse
from refund_worker.simulator.seeds import SeedError
from tests.simulator.sim_support import order

SPEC = {
    "payment_method": "braintree",
    "shipping": 4,
    "items": [
        {"sku": "A", "qty": 2, "price": 10, "tax": 0.8, "qty_shipped": 1},
        {"sku": "B", "qty": 1.5, "price": 4, "is_qty_decimal": True},
    ],
}


def test_create_an_order(control: httpx.Client, client: httpx.Client) -> None:
    response = control.post("/orders", json=SPEC)
    assert response.status_code == 200
    made = response.json()
    assert made["order_id"] == 12
    assert made["invoice_id"] == 10
    assert (made["state"], made["status"], made["online"]) == ("processing", "processing", True)
    assert [i["sku"] for i in made["items"]] == ["A", "B"]
    data = order(client, made["order_id"])
    assert (data["grand_total"], data["total_paid"], data["tax_amount"]) == (31.6, 31.6, 1.6)
    assert data["items"][0]["qty_shipped"] == 1.0
    assert data["items"][1]["is_qty_decimal"] == 1
    invoice = client.get(f"/V1/invoices/{made['invoice_id']}").json()
    assert invoice["transaction_id"] == made["transaction_id"]
    assert control.get(f"/orders/{made['order_id']}").json() == data


def test_create_orders_in_a_batch(control: httpx.Client) -> None:
    specs = [SPEC, {**SPEC, "invoiced": False, "payment_method": "checkmo"}]
    made = control.post("/orders:batch", json={"orders": specs}).json()["orders"]
    assert [(m["order_id"], m["invoice_id"], m["state"]) for m in made] == [
        (12, 10, "processing"),
        (13, None, "new"),
    ]
    assert control.post("/orders:batch", json=[SPEC]).json()["orders"][0]["order_id"] == 14


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "items must be a non-empty list"),
        ({"items": [{"qty": 1, "price": 1}]}, "items[0].sku must be a non-empty string"),
        ({"items": [{"sku": "A", "qty": 0, "price": 1}]}, "items[0].qty must be greater than 0"),
        ({"items": [{"sku": "A", "qty": 1.5, "price": 1}]}, "whole number unless is_qty_decimal"),
        ({"items": [{"sku": "A", "qty": 1}]}, "items[0].price is required"),
        ({"items": [{"sku": "A", "qty": 1, "price": 1, "qty_shipped": 2}]}, "must not exceed qty"),
        ({"state": "lost", "items": [{"sku": "A", "qty": 1, "price": 1}]}, "state must be one of"),
        ({"entity_id": 1, "items": [{"sku": "A", "qty": 1, "price": 1}]}, "order 1 already exists"),
        (
            {"items": [{"sku": "A", "qty": 1, "price": 1}], "refunds": [{"items": "x"}]},
            'refunds[0]: The "string" value\'s type is invalid',
        ),
    ],
)
def test_bad_order_specs(control: httpx.Client, spec: dict[str, Any], message: str) -> None:
    response = control.post("/orders", json=spec)
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_spec_states(state: SimulatorState) -> None:
    item = {"sku": "A", "qty": 2, "price": 5}
    assert state.add_order({"items": [item], "shipped": True})["state"] == "complete"
    assert state.add_order({"items": [item]})["state"] == "processing"
    assert state.add_order({"items": [item], "invoiced": False})["status"] == "pending"
    canceled = state.add_order({"items": [item], "invoiced": False, "state": "canceled"})
    assert state.order(canceled["order_id"])["items"][0]["qty_canceled"] == 2.0
    held = state.add_order({"items": [item], "state": "holded"})
    assert state.order(held["order_id"])["hold_before_state"] == "processing"
    refunded = state.add_order({"items": [item], "shipped": True, "refunds": [{}]})
    assert (refunded["state"], len(refunded["creditmemo_ids"])) == ("closed", 1)


def test_creditmemos_emails_and_bodies(
    control: httpx.Client, client: httpx.Client, state: SimulatorState
) -> None:
    memos = control.get("/creditmemos").json()
    assert [(m["entity_id"], m["order_id"], m["comments"][0]["comment"]) for m in memos] == [
        (1, 4, "demo: refunded in full"),
        (2, 9, "demo: hoodie returned"),
    ]
    client.post("/V1/order/2/refund", json={"notify": True, "comment": {"comment": "hi"}})
    assert [e["creditmemo_id"] for e in control.get("/emails").json()] == [3]
    assert control.get("/bodies").json() == [
        {
            "route": "order_refund",
            "method": "POST",
            "path": "/rest/V1/order/2/refund",
            "body": {"notify": True, "comment": {"comment": "hi"}},
        }
    ]
    assert state.request_bodies() == control.get("/bodies").json()


def test_request_log_is_bounded_and_limited(
    control: httpx.Client, client: httpx.Client, state: SimulatorState
) -> None:
    for _ in range(5):
        client.get("/V1/orders/1")
    last = control.get("/requests", params={"limit": 3}).json()
    assert len(last) == 3
    assert last[0]["path"] == "/rest/V1/orders/1"
    assert set(last[0]) == {"time", "method", "path", "route", "status", "duration_ms", "fault"}
    assert control.get("/requests", params={"limit": "x"}).status_code == 400
    small = SimulatorState(request_log_size=4)
    for n in range(10):
        small.record_request("GET", f"/{n}", "order_get", 200, 0.001)
    assert [r["path"] for r in small.requests()] == ["/6", "/7", "/8", "/9"]


def test_reset(control: httpx.Client, client: httpx.Client, tmp_path: Path) -> None:
    control.post("/orders", json=SPEC)
    control.post("/faults", json={"kind": "latency", "ms": 1})
    control.post("/config", json={"id_as_string": True})
    assert control.post("/reset").json() == {"reset": True, "seed": "demo"}
    assert control.get("/orders/12").status_code == 404
    assert control.get("/faults").json() == []
    assert control.get("/config").json()["id_as_string"] is False
    assert control.post("/reset", json={"seed": None}).json()["seed"] is None
    assert control.get("/stats").json()["orders"] == 0
    bad = control.post("/reset", json={"seed": str(tmp_path / "missing.json")})
    assert bad.status_code == 400
    assert "cannot read seed file" in bad.json()["message"]
    assert control.get("/stats").json()["orders"] == 0  # unchanged by the failed reset


def test_faults_crud(control: httpx.Client) -> None:
    first = control.post("/faults", json={"route": "order_get", "kind": "reset"}).json()
    more = control.post(
        "/faults", json={"faults": [{"kind": "latency", "ms": 5}, {"kind": "hang"}]}
    ).json()
    assert [f["id"] for f in more] == [first["id"] + 1, first["id"] + 2]
    assert len(control.get("/faults").json()) == 3
    assert control.delete(f"/faults/{first['id']}").json() == {"removed": first["id"]}
    assert control.delete(f"/faults/{first['id']}").status_code == 404
    assert len(control.get("/faults").json()) == 2
    assert control.delete("/faults").json() == {"cleared": True}
    assert control.get("/faults").json() == []
    bad = control.post("/faults", json={"kind": "status", "status": 418})
    assert bad.status_code == 400
    assert "'status' must be one of" in bad.json()["message"]


def test_config(control: httpx.Client) -> None:
    assert control.get("/config").json() == {
        "emails_enabled": True,
        "id_as_string": False,
        "admin_token_lifetime_s": 3600.0,
    }
    changed = control.post("/config", json={"emails_enabled": False}).json()
    assert changed["emails_enabled"] is False
    assert control.post("/config", json={"nope": 1}).status_code == 400
    assert control.post("/config", json={"id_as_string": "yes"}).status_code == 400


def test_stats(control: httpx.Client, client: httpx.Client) -> None:
    client.get("/V1/orders/1")
    client.get("/V1/orders/999")
    client.get("/V1/nothing")
    stats = control.get("/stats").json()
    assert stats["by_route"]["order_get"] == {"200": 1, "404": 1}
    assert stats["by_route"]["unmatched"] == {"404": 1}
    assert (stats["orders"], stats["invoices"], stats["creditmemos"]) == (11, 9, 2)
    assert stats["max_in_flight"] >= 1


def test_unknown_control_routes(control: httpx.Client) -> None:
    assert control.get("/nothing").status_code == 404
    assert control.put("/faults").status_code == 404
    assert control.get("/orders/abc").status_code == 400
    assert control.post("/orders", content=b"{").json() == {"message": "the body is not valid JSON"}


def test_python_api(state: SimulatorState) -> None:
    made = state.add_order({"items": [{"sku": "X", "qty": 1, "price": 9}], "shipped": True})
    memo_id = state.refund_order(made["order_id"], {"notify": True})
    assert state.creditmemos()[-1]["entity_id"] == memo_id
    assert state.emails()[-1]["creditmemo_id"] == memo_id
    fault = state.add_fault({"kind": "latency", "ms": 1})
    assert fault["id"] >= 1
    state.clear_faults()
    assert state.faults.list() == []
    with pytest.raises(SpecError):
        state.add_order({"items": []})
    state.reset()
    assert len(state.creditmemos()) == 2


def test_demo_catalogue_matches_its_documentation(state: SimulatorState) -> None:
    expected = {
        1: ("complete", "complete", "braintree", 1),
        2: ("complete", "complete", "checkmo", 2),
        3: ("processing", "processing", "stripe_payments", 3),
        4: ("closed", "closed", "banktransfer", 4),
        5: ("holded", "holded", "paypal_express", 5),
        6: ("canceled", "canceled", "cashondelivery", None),
        7: ("complete", "complete", "purchaseorder", 6),
        8: ("new", "pending", "checkmo", None),
        9: ("complete", "complete", "braintree", 7),
        10: ("payment_review", "payment_review", "paypal_express", 8),
        11: ("processing", "custom_processing", "braintree", 9),
    }
    everything = parse([], required_param=False)
    invoices = {i["order_id"]: i["entity_id"] for i in state.search_invoices(everything)["items"]}
    for order_id, (order_state, status, method, invoice_id) in expected.items():
        data = state.order(order_id)
        assert (data["state"], data["status"], data["payment"]["method"]) == (
            order_state,
            status,
            method,
        ), order_id
        assert invoices.get(order_id) == invoice_id, order_id
    assert state.order(3)["items"][0]["qty_shipped"] == 1.0
    assert state.order(7)["items"][0]["is_qty_decimal"] == 1
    assert state.order(9)["total_refunded"] == 52.0


def test_seed_file(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"orders": [SPEC, {**SPEC, "entity_id": 50}]}))
    seeded = SimulatorState(seed=str(path))
    assert [seeded.order(n)["entity_id"] for n in (1, 50)] == [1, 50]
    path.write_text(json.dumps([SPEC]))
    assert SimulatorState(seed=str(path)).order(1)["payment"]["method"] == "braintree"
    path.write_text("{")
    with pytest.raises(SeedError, match="not valid JSON"):
        SimulatorState(seed=str(path))
    path.write_text('{"orders": 3}')
    with pytest.raises(SeedError, match="must hold a list"):
        SimulatorState(seed=str(path))
    assert SimulatorState().stats()["orders"] == 0
