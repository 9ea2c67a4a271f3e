"""order_shapes is pure: items as Magento refunds them, the invoice that invoiced them, and the
caller's order-currency amounts as Magento's base-currency arguments, checked on the library's
own orders (tests/data/orders) and on properties."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refund_worker import order_shapes
from refund_worker.errors import InvalidRefund
from refund_worker.routing import plan_refund
from refund_worker.schemas import RefundItem, RefundRequest
from tests.magento_schema import body_errors

LIBRARY = Path(__file__).resolve().parents[1] / "data" / "orders"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((LIBRARY / f"{name}.json").read_text())
    return data


def lines(*pairs: tuple[int, str | int]) -> list[RefundItem]:
    return [RefundItem(order_item_id=i, qty=Decimal(str(q))) for i, q in pairs]


def as_pairs(items: list[RefundItem]) -> list[tuple[int, Decimal]]:
    return [(item.order_item_id, item.qty) for item in items]


def request(**fields: Any) -> RefundRequest:
    return RefundRequest.model_validate({"idempotency_key": "k", **fields})


# -- parent and child items ------------------------------------------------------------------


def test_roles_of_the_library_items() -> None:
    configurable = order_shapes.items_by_id(load("configurable-braintree")["order"])
    fixed = order_shapes.items_by_id(load("bundle-fixed-banktransfer")["order"])
    dynamic = order_shapes.items_by_id(load("bundle-dynamic-stripe")["order"])
    assert [order_shapes.role(configurable, i) for i in (1004, 1005, 1006)] == [
        "configurable", "configurable_child", "simple"]
    assert [order_shapes.role(fixed, i) for i in (1007, 1008, 1009)] == [
        "bundle_fixed", "bundle_fixed_selection", "bundle_fixed_selection"]
    assert [order_shapes.role(dynamic, i) for i in (1011, 1012, 1013)] == [
        "bundle_dynamic", "bundle_dynamic_selection", "bundle_dynamic_selection"]


def test_a_configurable_is_refunded_by_its_parent_whichever_is_named() -> None:
    order = load("configurable-braintree")["order"]
    assert as_pairs(order_shapes.refund_lines(order, lines((1005, 1)))) == [(1004, 1)]
    assert as_pairs(order_shapes.refund_lines(order, lines((1004, 2), (1006, 1)))) == [
        (1004, 2), (1006, 1)]
    with pytest.raises(InvalidRefund, match="order items 1004 and 1005 name the same"):
        order_shapes.refund_lines(order, lines((1004, 1), (1005, 1)))


def test_a_fixed_bundle_is_refunded_whole_by_its_parent() -> None:
    order = load("bundle-fixed-banktransfer")["order"]
    assert as_pairs(order_shapes.refund_lines(order, lines((1007, 1)))) == [(1007, 1)]
    with pytest.raises(InvalidRefund, match=r"items: order item 1009 \(24-WG084\) is a selection "
                                            r"of the fixed-price bundle 1007"):
        order_shapes.refund_lines(order, lines((1009, 1)))


def test_a_dynamic_bundle_is_refunded_by_its_children_at_the_parent_ratio() -> None:
    order = load("bundle-dynamic-stripe")["order"]  # parent 1 = child 1012 x1 + 1013 x2
    assert as_pairs(order_shapes.refund_lines(order, lines((1011, 1)))) == [(1012, 1), (1013, 2)]
    assert as_pairs(order_shapes.refund_lines(order, lines((1013, 1)))) == [(1013, 1)]
    with pytest.raises(InvalidRefund, match="name the same product line"):
        order_shapes.refund_lines(order, lines((1011, 1), (1013, 1)))


def test_a_ratio_that_does_not_divide_is_refused_by_name() -> None:
    order = load("bundle-dynamic-stripe")["order"]
    order["items"][0]["qty_ordered"] = 3.0  # three sets, of which 1 and 2 selections
    with pytest.raises(InvalidRefund, match=r"items: qty 1 of order item 1011 is 0\.333333 of "
                                            r"order item 1012"):
        order_shapes.refund_lines(order, lines((1011, 1)))
    assert as_pairs(order_shapes.refund_lines(order, lines((1011, 3)))) == [(1012, 1), (1013, 2)]


def test_a_stock_list_is_sent_as_given_each_id_a_row_of_the_memo() -> None:
    data = load("configurable-braintree")
    call = plan_refund(
        request(order_id=103, items=[{"order_item_id": 1005, "qty": 1}], return_to_stock=[1005]),
        marker="refund-worker:x", order=data["order"], invoices=data["invoices"],
    )
    assert call.body["items"] == [{"order_item_id": 1004, "qty": 1}]
    assert call.body["arguments"]["extension_attributes"] == {"return_to_stock_items": [1005]}


def test_unknown_items_pass_through_for_magento_to_name() -> None:
    order = load("simple-checkmo")["order"]
    assert as_pairs(order_shapes.refund_lines(order, lines((4242, 1)))) == [(4242, 1)]


def test_the_body_names_the_parent_and_validates() -> None:
    data = load("configurable-braintree")
    call = plan_refund(
        request(order_id=103, items=[{"order_item_id": 1005, "qty": 1}], return_to_stock=True),
        marker="refund-worker:x", order=data["order"], invoices=data["invoices"],
    )
    assert call.body["items"] == [{"order_item_id": 1004, "qty": 1}]
    assert call.body["arguments"]["extension_attributes"] == {"return_to_stock_items": [1004]}
    assert body_errors("invoice_refund", call.body) == []


# -- several invoices ------------------------------------------------------------------------


def test_the_invoice_that_invoiced_the_items_is_chosen() -> None:
    data = load("several-invoices-stripe")  # 307: 1016, 1017 (+ shipping); 308: 1018
    order, invoices = data["order"], data["invoices"]

    def chosen(**fields: Any) -> int:
        req = request(order_id=107, **fields)
        invoice = order_shapes.choose_invoice(req, order, invoices, req.items)
        assert invoice is not None
        return int(invoice["entity_id"])

    assert chosen(items=[{"order_item_id": 1018, "qty": 1}]) == 308
    assert chosen(items=[{"order_item_id": 1016, "qty": 1},
                         {"order_item_id": 1017, "qty": 2}]) == 307
    assert chosen(invoice_id=308, items=[{"order_item_id": 1018, "qty": 1}]) == 308


def test_items_of_two_invoices_are_refused_with_the_split() -> None:
    data = load("several-invoices-stripe")
    req = request(order_id=107, items=[{"order_item_id": 1016, "qty": 1},
                                       {"order_item_id": 1018, "qty": 1}])
    with pytest.raises(InvalidRefund) as refused:
        order_shapes.choose_invoice(req, data["order"], data["invoices"], req.items)
    assert str(refused.value) == (
        "items: the items to refund were invoiced on 2 invoices of order 107, and one online "
        "refund (RefundInvoice) takes back one invoice: send one request per invoice: "
        "invoice_id 307 with items 1016 (MJ09-L-Yellow); invoice_id 308 with items 1018 (24-WB04)"
    )
    everything = request(order_id=107)
    with pytest.raises(InvalidRefund, match="send one request per invoice: invoice_id 307 with "
                                            r"items 1016 \(MJ09-L-Yellow\), 1017"):
        order_shapes.choose_invoice(everything, data["order"], data["invoices"], None)


def test_a_named_invoice_that_did_not_invoice_the_items_is_refused() -> None:
    data = load("several-invoices-stripe")
    req = request(order_id=107, invoice_id=308, items=[{"order_item_id": 1016, "qty": 1}])
    with pytest.raises(InvalidRefund, match=r"invoice_id: invoice 308 did not invoice order "
                                            r"items 1016 \(MJ09-L-Yellow\)"):
        order_shapes.choose_invoice(req, data["order"], data["invoices"], req.items)
    other = request(order_id=101, invoice_id=308)
    with pytest.raises(InvalidRefund, match="invoice 308 does not belong to order 101"):
        order_shapes.choose_invoice(other, data["order"], data["invoices"], None)


# -- currency --------------------------------------------------------------------------------

FOREIGN = load("foreign-currency-paypal")["order"]  # EUR base, USD order at 1.0862


def test_same_currency_amounts_are_sent_as_given() -> None:
    order = load("simple-checkmo")["order"]
    assert order_shapes.shipping_to_base(order, Decimal("2.5")) == Decimal("2.5")
    assert order_shapes.adjustment_to_base(order, Decimal("1.2345"), "x") == Decimal("1.2345")


def test_foreign_shipping_is_converted_by_the_orders_own_ratio() -> None:
    # 13.03 USD of shipping is 12.00 EUR: 6.52 USD is 6.00 EUR (13.03 x 6/12 = 6.515 -> 6.52).
    assert order_shapes.shipping_to_base(FOREIGN, Decimal("6.52")) == Decimal("6.00")
    assert order_shapes.shipping_to_base(FOREIGN, Decimal("13.03")) == Decimal("12")  # all left
    with pytest.raises(InvalidRefund, match=r"shipping_amount: 13.04 USD is more than the 13.03"):
        order_shapes.shipping_to_base(FOREIGN, Decimal("13.04"))


def test_foreign_adjustments_are_converted_exactly_or_refused_with_the_nearest() -> None:
    # 10.00 EUR x 1.0862 = 10.862 -> 10.86 USD.
    assert order_shapes.adjustment_to_base(FOREIGN, Decimal("10.86"), "a") == Decimal("10.00")
    # 0.01 EUR is 1.0862 US cents, so some cents cannot be reached: 9.22 EUR -> 10.01 USD,
    # 9.23 EUR -> 10.03 USD (10.025766). 10.02 USD is refused with the nearest two.
    assert order_shapes.adjustment_to_base(FOREIGN, Decimal("10.03"), "a") == Decimal("9.23")
    with pytest.raises(InvalidRefund) as refused:
        order_shapes.adjustment_to_base(FOREIGN, Decimal("10.02"), "adjustment_positive")
    assert str(refused.value) == (
        "adjustment_positive: 10.02 USD cannot be refunded exactly: Magento takes it in the base "
        "currency (EUR) and converts it at the order's rate; the nearest amounts it can refund "
        "are 10.01 or 10.03 USD"
    )
    with pytest.raises(InvalidRefund, match=r"10\.865 USD cannot be refunded exactly"):
        order_shapes.adjustment_to_base(FOREIGN, Decimal("10.8650"), "adjustment_positive")


def test_shipping_on_an_order_without_shipping_is_refused_early() -> None:
    with pytest.raises(InvalidRefund, match="the order has no shipping to refund"):
        order_shapes.shipping_to_base(load("virtual-purchaseorder")["order"], Decimal(5))


RATES = st.decimals(min_value=Decimal("0.5"), max_value=Decimal("3"), places=4)
BASE_CENTS = st.integers(min_value=0, max_value=100_000)


@given(rate=RATES, cents=BASE_CENTS)
def test_every_amount_magento_can_make_is_accepted_and_comes_back_exactly(
    rate: Decimal, cents: int
) -> None:
    order = {"order_currency_code": "USD", "base_currency_code": "EUR", "base_to_order_rate": rate}
    amount = order_shapes.round_price(Decimal(cents) / 100 * rate)  # what Magento can refund
    base = order_shapes.adjustment_to_base(order, amount, "adjustment_positive")
    assert order_shapes.round_price(base * rate) == amount


@given(rate=RATES, amount=st.decimals(min_value=0, max_value=1000, places=2))
def test_a_converted_amount_is_exact_or_refused(rate: Decimal, amount: Decimal) -> None:
    order = {"order_currency_code": "USD", "base_currency_code": "EUR", "base_to_order_rate": rate}
    try:
        base = order_shapes.adjustment_to_base(order, amount, "adjustment_positive")
    except InvalidRefund as refused:
        assert "nearest amounts it can refund" in str(refused)
    else:
        assert order_shapes.round_price(base * rate) == amount


@given(shipped=st.integers(min_value=1, max_value=50_000),
       base=st.integers(min_value=1, max_value=50_000), part=st.integers(0, 100))
def test_converted_shipping_comes_back_exactly(shipped: int, base: int, part: int) -> None:
    total, base_total = Decimal(shipped) / 100, Decimal(base) / 100
    order = {"order_currency_code": "USD", "base_currency_code": "EUR",
             "base_to_order_rate": Decimal("1.1"), "shipping_amount": total,
             "base_shipping_amount": base_total, "shipping_refunded": 0}
    amount = order_shapes.round_price(total * part / 100)
    try:
        sent = order_shapes.shipping_to_base(order, amount)
    except InvalidRefund as refused:
        assert "cannot be refunded exactly" in str(refused)
        return
    if amount == total:
        assert sent == base_total
    else:
        assert order_shapes.round_price(total * sent / base_total) == amount


@given(sets=st.integers(1, 5), per_set=st.lists(st.integers(1, 4), min_size=1, max_size=4),
       data=st.data())
def test_lines_sent_never_name_a_dummy_and_keep_the_sets(
    sets: int, per_set: list[int], data: st.DataObject
) -> None:
    """A dynamic bundle of ``sets`` sets (children ``per_set`` each) and a configurable: whatever
    the caller names, no line sent is a dummy, and a bundle's parent becomes whole sets."""
    items: list[dict[str, Any]] = [
        {"item_id": 1, "product_type": "bundle", "qty_ordered": sets, "price": 10},
        *({"item_id": 10 + n, "product_type": "simple", "parent_item_id": 1,
           "qty_ordered": sets * k, "price": 5} for n, k in enumerate(per_set)),
        {"item_id": 2, "product_type": "configurable", "qty_ordered": 2, "price": 30},
        {"item_id": 3, "product_type": "simple", "parent_item_id": 2, "qty_ordered": 2,
         "price": 0},
    ]
    order = {"items": items}
    by_id = order_shapes.items_by_id(order)
    bundle_qty = data.draw(st.integers(1, sets))
    named = data.draw(st.sampled_from([2, 3]))
    sent = order_shapes.refund_lines(order, lines((1, bundle_qty), (named, 1)))
    kinds = {order_shapes.role(by_id, line.order_item_id) for line in sent}
    assert kinds <= {"bundle_dynamic_selection", "configurable"}
    assert as_pairs(sent) == [
        *((10 + n, Decimal(bundle_qty * k)) for n, k in enumerate(per_set)), (2, Decimal(1))]
