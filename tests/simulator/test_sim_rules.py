"""The pure refund rules and money helpers, without HTTP."""

from __future__ import annotations

import pytest

from refund_worker.simulator import SimulatorState
from refund_worker.simulator.errors import MagentoError, render
from refund_worker.simulator.money import format_currency, php_number, round_price
from refund_worker.simulator.rules import (
    RefundRequest,
    build_from_invoice,
    build_from_order,
    can_creditmemo,
    invoice_refund_limits,
    resolve_state,
    validate,
)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(2.675, 2.68), (1.005, 1.01), (-1.005, -1.01), (0.1 + 0.2, 0.3), (12.344999, 12.34)],
)
def test_round_price_is_half_up(amount: float, expected: float) -> None:
    assert round_price(amount) == expected


def test_php_number_and_currency() -> None:
    assert (php_number(25.0), php_number(12.5), php_number(100.1 - 30.05)) == (
        "25",
        "12.5",
        "70.05",
    )
    assert format_currency(1234.5, "USD") == "$1,234.50"
    assert format_currency(3, "EUR") == "€3.00"
    assert format_currency(3, "CHF") == "CHF3.00"


def test_render_placeholders() -> None:
    assert render("%1 of %2 and %10", [*"abcdefghij"]) == "a of b and j"
    assert render('"%fieldName" is required', {"fieldName": "creditmemo"}) == (
        '"creditmemo" is required'
    )
    error = MagentoError(401, "access %resources.", {"resources": "Magento_Sales::creditmemo"})
    assert error.rendered() == "access Magento_Sales::creditmemo."


@pytest.fixture
def store() -> SimulatorState:
    return SimulatorState(seed="demo")


def test_tax_is_shared_pro_rata_and_the_last_unit_takes_the_rest(store: SimulatorState) -> None:
    made = store.add_order(
        {"shipped": True, "items": [{"sku": "T", "qty": 3, "price": 10, "tax": 0.333}]}
    )
    order = store._orders[made["order_id"]]
    item_id = made["items"][0]["item_id"]
    first = build_from_order(
        order, RefundRequest.from_params({"items": [{"order_item_id": item_id, "qty": 2}]})
    )
    assert (first.items[0].row_total, first.items[0].tax_amount) == (20.0, 0.67)
    store.refund_order(
        made["order_id"],
        {"items": [{"order_item_id": item_id, "qty": 2}], "arguments": {"shipping_amount": 0}},
    )
    last = build_from_order(order, RefundRequest.from_params({}))
    assert (last.items[0].row_total, last.items[0].tax_amount) == (10.0, 0.33)
    assert round_price(0.67 + 0.33) == round_price(order.items[0].tax_invoiced)


def test_invoice_limits_cap_the_default_quantities(store: SimulatorState) -> None:
    order, invoice = store._orders[1], store._invoices[1]
    assert invoice_refund_limits(invoice, {1: 1.5}) == {1: 0.5, 2: 1.0}
    draft = build_from_invoice(order, invoice, {1: 2.0}, RefundRequest())
    assert [(i.order_item.item_id, i.qty) for i in draft.items] == [(2, 1.0)]
    # CreditmemoFactory::createByInvoice leaves out an item the invoice has no quantity left
    # of, and cuts a quantity down to what the invoice has left, without a word: asking for
    # the used-up item refunds only the shipping; asking for 2 where 1 is left refunds 1.
    asked = RefundRequest.from_params({"items": [{"order_item_id": 1, "qty": 1}]})
    over = build_from_invoice(order, invoice, {1: 2.0}, asked)
    assert [(i.order_item.item_id, i.qty) for i in over.items] == [(2, 0.0)]
    assert (over.grand_total, validate(order, over, asked)) == (10.0, [])
    capped = build_from_invoice(
        order,
        invoice,
        {1: 1.0},
        RefundRequest.from_params({"items": [{"order_item_id": 1, "qty": 2}]}),
    )
    assert [(i.order_item.item_id, i.qty) for i in capped.items] == [(1, 1.0), (2, 0.0)]


def test_resolve_state_and_can_creditmemo(store: SimulatorState) -> None:
    order = store._orders[3]
    resolve_state(order, keep_status=True)
    assert (order.state, order.status) == ("processing", "processing")
    for item in order.items:
        item.qty_shipped = item.qty_ordered
    resolve_state(order, keep_status=True)
    assert (order.state, order.status) == ("complete", "complete")
    order.total_refunded = order.total_paid
    assert not can_creditmemo(order)
    resolve_state(order, keep_status=True)
    assert (order.state, order.status) == ("closed", "closed")
