"""End to end over the order library (tests/data/orders): every order imported into the
simulator, each refunded through one real worker process (PostgreSQL, Redis) with the request a
caller would write for its shape, several of them by increment id.

The expected figures are worked out by hand from the order files and Magento's collectors
(docs/magento.md; the comment beside each says how), never read back from a run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from refund_worker.simulator import SimulatorState
from tests.e2e.conftest import Stack, assert_bodies_match_schema, make_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIBRARY = Path(__file__).resolve().parents[1] / "data" / "orders"

#: One refund request per case (``by``: the order's id or its increment id), what it must end
#: as, and the order's figures afterwards: totals, each item's qty_refunded, state.
CASES: list[dict[str, Any]] = [
    # 1 of 3 bottles (row 21, tax 1.73): 7.00 + 1.73/3 = 0.5767 -> 0.58; no shipping (partial).
    {"file": "simple-checkmo", "key": "simple", "by": "000000101",
     "request": {"items": [{"order_item_id": 1002, "qty": 1}]},
     "service": "order",
     "order": {"total_refunded": 7.58, "state": "complete"},
     "items": {1001: 0, 1002: 1}},
    # Everything: the stored row total 10 for both units + shipping 20 = 30 = what was paid.
    {"file": "magento-fixture-stored-totals", "key": "fixture", "by": 102,
     "request": {}, "service": "order",
     "order": {"total_refunded": 30.0, "state": "closed"},
     "items": {1003: 2}},
    # The caller names the configurable's child: the parent is refunded (104/2 = 52.00, tax
    # 8.58/2 = 4.29), online on invoice 303; the child follows; stock goes to the child product.
    {"file": "configurable-braintree", "key": "configurable", "by": "000000103",
     "request": {"items": [{"order_item_id": 1005, "qty": 1}], "return_to_stock": True},
     "service": "invoice",
     "order": {"total_refunded": 56.29, "total_online_refunded": 56.29, "state": "complete"},
     "items": {1004: 1, 1005: 1, 1006: 0}},
    # Fixed-price bundle by its parent, with the shipping: 77.00 + 6.35 + 5.00 = 88.35 = paid.
    {"file": "bundle-fixed-banktransfer", "key": "bundle-fixed", "by": 104,
     "request": {"items": [{"order_item_id": 1007, "qty": 1}], "shipping_amount": 5},
     "service": "order",
     "order": {"total_refunded": 88.35, "state": "closed"},
     "items": {1007: 1, 1008: 1, 1009: 2, 1010: 1}},
    # Dynamic bundle named by its parent: its children at the parent's ratio (1 x 24-MB04 32.00
    # + 2.64 tax, 2 x 24-UG04 24.00 + 1.98) = 60.62, online; the 10.00 shipping stays.
    {"file": "bundle-dynamic-stripe", "key": "bundle-dynamic", "by": "000000105",
     "request": {"items": [{"order_item_id": 1011, "qty": 1}]},
     "service": "invoice",
     "order": {"total_refunded": 60.62, "total_online_refunded": 60.62, "state": "complete"},
     "items": {1011: 1, 1012: 1, 1013: 2}},
    # Virtual, everything: 24 + 90 + tax 1.98 + 7.43 = 123.41 = paid.
    {"file": "virtual-purchaseorder", "key": "virtual", "by": "000000106",
     "request": {}, "service": "order",
     "order": {"total_refunded": 123.41, "state": "closed"},
     "items": {1014: 1, 1015: 1}},
    # Several invoices: the duffle alone goes to its invoice 308 (45.00 + 3.71, online); then
    # invoice 307's jacket and pants with all the shipping: 99 + 8.17 + 96 + 7.92 + 20 = 231.09;
    # 48.71 + 231.09 = 279.80 = paid. A request mixing the two invoices is refused.
    {"file": "several-invoices-stripe", "key": "invoice-308", "by": 107,
     "request": {"items": [{"order_item_id": 1018, "qty": 1}]}, "service": "invoice",
     "creditmemo": {"invoice_id": 308, "grand_total": 48.71}},
    {"file": None, "key": "invoice-307", "by": "000000107",
     "request": {"items": [{"order_item_id": 1016, "qty": 1}, {"order_item_id": 1017, "qty": 2}],
                 "shipping_amount": 20},
     "service": "invoice",
     "creditmemo": {"invoice_id": 307, "grand_total": 231.09},
     "order_id": 107, "order": {"total_refunded": 279.8, "state": "closed"},
     "items": {1016: 1, 1017: 2, 1018: 1}},
    {"file": None, "key": "two-invoices", "by": 107,
     "request": {"items": [{"order_item_id": 1016, "qty": 1}, {"order_item_id": 1018, "qty": 1}]},
     "failed": "send one request per invoice: invoice_id 307 with items 1016 (MJ09-L-Yellow); "
               "invoice_id 308 with items 1018 (24-WB04)"},
    # Base EUR, order USD at 1.0862; the caller's amounts in USD. One tee 23.90 USD (22.00 EUR);
    # shipping 6.52 USD = 6.00 EUR (13.03 x 6/12 = 6.515 -> 6.52); adjustment 1.09 USD = 1.00
    # EUR (x 1.0862 = 1.0862 -> 1.09). 23.90 + 6.52 + 1.09 = 31.51 USD; 22 + 6 + 1 = 29 EUR.
    {"file": "foreign-currency-paypal", "key": "foreign", "by": "000000108",
     "request": {"items": [{"order_item_id": 1019, "qty": 1}], "shipping_amount": "6.52",
                 "adjustment_positive": "1.09"},
     "service": "invoice",
     "creditmemo": {"shipping_amount": 6.52, "base_shipping_amount": 6.0,
                    "adjustment_positive": 1.09, "base_adjustment_positive": 1.0},
     "order": {"total_refunded": 31.51, "base_total_refunded": 29.0, "state": "complete"},
     "items": {1019: 1, 1020: 0}},
    # 15% coupon: one tank 22.00 - 3.30 discount + 3.09/2 = 1.545 -> 1.55 tax = 20.25.
    {"file": "coupon-discount-checkmo", "key": "coupon", "by": 109,
     "request": {"items": [{"order_item_id": 1021, "qty": 1}]}, "service": "order",
     "order": {"total_refunded": 20.25, "state": "complete"},
     "items": {1021: 1, 1022: 0}},
    # VAT on goods and shipping, everything online: 30 + 50 + 6 + 16 + 1.20 = 103.20 = paid.
    {"file": "shipping-tax-gbp", "key": "vat", "by": "000000110",
     "request": {}, "service": "invoice",
     "order": {"total_refunded": 103.2, "state": "closed"},
     "items": {1023: 1, 1024: 2}},
    # Refunded in part already (99.59): the rest is the duffle 80 + 6.60 + shipping 10 = 96.60.
    {"file": "partly-refunded-checkmo", "key": "partly", "by": 111,
     "request": {}, "service": "order",
     "order": {"total_refunded": 196.19, "state": "closed"},
     "items": {1025: 1, 1026: 1}},
    # Custom status, two hoodies still to ship: 54 + 13.37/3 = 4.4567 -> 4.46 = 58.46.
    {"file": "custom-status-checkmo", "key": "custom-status", "by": "000000112",
     "request": {"items": [{"order_item_id": 1027, "qty": 1}]}, "service": "order",
     "order": {"total_refunded": 58.46, "state": "processing", "status": "awaiting_return"},
     "items": {1027: 1}},
    # Paid by bank transfer (RefundOrder): one chair 249.00 + 94.62/2 = 47.31 VAT = 296.31.
    {"file": "offline-banktransfer-eur", "key": "bank", "by": "000000113",
     "request": {"items": [{"order_item_id": 1028, "qty": 1}]}, "service": "order",
     "order": {"total_refunded": 296.31, "total_offline_refunded": 296.31, "state": "complete"},
     "items": {1028: 1}},
    # Card: the shorts 32.50 + 2.68 online.
    {"file": "online-braintree", "key": "card", "by": 114,
     "request": {"items": [{"order_item_id": 1029, "qty": 1}]}, "service": "invoice",
     "order": {"total_refunded": 35.18, "total_online_refunded": 35.18, "state": "complete"},
     "items": {1029: 1, 1030: 0}},
    # The class pass back (40 + 3.30); the strap still to ship: processing.
    {"file": "mixed-virtual-physical", "key": "mixed", "by": "000000115",
     "request": {"items": [{"order_item_id": 1031, "qty": 1}]}, "service": "invoice",
     "order": {"total_refunded": 43.3, "state": "processing"},
     "items": {1031: 1, 1032: 0}},
    # Partly invoiced: everything refundable is the invoiced fleece, its tax and the shipping
    # 45 + 3.71 + 10 = 58.71 (not the order's 7.75 tax); one jacket still to invoice.
    {"file": "partially-invoiced-braintree", "key": "part-invoiced", "by": 116,
     "request": {}, "service": "invoice",
     "order": {"total_refunded": 58.71, "state": "processing"},
     "items": {1033: 1, 1034: 0}},
    # Issue #14713: the band only, its own tax 1.57: 20.57.
    {"file": "tax-per-item-braintree", "key": "tax-per-item", "by": "000000117",
     "request": {"items": [{"order_item_id": 1036, "qty": 1}]}, "service": "invoice",
     "order": {"total_refunded": 20.57, "state": "complete"},
     "items": {1035: 0, 1036: 1}},
    # On hold, and canceled (the original of the edit): Magento refuses; nothing moves.
    {"file": "edited-on-hold-braintree", "key": "on-hold", "by": "000000118-1",
     "request": {},
     "failed": "A creditmemo can not be created when an order has a status of holded",
     "order": {"total_refunded": None, "state": "holded"}, "items": {1037: 0}},
    {"file": "edited-original-canceled", "key": "canceled", "by": "000000118",
     "request": {},
     "failed": "A creditmemo can not be created when an order has a status of canceled",
     "order": {"total_refunded": None, "state": "canceled"}, "items": {1038: 0}},
    # No such order number in the shop.
    {"file": None, "key": "unknown", "by": "000009999", "request": {},
     "failed": "no order with increment id '000009999' in shop 'default'"},
]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((LIBRARY / f"{name}.json").read_text())
    return data


def payload(case: dict[str, Any]) -> dict[str, Any]:
    by = case["by"]
    order = {"order_increment_id": by} if isinstance(by, str) else {"order_id": by}
    return {"idempotency_key": f"lib-{case['key']}", **order, **case["request"]}


@pytest.fixture
def pg_stack(pg_url: str, redis_url: str, tmp_path: Path,
             sim_state: SimulatorState) -> Iterator[Stack]:
    """PostgreSQL (the one-statement claim, with no order lock while unresolved) and Redis."""
    yield from make_stack(pg_url, redis_url, tmp_path, sim_state)


def test_the_order_library_refunded_end_to_end(pg_stack: Stack) -> None:
    started = time.monotonic()
    stack = pg_stack
    files = sorted({case["file"] for case in CASES if case["file"]})
    assert len(files) == 19
    for name in files:
        stack.state.add_order(load(name))

    receipts = stack.enqueue(*(payload(case) for case in CASES))
    again = stack.enqueue(payload(CASES[0]))[0]  # the same key and increment id: a duplicate
    assert (again.refund_id, again.duplicate) == (receipts[0].refund_id, True)
    stack.start_worker(4)
    views = stack.wait_settled([r.refund_id for r in receipts], timeout=50)
    by_key = {view.idempotency_key.removeprefix("lib-"): view for view in views.values()}
    memos = {memo["entity_id"]: memo for memo in stack.state.creditmemos()}

    for case in CASES:
        view = by_key[case["key"]]
        if "failed" in case:
            assert view.status.value == "failed", (case["key"], view.last_error)
            assert case["failed"] in (view.last_error or ""), (case["key"], view.last_error)
        else:
            assert (view.status.value, view.service) == ("succeeded", case["service"]), (
                case["key"], view.last_error)
            memo = memos[view.creditmemo_id]
            assert any(f"refund-worker:{view.id}" in c["comment"] for c in memo["comments"])
            for field, value in case.get("creditmemo", {}).items():
                assert memo.get(field) == value, (case["key"], field, memo.get(field))
        if isinstance(case["by"], str):
            assert view.order_increment_id == case["by"]
        order_id = case.get("order_id") or (load(case["file"])["order"]["entity_id"]
                                            if case["file"] else None)
        if order_id is None:
            continue
        assert view.order_id == order_id  # resolved and stored
        if "order" not in case:
            continue
        order = stack.state.order(order_id)
        for field, value in case["order"].items():
            assert order.get(field) == value, (case["key"], field, order.get(field))
        refunded = {i["item_id"]: i["qty_refunded"] for i in order["items"]}
        assert {i: refunded[i] for i in case["items"]} == case["items"], case["key"]

    # Stock: only the configurable asked for it, and its child product got it.
    control = httpx.get(f"{stack.simulator.url}/_simulator/stock", timeout=5).json()
    assert control == [{"product_id": 1090, "sku": "MH01-M-Black", "qty": 1.0}]
    # Each increment id was searched once (resolved, then stored), in the refund's own shop.
    searches = Counter(r["route"] for r in stack.state.requests(10_000))
    assert searches["order_search"] == sum(isinstance(case["by"], str) for case in CASES)
    # Every body the worker sent validates against Adobe's schema (also checked at teardown).
    bodies = stack.request_bodies()
    assert len(bodies) >= len([c for c in CASES if "failed" not in c])
    assert_bodies_match_schema(stack)
    assert time.monotonic() - started < 60
