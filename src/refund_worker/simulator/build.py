"""Compact order specs (``orderspec``) turned into the entities Magento would store.

The compact spec derives the amounts (row total = price x qty, grand total = subtotal + tax +
shipping, one invoice for everything invoiced, base currency = order currency); this module
writes them out as every field Magento fills for such an order after checkout and invoicing:
addresses, payment, ``extension_attributes`` (shipping assignment, payment title, applied
taxes), the ``*_invoiced`` totals. Fields Magento leaves null (``*_refunded`` before a refund,
``*_canceled`` on an order nothing was canceled of, coupons, ...) are left out. Imported
orders (:mod:`.imports`) skip all this: they are stored as given.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from .entities import METHOD_TITLES, Invoice, InvoiceItem, Order, OrderItem, is_online_method
from .orderspec import ItemSpec, OrderSpec

STORE_NAME = "Main Website\nMain Website Store\nDefault Store View"
VIRTUAL_TYPES = frozenset({"virtual", "downloadable", "giftcard"})
SHIPPING_METHOD = "flatrate_flatrate"
SHIPPING_DESCRIPTION = "Flat Rate - Fixed"
TAX_CODE = "US-MI-*-Rate 1"
WEEE_FIELDS = [
    "weee_tax_applied_amount",
    "weee_tax_applied_row_amount",
    "weee_tax_disposition",
    "weee_tax_row_disposition",
    "base_weee_tax_applied_amount",
    "base_weee_tax_applied_row_amnt",
    "base_weee_tax_disposition",
    "base_weee_tax_row_disposition",
]


def _r(amount: float) -> float:
    return round(amount + 0.0, 2) + 0.0


@dataclass(frozen=True, slots=True)
class Ids:
    """The ids a compact order takes."""

    order_id: int
    increment_id: str
    first_item_id: int
    billing_address_id: int
    shipping_address_id: int


def _address(spec: OrderSpec, entity_id: int, order_id: int, kind: str) -> dict[str, Any]:
    return {
        "address_type": kind,
        "city": "Calder",
        "country_id": "US",
        "customer_address_id": 1,
        "customer_id": 1,
        "email": spec.customer_email,
        "entity_id": entity_id,
        "firstname": spec.customer_firstname,
        "lastname": spec.customer_lastname,
        "parent_id": order_id,
        "postcode": "49628-7978",
        "region": "Michigan",
        "region_code": "MI",
        "region_id": 33,
        "street": ["6146 Honey Bluff Parkway"],
        "telephone": "(555) 229-3326",
    }


def _item(spec: ItemSpec, item_id: int, order_id: int, created: str) -> OrderItem:
    row_total = _r(spec.price * spec.qty)
    tax = _r(spec.tax * spec.qty)
    row_invoiced = _r(spec.price * spec.qty_invoiced)
    tax_invoiced = _r(spec.tax * spec.qty_invoiced)
    price_incl_tax = _r(spec.price + spec.tax)
    virtual = spec.product_type in VIRTUAL_TYPES
    amounts = {
        "price": spec.price,
        "original_price": spec.price,
        "price_incl_tax": price_incl_tax,
        "row_total": row_total,
        "row_total_incl_tax": _r(row_total + tax),
        "row_invoiced": row_invoiced,
        "tax_amount": tax,
        "tax_invoiced": tax_invoiced,
        "discount_amount": 0.0,
        "discount_invoiced": 0.0,
        "discount_tax_compensation_amount": 0.0,
        "discount_tax_compensation_invoiced": 0.0,
        "amount_refunded": 0.0,
    }
    data: dict[str, Any] = {
        "item_id": item_id,
        "order_id": order_id,
        "quote_item_id": item_id,
        "store_id": 1,
        "created_at": created,
        "updated_at": created,
        "product_id": spec.product_id or 1000 + item_id,
        "product_type": spec.product_type,
        "sku": spec.sku,
        "name": spec.name,
        "weight": 0.0 if virtual else 1.0,
        "row_weight": 0.0 if virtual else spec.qty,
        "is_virtual": int(virtual),
        "is_qty_decimal": int(spec.is_qty_decimal),
        "no_discount": 0,
        "free_shipping": 0,
        "qty_ordered": spec.qty,
        "qty_invoiced": spec.qty_invoiced,
        "qty_shipped": spec.qty_shipped,
        "qty_refunded": 0.0,
        "qty_canceled": spec.qty_canceled,
        "qty_returned": 0.0,
        "tax_percent": round(spec.tax / spec.price * 100, 4) if spec.price else 0.0,
        "discount_percent": 0.0,
        "tax_before_discount": tax,
        "base_tax_before_discount": tax,
        "base_cost": 0.0,
        "weee_tax_applied": "[]",
    }
    for key, value in amounts.items():
        data[key] = value
        data["base_" + key] = value
    for key in WEEE_FIELDS:  # Magento_Weee fills them even without a fixed product tax
        data[key] = 0.0
    return OrderItem(data)


def build_order(spec: OrderSpec, ids: Ids, created: str) -> Order:
    """The order (no invoice yet): items, totals, addresses, payment, extension attributes."""
    order_id = ids.order_id
    items = [
        _item(item, ids.first_item_id + offset, order_id, created)
        for offset, item in enumerate(spec.items)
    ]
    subtotal = _r(sum(item.row_total for item in items))
    tax = _r(sum(item.tax_amount for item in items))
    virtual = all(item.is_virtual for item in items)
    shipping = spec.shipping
    grand_total = _r(subtotal + tax + shipping)
    currency = spec.currency
    billing = _address(spec, ids.billing_address_id, order_id, "billing")
    amounts = {
        "subtotal": subtotal,
        "subtotal_incl_tax": _r(subtotal + tax),
        "tax_amount": tax,
        "shipping_amount": shipping,
        "shipping_incl_tax": shipping,
        "shipping_tax_amount": 0.0,
        "shipping_discount_amount": 0.0,
        "discount_amount": 0.0,
        "discount_tax_compensation_amount": 0.0,
        "grand_total": grand_total,
        "total_due": grand_total,
    }
    data: dict[str, Any] = {
        "entity_id": order_id,
        "increment_id": ids.increment_id,
        "state": spec.state,
        "status": spec.status,
        "store_id": 1,
        "store_name": STORE_NAME,
        "quote_id": order_id,
        "protect_code": hashlib.sha256(f"order-{order_id}".encode()).hexdigest()[:32],
        "remote_ip": "127.0.0.1",
        "customer_id": 1,
        "customer_group_id": 1,
        "customer_is_guest": 0,
        "customer_email": spec.customer_email,
        "customer_firstname": spec.customer_firstname,
        "customer_lastname": spec.customer_lastname,
        "customer_note_notify": 0,
        "email_sent": 1,
        "base_currency_code": currency,
        "global_currency_code": currency,
        "order_currency_code": currency,
        "store_currency_code": currency,
        "base_to_global_rate": 1.0,
        "base_to_order_rate": 1.0,
        "store_to_base_rate": 0.0,
        "store_to_order_rate": 0.0,
        "is_virtual": int(virtual),
        "total_item_count": len(items),
        "total_qty_ordered": sum(item.qty_ordered for item in items),
        "weight": sum(float(item.data["row_weight"]) for item in items),
        "billing_address_id": ids.billing_address_id,
        "created_at": created,
        "updated_at": created,
        "hold_before_state": spec.hold_before_state,
        "hold_before_status": "processing" if spec.hold_before_state else None,
    }
    if not virtual:
        data["shipping_description"] = SHIPPING_DESCRIPTION
    for key, value in amounts.items():
        data[key] = value
        data["base_" + key] = value
    data["base_shipping_discount_tax_compensation_amnt"] = 0.0
    data["shipping_discount_tax_compensation_amount"] = 0.0
    _cancel(data, items)
    method = spec.payment_method
    data["billing_address"] = billing
    data["payment"] = {
        "account_status": None,
        "additional_information": [METHOD_TITLES.get(method, method)],
        "amount_ordered": grand_total,
        "base_amount_ordered": grand_total,
        "base_shipping_amount": shipping,
        "shipping_amount": shipping,
        "cc_last4": None,
        "entity_id": order_id,
        "parent_id": order_id,
        "method": method,
    }
    data["status_histories"] = []
    data["extension_attributes"] = _extension(spec, ids, billing, tax, method, virtual)
    return Order(data, items)


def _cancel(data: dict[str, Any], items: list[OrderItem]) -> None:
    canceled = [item for item in items if item.qty_canceled > 0]
    if not canceled:
        return
    subtotal = _r(sum(item.price * item.qty_canceled for item in canceled))
    tax = _r(sum(item.tax_amount / item.qty_ordered * item.qty_canceled for item in canceled))
    shipping = data["shipping_amount"] if data["state"] == "canceled" else 0.0
    for key, value in (
        ("subtotal_canceled", subtotal),
        ("tax_canceled", tax),
        ("shipping_canceled", shipping),
        ("discount_canceled", 0.0),
        ("total_canceled", _r(subtotal + tax + shipping)),
    ):
        data[key] = value
        data["base_" + key] = value
    for item in canceled:
        item.data["tax_canceled"] = _r(item.tax_amount / item.qty_ordered * item.qty_canceled)


def _extension(
    spec: OrderSpec,
    ids: Ids,
    billing: dict[str, Any],
    tax: float,
    method: str,
    virtual: bool,
) -> dict[str, Any]:
    shipping: dict[str, Any] = {"total": {}}
    if not virtual:
        address = dict(billing, address_type="shipping", entity_id=ids.shipping_address_id)
        shipping = {"address": address, "method": SHIPPING_METHOD, "total": {}}
    applied: list[dict[str, Any]] = []
    if tax:
        applied = [
            {
                "code": TAX_CODE,
                "title": TAX_CODE,
                "percent": 8.25,
                "amount": tax,
                "base_amount": tax,
            }
        ]
    return {
        "shipping_assignments": [{"shipping": shipping, "items": [], "stock_id": 1}],
        "payment_additional_info": [
            {"key": "method_title", "value": METHOD_TITLES.get(method, method)}
        ],
        "applied_taxes": applied,
        "item_applied_taxes": [{"type": "product", "applied_taxes": applied}] if applied else [],
        "converting_from_quote": True,
    }


def build_invoice(
    order: Order,
    *,
    invoice_id: int,
    increment_id: str,
    first_item_id: int,
    created: str,
) -> Invoice:
    """The one paid invoice of a compact order, and the order's ``*_invoiced`` totals."""
    invoiced = [item for item in order.items if item.qty_invoiced > 0]
    items = []
    for offset, item in enumerate(invoiced):
        row = item.row_invoiced
        tax = item.tax_invoiced
        line: dict[str, Any] = {
            "entity_id": first_item_id + offset,
            "parent_id": invoice_id,
            "order_item_id": item.item_id,
            "product_id": item.product_id,
            "sku": item.sku,
            "name": item.name,
            "qty": item.qty_invoiced,
            "base_cost": 0.0,
        }
        for key, value in (
            ("price", item.price),
            ("price_incl_tax", item.price_incl_tax),
            ("row_total", row),
            ("row_total_incl_tax", _r(row + tax)),
            ("tax_amount", tax),
            ("discount_amount", 0.0),
            ("discount_tax_compensation_amount", 0.0),
        ):
            line[key] = value
            line["base_" + key] = value
        items.append(InvoiceItem(line))
    data = order.data
    subtotal = _r(sum(item.row_invoiced for item in invoiced))
    tax = _r(sum(item.tax_invoiced for item in invoiced))
    shipping = order.shipping_amount
    grand_total = _r(subtotal + tax + shipping)
    online = is_online_method(order.payment_method)
    transaction_id = f"txn-{order.entity_id:06d}-{invoice_id:04d}" if online else None
    invoice_data: dict[str, Any] = {
        "entity_id": invoice_id,
        "increment_id": increment_id,
        "order_id": order.entity_id,
        "store_id": 1,
        "state": 2,
        "transaction_id": transaction_id,
        "can_void_flag": 0,
        "billing_address_id": data.get("billing_address_id"),
        "shipping_address_id": None if order.is_virtual else _shipping_address_id(order),
        "total_qty": sum(item.qty_invoiced for item in invoiced),
        "created_at": created,
        "updated_at": created,
    }
    for key in ("base_currency_code", "global_currency_code", "order_currency_code"):
        invoice_data[key] = data[key]
    invoice_data["store_currency_code"] = data["store_currency_code"]
    for key in ("base_to_global_rate", "base_to_order_rate"):
        invoice_data[key] = data[key]
    invoice_data["store_to_base_rate"] = invoice_data["store_to_order_rate"] = 0.0
    for key, value in (
        ("subtotal", subtotal),
        ("subtotal_incl_tax", _r(subtotal + tax)),
        ("tax_amount", tax),
        ("shipping_amount", shipping),
        ("shipping_incl_tax", shipping),
        ("shipping_tax_amount", 0.0),
        ("discount_amount", 0.0),
        ("discount_tax_compensation_amount", 0.0),
        ("grand_total", grand_total),
    ):
        invoice_data[key] = value
        invoice_data["base_" + key] = value
    invoice_data["shipping_discount_tax_compensation_amount"] = 0.0
    invoice_data["base_shipping_discount_tax_compensation_amnt"] = 0.0
    for key, value in (
        ("subtotal_invoiced", subtotal),
        ("tax_invoiced", tax),
        ("shipping_invoiced", shipping),
        ("discount_invoiced", 0.0),
        ("discount_tax_compensation_invoiced", 0.0),
        ("total_invoiced", grand_total),
        ("total_paid", grand_total),
        ("total_due", _r(order.grand_total - grand_total)),
    ):
        data[key] = value
        data["base_" + key] = value
    data["base_total_invoiced_cost"] = 0.0
    payment = order.payment
    payment.update(
        {
            "amount_paid": grand_total,
            "base_amount_paid": grand_total,
            "shipping_captured": shipping,
            "base_shipping_captured": shipping,
        }
    )
    if online:
        payment["base_amount_paid_online"] = grand_total
        payment["last_trans_id"] = transaction_id
    order.invoice_ids.append(invoice_id)
    return Invoice(invoice_data, items)


def _shipping_address_id(order: Order) -> int | None:
    for assignment in order.data["extension_attributes"]["shipping_assignments"]:
        address = assignment["shipping"].get("address")
        if address:
            return int(address["entity_id"])
    return None
