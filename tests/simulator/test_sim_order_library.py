"""The order library (tests/data/orders): stored as given, refunded by Magento's rules.

Each file is an order exported in Magento's entity form. The simulator must serve it back
unchanged and refund it as Magento 2.4 would. The expected figures below were worked out by hand
from the order's own numbers and Magento's collectors (docs/magento.md §1, docs/simulator.md
"Refund rules"); the comment beside each says how.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from refund_worker.simulator import SimulatorState
from tests.simulator.sim_support import validation_error

LIBRARY = Path(__file__).resolve().parents[1] / "data" / "orders"
FILES = sorted(path.stem for path in LIBRARY.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((LIBRARY / f"{name}.json").read_text())
    return data


@pytest.fixture
def imported(state: SimulatorState) -> SimulatorState:
    """The session simulator with the whole library imported (demo seed too)."""
    for name in FILES:
        state.add_order(load(name))
    return state


def subset(actual: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``actual`` that ``expected`` names (absent ones as None)."""
    return {key: actual.get(key) for key in expected}


def test_the_library_has_the_shapes_it_promises() -> None:
    assert len(FILES) >= 15
    readme = (LIBRARY / "README.md").read_text()
    assert [name for name in FILES if f"`{name}.json`" not in readme] == []


@pytest.mark.parametrize("name", FILES)
def test_served_back_as_stored(imported: SimulatorState, client: httpx.Client, name: str) -> None:
    data = load(name)
    order_id = data["order"]["entity_id"]
    assert client.get(f"/V1/orders/{order_id}").json() == data["order"]
    for invoice in data.get("invoices", []):
        assert client.get(f"/V1/invoices/{invoice['entity_id']}").json() == invoice
    for memo in data.get("creditmemos", []):
        assert client.get(f"/V1/creditmemo/{memo['entity_id']}").json() == memo
    found = client.get(
        "/V1/orders",
        params={
            "searchCriteria[filter_groups][0][filters][0][field]": "increment_id",
            "searchCriteria[filter_groups][0][filters][0][value]": data["order"]["increment_id"],
        },
    ).json()
    assert [o["entity_id"] for o in found["items"]] == [order_id]


def test_import_refuses_what_magento_could_not_hold(state: SimulatorState) -> None:
    data = load("simple-checkmo")
    state.add_order(data)
    with pytest.raises(ValueError, match="order 101 already exists"):
        state.add_order(data)
    broken = json.loads(json.dumps(data))
    broken["order"]["entity_id"] = 900
    for item in broken["order"]["items"]:
        item["order_id"] = 900
    broken["order"]["grand_total"] = "69.54"
    broken["order"]["items"][1]["parent_item_id"] = 77
    with pytest.raises(ValueError, match="must") as caught:
        state.add_order(broken)
    assert str(caught.value) == (
        "order.grand_total must be a number, got '69.54'; "
        "order.items[1].parent_item_id 77 is not an item of the order"
    )
    broken["order"]["grand_total"] = 69.54
    del broken["order"]["items"][1]["parent_item_id"]
    broken["invoices"][0]["order_id"] = 5
    broken["invoices"][0]["items"][0]["order_item_id"] = 4242
    with pytest.raises(ValueError, match="must") as caught:
        state.add_order(broken)
    assert str(caught.value) == (
        "invoices[0].order_id must be the order's entity_id 900; "
        "invoices[0].items[0].order_item_id must name an item of the order"
    )
    broken["invoices"][0]["order_id"] = 900
    broken["invoices"][0]["items"][0]["order_item_id"] = 1001
    with pytest.raises(ValueError, match=r"order items \[1001, 1002\] already exist"):
        state.add_order(broken)
    assert not state.has_order(900)


def test_import_over_http_and_with_the_cli_file(control: httpx.Client, tmp_path: Path) -> None:
    made = control.post("/orders", json=load("several-invoices-stripe")).json()
    assert (made["order_id"], made["invoice_ids"], made["state"]) == (107, [307, 308], "complete")
    bad = control.post("/orders", json={"order": {"entity_id": 1}})
    assert bad.status_code == 400
    assert "order.state must be one of" in bad.json()["message"]
    path = tmp_path / "orders.json"
    path.write_text(
        json.dumps(
            {"orders": [load("simple-checkmo"), {"items": [{"sku": "X", "qty": 1, "price": 2}]}]}
        )
    )
    seeded = SimulatorState(seed="demo", import_files=[str(path)])
    assert [seeded.order(n)["increment_id"] for n in (101, 102)] == ["000000101", "000000102"]
    seeded.reset()
    assert seeded.has_order(101)
    assert seeded.stats()["orders"] == 13


# --------------------------------------------------------------------------- refunds

# Each case: the file, the calls made in order, what each answers, and the figures after.
# A call is (route, path, body, expect) where expect is a status and, for 400, the messages.

CASES: dict[str, dict[str, Any]] = {
    # Bottles 3 x 7.00 (tax 1.73), one refunded, no shipping: row 21/3 = 7.00, tax 1.73/3 =
    # 0.5767 -> 0.58; the bag is a zero line, so the memo is not "last": tax stays 0.58.
    "simple-checkmo": {
        "calls": [
            (
                "order",
                "/V1/order/101/refund",
                {
                    "items": [{"order_item_id": 1002, "qty": 1}],
                    "notify": True,
                    "arguments": {"shipping_amount": 0},
                },
                200,
            )
        ],
        "memo": {
            "email_sent": 1,
            "subtotal": 7.0,
            "tax_amount": 0.58,
            "shipping_amount": 0.0,
            "grand_total": 7.58,
            "base_grand_total": 7.58,
        },
        "order": {
            "total_refunded": 7.58,
            "subtotal_refunded": 7.0,
            "tax_refunded": 0.58,
            "shipping_refunded": 0.0,
            "state": "complete",
            "status": "complete",
        },
        "items": {1001: (0.0, 0.0), 1002: (1.0, 7.0)},
    },
    # The fixture's stored totals (grand_total 100, row total 10, 30 paid) are kept:
    # RefundOrderTest's full request refunds 1 of 2 units (10/2 = 5.00), shipping 15 of 20
    # (ratio 0.75 -> 15.00) and adjustments 5.53/5.53: 20.00, money left -> complete. The
    # rest (5 + 5 shipping) closes it.
    "magento-fixture-stored-totals": {
        "calls": [
            (
                "order",
                "/V1/order/102/refund",
                {
                    "items": [{"order_item_id": 1003, "qty": 1}],
                    "comment": {"comment": "Test Comment", "is_visible_on_front": 1},
                    "arguments": {
                        "shipping_amount": 15,
                        "adjustment_positive": 5.53,
                        "adjustment_negative": 5.53,
                    },
                },
                200,
            ),
            ("order", "/V1/order/102/refund", {}, 200),
        ],
        "memo": {"subtotal": 5.0, "shipping_amount": 5.0, "grand_total": 10.0},
        "order": {
            "grand_total": 100.0,
            "subtotal": 100.0,
            "total_paid": 30.0,
            "total_refunded": 30.0,
            "shipping_refunded": 20.0,
            "adjustment_positive": 5.53,
            "adjustment_negative": 5.53,
            "state": "closed",
            "status": "closed",
        },
        "items": {1003: (2.0, 10.0)},
    },
    # Configurable: name the parent. 1 of 2 hoodies: 104/2 = 52.00, tax 8.58/2 = 4.29; the child
    # follows with qty 1 (no amounts); online on the capture transaction; stock goes to the child.
    "configurable-braintree": {
        "calls": [
            (
                "invoice",
                "/V1/invoice/303/refund",
                {"items": [{"order_item_id": 1005, "qty": 1}]},
                ["The creditmemo contains incorrect product items."],
            ),
            (
                "invoice",
                "/V1/invoice/303/refund",
                {
                    "isOnline": True,
                    "items": [{"order_item_id": 1004, "qty": 1}],
                    "arguments": {
                        "shipping_amount": 0,
                        "extension_attributes": {"return_to_stock_items": [1004]},
                    },
                },
                200,
            ),
        ],
        "memo": {
            "subtotal": 52.0,
            "tax_amount": 4.29,
            "grand_total": 56.29,
            "invoice_id": 303,
            "transaction_id": "6gw4r2hb-refund",
        },
        "memo_items": [(1004, 1.0, 52.0), (1005, 1.0, None)],
        "order": {"total_refunded": 56.29, "total_online_refunded": 56.29, "state": "complete"},
        "payment": {"base_amount_refunded_online": 56.29, "last_trans_id": "6gw4r2hb-refund"},
        "invoice": (303, {"base_total_refunded": 56.29, "is_used_for_refund": 1}),
        "items": {1004: (1.0, 52.0), 1005: (1.0, 0.0), 1006: (0.0, 0.0)},
        "stock": [{"product_id": 1090, "sku": "MH01-M-Black", "qty": 1.0}],
    },
    # Fixed-price bundle: name the parent; the selections follow by their selection quantity
    # (1, 2, 1). Everything: 77.00 + 6.35 tax + 5.00 shipping = 88.35 = paid -> closed.
    "bundle-fixed-banktransfer": {
        "calls": [
            (
                "order",
                "/V1/order/104/refund",
                {"items": [{"order_item_id": 1009, "qty": 1}]},
                ["The creditmemo contains incorrect product items."],
            ),
            ("order", "/V1/order/104/refund", {"items": [{"order_item_id": 1007, "qty": 1}]}, 200),
        ],
        "memo": {
            "subtotal": 77.0,
            "tax_amount": 6.35,
            "shipping_amount": 5.0,
            "grand_total": 88.35,
        },
        "memo_items": [(1007, 1.0, 77.0), (1008, 1.0, None), (1009, 2.0, None), (1010, 1.0, None)],
        "order": {"total_refunded": 88.35, "state": "closed", "status": "closed"},
        "items": {1007: (1.0, 77.0), 1008: (1.0, 0.0), 1009: (2.0, 0.0), 1010: (1.0, 0.0)},
    },
    # Dynamic bundle: name a selection. 1 of 2 jump ropes: 24/2 = 12.00, tax 1.98/2 = 0.99. The
    # dummy parent joins with its whole invoiced qty (createByInvoice), as Magento does.
    "bundle-dynamic-stripe": {
        "calls": [
            (
                "invoice",
                "/V1/invoice/305/refund",
                {"items": [{"order_item_id": 1011, "qty": 1}], "arguments": {"shipping_amount": 0}},
                [
                    "The credit memo's total must be positive.",
                    "The creditmemo contains incorrect product items.",
                ],
            ),
            (
                "invoice",
                "/V1/invoice/305/refund",
                {"items": [{"order_item_id": 1013, "qty": 1}], "arguments": {"shipping_amount": 0}},
                200,
            ),
        ],
        "memo": {"subtotal": 12.0, "tax_amount": 0.99, "grand_total": 12.99, "invoice_id": 305},
        "memo_items": [(1011, 1.0, None), (1013, 1.0, 12.0)],
        "order": {
            "total_refunded": 12.99,
            "total_offline_refunded": 12.99,
            "total_online_refunded": None,
            "state": "complete",
        },
        "items": {1011: (1.0, 0.0), 1012: (0.0, 0.0), 1013: (1.0, 12.0)},
    },
    # Virtual: no shipping to refund (asking for some is refused), everything else: 24 + 90 +
    # tax 1.98 + 7.43 = 123.41 = paid -> closed.
    "virtual-purchaseorder": {
        "calls": [
            ("order", "/V1/order/106/refund", {"arguments": {"shipping_amount": 5}}, 400),
            ("order", "/V1/order/106/refund", {}, 200),
        ],
        "memo": {
            "subtotal": 114.0,
            "tax_amount": 9.41,
            "shipping_amount": 0.0,
            "grand_total": 123.41,
        },
        "order": {"total_refunded": 123.41, "state": "closed", "status": "closed"},
        "items": {1014: (1.0, 24.0), 1015: (1.0, 90.0)},
    },
    # Several invoices. Invoice 308 holds only the duffle: naming the jacket (on 307) leaves a
    # zero line and no shipping (308 has none) -> total must be positive. Then 308 whole: 45.00
    # + its own tax 3.71 (not the order's 19.80) online. 308 again: nothing left. On 307, 3 pants
    # where 2 were invoiced is refused by the per-item check; 2 pants: 96.00 + 7.92.
    "several-invoices-stripe": {
        "calls": [
            (
                "invoice",
                "/V1/invoice/308/refund",
                {"items": [{"order_item_id": 1016, "qty": 1}]},
                ["The credit memo's total must be positive."],
            ),
            ("invoice", "/V1/invoice/308/refund", {"isOnline": True}, 200),
            (
                "invoice",
                "/V1/invoice/308/refund",
                {"isOnline": True},
                [
                    "The credit memo's total must be positive.",
                    "We can't create creditmemo for the invoice.",
                ],
            ),
            (
                "invoice",
                "/V1/invoice/307/refund",
                {"items": [{"order_item_id": 1017, "qty": 3}], "arguments": {"shipping_amount": 0}},
                ["The quantity to refund must not be greater than the unrefunded quantity."],
            ),
            (
                "invoice",
                "/V1/invoice/307/refund",
                {
                    "isOnline": True,
                    "items": [{"order_item_id": 1017, "qty": 2}],
                    "arguments": {"shipping_amount": 0},
                },
                200,
            ),
        ],
        "memo": {
            "subtotal": 96.0,
            "tax_amount": 7.92,
            "grand_total": 103.92,
            "invoice_id": 307,
            "transaction_id": "ch_A1-refund",
        },
        "order": {"total_refunded": 152.63, "total_online_refunded": 152.63, "state": "complete"},
        "invoice": (307, {"base_total_refunded": 103.92, "is_used_for_refund": 1}),
        "other_invoice": (308, {"base_total_refunded": 48.71, "transaction_id": "ch_B2"}),
        "items": {1016: (0.0, 0.0), 1017: (2.0, 96.0), 1018: (1.0, 45.0)},
    },
    # Base EUR, order USD at 1.0862. Everything plus a 10 EUR adjustment is 73 + 12 + 10 = 95 EUR
    # > 85 paid: refused in base currency. One tee (47.80/2 = 23.90 USD, 44/2 = 22 EUR) and half
    # the shipping asked in base (6 EUR: ratio 0.5, 13.03 x 0.5 = 6.515 -> 6.52 USD).
    "foreign-currency-paypal": {
        "calls": [
            (
                "order",
                "/V1/order/108/refund",
                {"arguments": {"adjustment_positive": 10}},
                ["The most money available to refund is 85."],
            ),
            (
                "order",
                "/V1/order/108/refund",
                {"items": [{"order_item_id": 1019, "qty": 1}], "arguments": {"shipping_amount": 6}},
                200,
            ),
        ],
        "memo": {
            "subtotal": 23.9,
            "base_subtotal": 22.0,
            "shipping_amount": 6.52,
            "base_shipping_amount": 6.0,
            "grand_total": 30.42,
            "base_grand_total": 28.0,
            "base_to_order_rate": 1.0862,
            "order_currency_code": "USD",
            "base_currency_code": "EUR",
        },
        "order": {
            "total_refunded": 30.42,
            "base_total_refunded": 28.0,
            "shipping_refunded": 6.52,
            "base_shipping_refunded": 6.0,
            "state": "complete",
        },
        "history": "We refunded €28.00 offline.",
        "items": {1019: (1.0, 23.9), 1020: (0.0, 0.0)},
    },
    # 15% coupon. One tank: 44/2 = 22.00, discount 6.60/2 = 3.30, tax 3.09/2 = 1.545 -> 1.55:
    # 22 - 3.30 + 1.55 = 20.25. The order's discount_refunded is negative like its discount_amount.
    "coupon-discount-checkmo": {
        "calls": [
            (
                "order",
                "/V1/order/109/refund",
                {"items": [{"order_item_id": 1021, "qty": 1}], "arguments": {"shipping_amount": 0}},
                200,
            )
        ],
        "memo": {
            "subtotal": 22.0,
            "discount_amount": -3.3,
            "base_discount_amount": -3.3,
            "tax_amount": 1.55,
            "grand_total": 20.25,
            "discount_description": "SUMMER15",
        },
        "memo_items": [(1021, 1.0, 22.0)],
        "order": {
            "total_refunded": 20.25,
            "discount_refunded": -3.3,
            "base_discount_refunded": -3.3,
            "tax_refunded": 1.55,
        },
        "item_fields": {1021: {"discount_refunded": 3.3, "tax_refunded": 1.55}},
        "items": {1021: (1.0, 22.0), 1022: (0.0, 0.0)},
    },
    # VAT on shipping. One tank and half the shipping: 25 + 3 + tax 5.00 + 1.20 x 0.5 = 0.60 ->
    # 33.60 (partial shipping: the tax is the sum, not all that is left). The rest: 30 + 25 + 3 +
    # all the tax left 17.20 - 5.60 = 11.60 -> 69.60, closed.
    "shipping-tax-gbp": {
        "calls": [
            (
                "order",
                "/V1/order/110/refund",
                {"items": [{"order_item_id": 1024, "qty": 1}], "arguments": {"shipping_amount": 3}},
                200,
            ),
            ("order", "/V1/order/110/refund", {}, 200),
        ],
        "first_memo": {
            "subtotal": 25.0,
            "shipping_amount": 3.0,
            "shipping_tax_amount": 0.6,
            "shipping_incl_tax": 3.6,
            "tax_amount": 5.6,
            "grand_total": 33.6,
        },
        "memo": {
            "subtotal": 55.0,
            "shipping_amount": 3.0,
            "shipping_tax_amount": 0.6,
            "tax_amount": 11.6,
            "grand_total": 69.6,
        },
        "order": {
            "total_refunded": 103.2,
            "shipping_tax_refunded": 1.2,
            "tax_refunded": 17.2,
            "state": "closed",
        },
        "history": "We refunded £69.60 offline.",
        "items": {1023: (1.0, 30.0), 1024: (2.0, 50.0)},
    },
    # Already refunded: the watch again is refused per item; the rest is the duffle 80 + 6.60 +
    # shipping 10 = 96.60, the tax left being 14.19 - 7.59 = 6.60; 99.59 + 96.60 = paid -> closed.
    "partly-refunded-checkmo": {
        "calls": [
            (
                "order",
                "/V1/order/111/refund",
                {"items": [{"order_item_id": 1026, "qty": 1}]},
                ["The quantity to refund must not be greater than the unrefunded quantity."],
            ),
            ("order", "/V1/order/111/refund", {}, 200),
        ],
        "memo": {"subtotal": 80.0, "tax_amount": 6.6, "shipping_amount": 10.0, "grand_total": 96.6},
        "memo_items": [(1025, 1.0, 80.0)],
        "order": {"total_refunded": 196.19, "state": "closed", "status": "closed"},
        "items": {1025: (1.0, 80.0), 1026: (1.0, 92.0)},
    },
    # Custom status: one of three hoodies, two still to ship -> stays processing, keeps
    # "awaiting_return". 162/3 = 54.00, tax 13.37/3 = 4.4567 -> 4.46.
    "custom-status-checkmo": {
        "calls": [
            (
                "order",
                "/V1/order/112/refund",
                {"items": [{"order_item_id": 1027, "qty": 1}], "arguments": {"shipping_amount": 0}},
                200,
            )
        ],
        "memo": {"subtotal": 54.0, "tax_amount": 4.46, "grand_total": 58.46},
        "order": {"total_refunded": 58.46, "state": "processing", "status": "awaiting_return"},
        "items": {1027: (1.0, 54.0)},
    },
    # Paid offline: RefundInvoice cannot refund it; RefundOrder can. One chair: 249.00 + VAT
    # 94.62/2 = 47.31, no shipping (its VAT stays: partial shipping) -> 296.31.
    "offline-banktransfer-eur": {
        "calls": [
            (
                "invoice",
                "/V1/invoice/314/refund",
                {},
                ["We can't create creditmemo for the invoice."],
            ),
            (
                "order",
                "/V1/order/113/refund",
                {"items": [{"order_item_id": 1028, "qty": 1}], "arguments": {"shipping_amount": 0}},
                200,
            ),
        ],
        "memo": {
            "subtotal": 249.0,
            "tax_amount": 47.31,
            "shipping_tax_amount": 0.0,
            "grand_total": 296.31,
        },
        "order": {"total_refunded": 296.31, "total_offline_refunded": 296.31, "state": "complete"},
        "history": "We refunded €296.31 offline.",
        "items": {1028: (1.0, 249.0)},
    },
    # Online gateway: the shorts, 32.50 + 2.68, refunded online on the capture transaction.
    "online-braintree": {
        "calls": [
            (
                "invoice",
                "/V1/invoice/315/refund",
                {
                    "isOnline": True,
                    "items": [{"order_item_id": 1029, "qty": 1}],
                    "arguments": {"shipping_amount": 0},
                },
                200,
            )
        ],
        "memo": {
            "subtotal": 32.5,
            "tax_amount": 2.68,
            "grand_total": 35.18,
            "transaction_id": "kx3m9r2p-refund",
        },
        "order": {"total_online_refunded": 35.18, "state": "complete"},
        "payment": {"base_amount_refunded_online": 35.18, "amount_refunded": 35.18},
        "history": 'We refunded $35.18 online. Transaction ID: "kx3m9r2p-refund"',
        "items": {1029: (1.0, 32.5), 1030: (0.0, 0.0)},
    },
    # Mixed: the class pass (40 + 3.30) back; the strap is still to ship -> processing.
    "mixed-virtual-physical": {
        "calls": [
            (
                "order",
                "/V1/order/115/refund",
                {"items": [{"order_item_id": 1031, "qty": 1}], "arguments": {"shipping_amount": 0}},
                200,
            )
        ],
        "memo": {"subtotal": 40.0, "tax_amount": 3.3, "grand_total": 43.3},
        "order": {"total_refunded": 43.3, "state": "processing", "status": "processing"},
        "items": {1031: (1.0, 40.0), 1032: (0.0, 0.0)},
    },
    # Partly invoiced (#14713): only the invoiced fleece and its shipping: 45 + 10 + the tax
    # invoiced 3.71 (not the order's 7.75). Still something to invoice -> processing.
    "partially-invoiced-braintree": {
        "calls": [("order", "/V1/order/116/refund", {}, 200)],
        "memo": {
            "subtotal": 45.0,
            "tax_amount": 3.71,
            "shipping_amount": 10.0,
            "grand_total": 58.71,
        },
        "memo_items": [(1033, 1.0, 45.0)],
        "order": {
            "total_refunded": 58.71,
            "tax_refunded": 3.71,
            "state": "processing",
            "status": "processing",
        },
        "items": {1033: (1.0, 45.0), 1034: (0.0, 0.0)},
    },
    # #14713 itself: refund the band only -> its own tax 1.57, not the invoice's 6.44.
    "tax-per-item-braintree": {
        "calls": [
            (
                "invoice",
                "/V1/invoice/318/refund",
                {
                    "isOnline": True,
                    "items": [{"order_item_id": 1036, "qty": 1}],
                    "arguments": {"shipping_amount": 0},
                },
                200,
            )
        ],
        "memo": {"subtotal": 19.0, "tax_amount": 1.57, "grand_total": 20.57},
        "order": {"total_refunded": 20.57, "tax_refunded": 1.57},
        "items": {1035: (0.0, 0.0), 1036: (1.0, 19.0)},
    },
    # On hold: no refund is possible; nothing changes.
    "edited-on-hold-braintree": {
        "calls": [
            (
                "order",
                "/V1/order/118/refund",
                {},
                ["A creditmemo can not be created when an order has a status of holded"],
            ),
            (
                "invoice",
                "/V1/invoice/319/refund",
                {"isOnline": True},
                ["A creditmemo can not be created when an order has a status of holded"],
            ),
        ],
        "order": {"total_refunded": None, "state": "holded"},
        "items": {1037: (0.0, 0.0)},
    },
    # Canceled before invoicing: nothing was paid.
    "edited-original-canceled": {
        "calls": [
            (
                "order",
                "/V1/order/119/refund",
                {},
                [
                    "A creditmemo can not be created when an order has a status of canceled",
                    "The most money available to refund is 0.",
                ],
            )
        ],
        "order": {"total_refunded": None, "state": "canceled"},
        "items": {1038: (0.0, 0.0)},
    },
}


def test_every_order_of_the_library_has_a_refund_case() -> None:
    assert sorted(CASES) == FILES


@pytest.mark.parametrize("name", FILES)
def test_refund(
    state: SimulatorState, client: httpx.Client, control: httpx.Client, name: str
) -> None:
    data = load(name)
    state.add_order(data)
    case = CASES[name]
    order_id = data["order"]["entity_id"]
    memos = []
    for _, path, body, expect in case["calls"]:
        response = client.post(path, json=body)
        if expect == 200:
            assert response.status_code == 200, response.text
            memos.append(client.get(f"/V1/creditmemo/{response.json()}").json())
        elif isinstance(expect, list):
            assert response.json() == validation_error(*expect), path
        else:
            assert response.status_code == expect, response.text
    order = client.get(f"/V1/orders/{order_id}").json()
    if "memo" in case:
        assert subset(memos[-1], case["memo"]) == case["memo"]
        assert memos[-1]["order_id"] == order_id
    if "first_memo" in case:
        assert subset(memos[0], case["first_memo"]) == case["first_memo"]
    if "memo_items" in case:
        lines = [(i["order_item_id"], i["qty"], i.get("row_total")) for i in memos[-1]["items"]]
        assert lines == case["memo_items"]
    assert subset(order, case["order"]) == case["order"]
    refunded = {i["item_id"]: (i["qty_refunded"], i["amount_refunded"]) for i in order["items"]}
    assert {item_id: refunded[item_id] for item_id in case["items"]} == case["items"]
    for item_id, fields in case.get("item_fields", {}).items():
        item = next(i for i in order["items"] if i["item_id"] == item_id)
        assert subset(item, fields) == fields
    if "payment" in case:
        assert subset(order["payment"], case["payment"]) == case["payment"]
    for key in ("invoice", "other_invoice"):
        if key in case:
            invoice_id, fields = case[key]
            invoice = client.get(f"/V1/invoices/{invoice_id}").json()
            assert subset(invoice, fields) == fields
    if "history" in case:
        assert order["status_histories"][0]["comment"] == case["history"]
    if "stock" in case:
        assert control.get("/stock").json() == case["stock"]
    # Whatever happened, the order still is what Magento would serve: every total that was
    # stored and not moved by a refund is as exported.
    for key in ("grand_total", "base_grand_total", "subtotal", "total_paid", "base_total_paid"):
        assert order.get(key) == data["order"].get(key), key
