"""POST /V1/invoice/{invoiceId}/refund: online and offline, payment methods, invoice totals."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from refund_worker.simulator import SimulatorState
from tests.simulator.sim_support import order, validation_error

CANNOT = "We can't create creditmemo for the invoice."


def refund(client: httpx.Client, invoice_id: int, body: Any = None) -> httpx.Response:
    return client.post(f"/V1/invoice/{invoice_id}/refund", json={} if body is None else body)


def test_online_refund_of_an_online_invoice(client: httpx.Client) -> None:
    body = {
        "isOnline": True,
        "items": [{"order_item_id": 1, "qty": 1}],
        "arguments": {"shipping_amount": 0},
    }
    first = refund(client, 1, body)
    assert first.status_code == 200
    memo = client.get(f"/V1/creditmemo/{first.json()}").json()
    assert memo["invoice_id"] == 1
    assert memo["transaction_id"] == "txn-000001-0001-refund"
    assert memo["grand_total"] == 56.29  # 52 + 4.29 tax
    after = order(client, 1)
    assert after["total_online_refunded"] == 56.29
    assert (after["state"], after["status"]) == ("complete", "complete")
    invoice = client.get("/V1/invoices/1").json()
    assert (invoice["base_total_refunded"], invoice["is_used_for_refund"]) == (56.29, 1)
    second = client.get(f"/V1/creditmemo/{refund(client, 1, {'isOnline': True}).json()}").json()
    assert second["transaction_id"] == "txn-000001-0001-refund-2"
    assert second["grand_total"] == round(153.97 - 56.29, 2)
    after = order(client, 1)
    assert (after["state"], after["status"]) == ("closed", "closed")
    assert client.get("/V1/invoices/1").json()["base_total_refunded"] == 153.97


def test_offline_refund_of_an_online_invoice(client: httpx.Client) -> None:
    memo = client.get(f"/V1/creditmemo/{refund(client, 1, {'isOnline': False}).json()}").json()
    assert "transaction_id" not in memo
    after = order(client, 1)
    assert after["total_offline_refunded"] == 153.97
    assert "total_online_refunded" not in after  # null: nothing was refunded online


@pytest.mark.parametrize("is_online", [True, False])
def test_an_invoice_paid_offline_cannot_be_refunded(
    client: httpx.Client, state: SimulatorState, is_online: bool
) -> None:
    response = refund(client, 2, {"isOnline": is_online})
    assert response.status_code == 400
    assert response.json() == validation_error(CANNOT)
    assert len(state.creditmemos()) == 2


def test_the_free_method_is_accepted(client: httpx.Client, state: SimulatorState) -> None:
    made = state.add_order(
        {
            "payment_method": "free",
            "shipped": True,
            "items": [{"sku": "GIFT", "qty": 1, "price": 3}],
        }
    )
    response = refund(client, made["invoice_id"], {"isOnline": True})
    assert response.status_code == 200
    assert order(client, made["order_id"])["total_offline_refunded"] == 3.0


def test_invoice_refund_uses_the_default_status(client: httpx.Client) -> None:
    body = {"items": [{"order_item_id": 17, "qty": 1}], "arguments": {"shipping_amount": 0}}
    assert refund(client, 9, body).status_code == 200
    after = order(client, 11)
    assert (after["state"], after["status"]) == ("processing", "processing")


def test_invoice_refund_after_an_order_refund(client: httpx.Client) -> None:
    body = {"items": [{"order_item_id": 1, "qty": 1}], "arguments": {"shipping_amount": 0}}
    assert client.post("/V1/order/1/refund", json=body).status_code == 200
    response = refund(client, 1, {"items": [{"order_item_id": 1, "qty": 2}]})
    assert response.json() == validation_error(
        'The quantity to creditmemo must not be greater than the unrefunded quantity for product SKU "HOODIE-M".',  # noqa: E501
        "The most money available to refund is 97.68.",
        "The quantity to refund must not be greater than the unrefunded quantity.",
    )


def test_fully_refunded_invoice(client: httpx.Client) -> None:
    assert refund(client, 1).status_code == 200
    assert refund(client, 1).json() == validation_error(
        "A creditmemo can not be created when an order has a status of closed",
        "The credit memo's total must be positive.",
        CANNOT,
    )


def test_held_orders_invoice(client: httpx.Client) -> None:
    assert refund(client, 5).json() == validation_error(
        "A creditmemo can not be created when an order has a status of holded"
    )


def test_unknown_invoice_and_zero_id(client: httpx.Client) -> None:
    assert refund(client, 999).status_code == 404
    zero = refund(client, 0)
    assert (zero.status_code, zero.json()["message"]) == (
        400,
        "An ID is needed. Set the ID and try again.",
    )


def test_get_invoice_and_search_by_order(client: httpx.Client) -> None:
    invoice = client.get("/V1/invoices/1").json()
    assert (invoice["order_id"], invoice["state"], invoice["transaction_id"]) == (
        1,
        2,
        "txn-000001-0001",
    )
    assert (invoice["grand_total"], invoice["base_grand_total"], invoice["shipping_amount"]) == (
        153.97,
        153.97,
        10.0,
    )
    assert [(i["order_item_id"], i["qty"], i["sku"], i["price"]) for i in invoice["items"]] == [
        (1, 2.0, "HOODIE-M", 52.0),
        (2, 1.0, "TEE-S", 29.0),
    ]
    assert "transaction_id" not in client.get("/V1/invoices/2").json()  # paid offline
    found = client.get(
        "/V1/invoices",
        params={
            "searchCriteria[filterGroups][0][filters][0][field]": "order_id",
            "searchCriteria[filterGroups][0][filters][0][value]": "7",
        },
    ).json()
    assert [(i["entity_id"], i["order_id"]) for i in found["items"]] == [(6, 7)]
    assert found["total_count"] == 1
    assert client.get("/V1/invoices/999").status_code == 404
