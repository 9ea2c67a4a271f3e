"""A real client library from PyPI (pymagento) driving the simulator on a real socket.

pymagento is what integrations use to talk to Magento: it builds its own URLs
(``/rest/<scope>/V1/...``), searchCriteria and pagination, and raises its own exceptions on
Magento's error bodies. Everything here goes through it, from the admin token to a refund.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from magento import Magento, make_field_value_query
from magento.exceptions import MagentoException

from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import RunningSimulator

LIBRARY = Path(__file__).resolve().parents[1] / "data" / "orders"


@pytest.fixture
def shop(sim: RunningSimulator, state: SimulatorState) -> Magento:
    """A pymagento client logged in with an admin token, the library's several-invoices order."""
    state.add_order(json.loads((LIBRARY / "several-invoices-stripe.json").read_text()))
    anonymous = Magento(token="none", base_url=sim.url, scope="default")
    token = anonymous.post_json_api(
        "/V1/integration/admin/token", json={"username": "admin", "password": "admin123"}
    )
    assert isinstance(token, str)
    return Magento(token=token, base_url=sim.url)  # scope "all": /rest/all/V1/...


def test_token_order_by_increment_id_invoices_memos_and_a_refund(shop: Magento) -> None:
    order: Any = shop.get_order_by_increment_id("000000107")
    assert order is not None
    assert (order["entity_id"], order["state"], order["grand_total"]) == (107, "complete", 279.8)
    assert order["payment"]["method"] == "stripe_payments"
    assert shop.get_order_by_increment_id("999999999") is None

    invoices = list(shop.get_order_invoices(order["entity_id"]))
    assert [(i["entity_id"], i["transaction_id"]) for i in invoices] == [
        (307, "ch_A1"),
        (308, "ch_B2"),
    ]
    by_order = make_field_value_query("order_id", order["entity_id"])
    assert list(shop.get_credit_memos(query=by_order)) == []

    memo_id = shop.post_json_api(
        "/V1/invoice/308/refund",
        json={
            "isOnline": True,
            "comment": {"comment": "refund-worker:r1", "is_visible_on_front": 0},
        },
    )
    [memo] = list(shop.get_credit_memos(query=by_order))
    assert (memo["entity_id"], memo["invoice_id"], memo["grand_total"]) == (memo_id, 308, 48.71)
    assert memo["comments"][0]["comment"] == "refund-worker:r1"
    assert shop.get_order(107)["total_refunded"] == 48.71
    assert shop.get_invoice(308)["base_total_refunded"] == 48.71

    with pytest.raises(MagentoException) as refused:
        shop.post_json_api("/V1/invoice/308/refund", json={"isOnline": True})
    assert "We can't create creditmemo for the invoice." in str(refused.value)


def test_orders_items_and_the_store_structure(shop: Magento) -> None:
    assert shop.get_total_orders_count() == 12  # the demo's 11 and the imported one
    last = shop.get_last_orders(limit=2)
    assert [o["increment_id"] for o in last] == ["000000107", "000000011"]
    found = shop.get_orders_by_increment_ids(["000000002", "000000107"])
    assert sorted(found) == ["000000002", "000000107"]
    assert [o["entity_id"] for o in shop.get_orders(status="closed")] == [4]
    assert shop.get_order_item(1018)["sku"] == "24-WB04"
    items = list(shop.get_orders_items(sku="24-WB04"))
    assert [i["item_id"] for i in items] == [1018]
    assert [w["code"] for w in shop.get_websites()] == ["admin", "base"]
    assert {v["code"] for v in shop.get_store_views()} == {"admin", "default", "us"}
    assert [c["code"] for c in shop.get_store_configs(["us"])] == ["us"]
    assert [g["id"] for g in shop.get_store_groups()] == [0, 1]


def test_paging_stops_on_total_count(shop: Magento) -> None:
    # pymagento pages with searchCriteria[currentPage] and stops at total_count; the simulator
    # answers a page past the last with the last page again, as Magento does.
    pages = list(shop.get_orders(query={}, page_size=5))
    assert len(pages) == 12
    assert len({o["entity_id"] for o in pages}) == 12
