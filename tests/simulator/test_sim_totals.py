"""The pure rules for parent/child items, invoices, currencies and the totals collectors."""

from __future__ import annotations

from typing import Any

import pytest

from refund_worker.simulator.entities import Invoice, InvoiceItem, Order, OrderItem
from refund_worker.simulator.errors import MagentoError
from refund_worker.simulator.rules import (
    MSG_INCORRECT_ITEMS,
    RefundRequest,
    build_from_invoice,
    build_from_order,
    can_refund_item,
    qty_to_refund,
    resolve_state,
    validate,
)
from refund_worker.simulator.totals import DeltaRounder, InvoiceRefunds, allowed_tax


def item(item_id: int, **fields: Any) -> OrderItem:
    options = fields.pop("product_options", None)
    data = {"item_id": item_id, "sku": f"SKU-{item_id}", "qty_ordered": 1.0, **fields}
    return OrderItem(data, options)


def invoiced(item_id: int, qty: float, price: float, tax: float = 0.0, **fields: Any) -> OrderItem:
    """An invoiced item: qty units at ``price``, ``tax`` for the whole row."""
    row = round(price * qty, 2)
    amounts = {
        "qty_ordered": qty,
        "qty_invoiced": qty,
        "price": price,
        "base_price": price,
        "row_total": row,
        "base_row_total": row,
        "row_invoiced": row,
        "base_row_invoiced": row,
        "tax_amount": tax,
        "base_tax_amount": tax,
        "tax_invoiced": tax,
        "base_tax_invoiced": tax,
    }
    return item(item_id, **{**amounts, **fields})


def order(items: list[OrderItem], **fields: Any) -> Order:
    paid = fields.pop("paid", 100.0)
    tax = round(sum(i.tax_invoiced for i in items), 2)
    data = {
        "tax_invoiced": tax,
        "base_tax_invoiced": tax,
        "entity_id": 1,
        "state": "processing",
        "status": "processing",
        "base_currency_code": "USD",
        "order_currency_code": "USD",
        "base_to_order_rate": 1.0,
        "grand_total": paid,
        "base_grand_total": paid,
        "total_paid": paid,
        "base_total_paid": paid,
        "payment": {"method": "checkmo"},
        **fields,
    }
    return Order(data, items)


def test_delta_rounding_carries_the_remainder_by_kind() -> None:
    rounder = DeltaRounder()
    assert [rounder(1 / 3) for _ in range(3)] == [0.33, 0.34, 0.33]
    assert rounder(1 / 3, "base") == 0.33  # another kind, another remainder
    negative = DeltaRounder()
    assert [negative(2 / 3, "regular", True) for _ in range(3)] == [0.67, 0.66, 0.67]
    assert rounder(0) == 0


def test_dummies_configurable_and_bundles() -> None:
    configurable = order([item(1, product_type="configurable"), item(2, parent_item_id=1)])
    parent, child = configurable.items
    assert (parent.is_dummy, child.is_dummy, child.parent is parent) == (False, True, True)
    fixed = order([item(3, product_type="bundle", price=77.0), item(4, parent_item_id=3)])
    assert [i.is_dummy for i in fixed.items] == [False, True]  # children without price
    dynamic = order([item(5, product_type="bundle"), item(6, parent_item_id=5, price=12.0)])
    assert [i.is_dummy for i in dynamic.items] == [True, False]  # children carry the price
    told = order(
        [
            item(7, product_type="bundle", product_options={"product_calculations": "0"}),
            item(8, parent_item_id=7),
        ]
    )
    assert [i.is_dummy for i in told.items] == [True, False]  # product_options decide
    assert [i.qty_to_refund for i in told.items] == [0.0, 0.0]  # nothing invoiced / dummy


def test_a_configurable_child_follows_its_parent() -> None:
    parent = invoiced(1, 2, 52.0, 8.58, product_type="configurable")
    child = item(2, parent_item_id=1, qty_ordered=2.0, qty_invoiced=2.0)
    shop = order([parent, child])
    assert (can_refund_item(child, {1: 1.0}, {}), qty_to_refund(child, {1: 1.0}, {})) == (True, 1.0)
    assert can_refund_item(child, {2: 1.0}, {}) is False  # naming the child: no line
    assert qty_to_refund(child, {}, {}) == 2.0  # nothing named: the parent's rest
    draft = build_from_order(
        shop, RefundRequest.from_params({"items": [{"order_item_id": 1, "qty": 1}]})
    )
    assert [(line.order_item.item_id, line.qty, line.row_total) for line in draft.items] == [
        (1, 1.0, 52.0),
        (2, 1.0, 0.0),
    ]
    assert (draft.tax_amount, draft.grand_total) == (4.29, 56.29)
    wrong = RefundRequest.from_params({"items": [{"order_item_id": 2, "qty": 1}]})
    assert MSG_INCORRECT_ITEMS in validate(shop, build_from_order(shop, wrong), wrong)


def test_bundle_selection_quantities() -> None:
    bundle = invoiced(1, 2, 77.0, 12.7, product_type="bundle")
    strap = item(2, parent_item_id=1, qty_ordered=2.0, qty_invoiced=2.0)
    bricks = item(3, parent_item_id=1, qty_ordered=4.0, qty_invoiced=4.0)
    told = item(
        4,
        parent_item_id=1,
        qty_ordered=2.0,
        product_options={"bundle_selection_attributes": '{"qty":3,"price":0}'},
    )
    order([bundle, strap, bricks, told])
    assert [qty_to_refund(i, {1: 1.0}, {}) for i in (strap, bricks, told)] == [1.0, 2.0, 3.0]
    dynamic_parent = item(10, product_type="bundle", qty_ordered=1.0, qty_invoiced=1.0)
    rope = invoiced(11, 2, 12.0, 1.98, parent_item_id=10)
    order([dynamic_parent, rope])
    # A dynamic bundle's parent joins with all it invoiced, whatever share is refunded.
    assert can_refund_item(dynamic_parent, {11: 1.0}, {}) is True
    assert qty_to_refund(dynamic_parent, {11: 1.0}, {}) == 1.0
    assert can_refund_item(dynamic_parent, {10: 1.0}, {}) is False


def test_unnamed_items_make_zero_lines_so_a_partial_refund_is_not_last() -> None:
    shop = order([invoiced(1, 1, 59.0, 4.87), invoiced(2, 1, 19.0, 1.57)], paid=84.44)
    one = RefundRequest.from_params({"items": [{"order_item_id": 2, "qty": 1}]})
    draft = build_from_order(shop, one)
    assert [(line.order_item.item_id, line.qty) for line in draft.items] == [(1, 0.0), (2, 1.0)]
    assert (draft.is_last(shop), draft.tax_amount) == (False, 1.57)
    everything = build_from_order(shop, RefundRequest())
    assert (everything.is_last(shop), everything.tax_amount) == (True, 6.44)


def test_tax_allowed_on_an_invoice_is_its_own() -> None:
    shop = order([invoiced(1, 1, 45.0, 3.71)], tax_invoiced=19.8, base_tax_invoiced=19.8)
    invoice = Invoice({"entity_id": 9, "tax_amount": 3.71, "base_tax_amount": 3.71}, [])
    draft = build_from_order(shop, RefundRequest())
    draft.invoice, draft.invoice_refunds = (
        invoice,
        InvoiceRefunds(tax_amount=1.0, base_tax_amount=1.0),
    )
    assert allowed_tax(shop, draft)[:2] == (2.71, 2.71)
    shop.data["tax_refunded"] = shop.data["base_tax_refunded"] = 18.0
    assert allowed_tax(shop, draft)[:2] == pytest.approx((1.8, 1.8))  # the order has less left


def test_invoice_limits_cut_quantities() -> None:
    shop = order([invoiced(1, 3, 10.0), invoiced(2, 1, 5.0)])
    invoice = Invoice(
        {"entity_id": 7, "base_shipping_amount": 0.0},
        [InvoiceItem({"order_item_id": 1, "qty": 2.0})],
    )
    asked = RefundRequest.from_params({"items": [{"order_item_id": 1, "qty": 3}]})
    draft = build_from_invoice(shop, invoice, {1: 1.0}, asked)
    assert [(line.order_item.item_id, line.qty) for line in draft.items] == [(1, 1.0)]
    assert draft.grand_total == 10.0


def test_currencies_shipping_and_adjustments() -> None:
    shop = order(
        [invoiced(1, 2, 23.9, base_price=22.0, base_row_invoiced=44.0, base_row_total=44.0)],
        base_currency_code="EUR",
        order_currency_code="USD",
        base_to_order_rate=1.0862,
        shipping_amount=13.03,
        base_shipping_amount=12.0,
        shipping_incl_tax=13.03,
        base_shipping_incl_tax=12.0,
    )
    asked = RefundRequest.from_params(
        {"arguments": {"shipping_amount": 6, "adjustment_positive": 2}}
    )
    draft = build_from_order(shop, asked)
    assert (draft.shipping_amount, draft.base_shipping_amount) == (6.52, 6.0)
    assert (draft.adjustment_positive, draft.base_adjustment_positive) == (2.17, 2.0)
    assert (draft.grand_total, draft.base_grand_total) == (56.49, 52.0)
    with pytest.raises(MagentoError) as too_much:
        build_from_order(shop, RefundRequest(shipping_amount=13))
    assert (too_much.value.message, too_much.value.parameters) == (
        "Maximum shipping amount allowed to refund is: %1",
        ["€12.00"],  # in the base currency
    )


def test_shipping_tax_follows_the_shipping() -> None:
    shop = order(
        [invoiced(1, 2, 25.0, 10.0)],
        shipping_amount=6.0,
        base_shipping_amount=6.0,
        shipping_tax_amount=1.2,
        base_shipping_tax_amount=1.2,
        tax_invoiced=11.2,
        base_tax_invoiced=11.2,
    )
    half = build_from_order(shop, RefundRequest(shipping_amount=3))
    assert (half.shipping_tax_amount, half.tax_amount) == (0.6, 10.6)
    none = build_from_order(shop, RefundRequest(shipping_amount=0))
    assert (none.shipping_tax_amount, none.tax_amount) == (0.0, 10.0)


def test_a_virtual_order_has_no_shipping_to_refund_and_closes() -> None:
    shop = order([invoiced(1, 1, 24.0, is_virtual=1)], is_virtual=1, paid=24.0, state="complete")
    with pytest.raises(MagentoError, match="You can not refund shipping"):
        build_from_order(shop, RefundRequest(shipping_amount=5))
    shop.items[0].qty_refunded = 1.0
    shop.data["total_refunded"] = 24.0
    resolve_state(shop, keep_status=False)
    assert (shop.state, shop.status) == ("closed", "closed")
