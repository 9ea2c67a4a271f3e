"""Orders in Magento's own entity form, as exported from a shop, checked and kept as given.

The import format is one JSON object per order::

    {"order": {...},          # what GET /V1/orders/{id} returns
     "invoices": [{...}],     # what GET /V1/invoices/{id} returns, for each invoice (optional)
     "creditmemos": [{...}]}  # what GET /V1/creditmemo/{id} returns, for each (optional)

A file holds one such object, a list of them, or ``{"orders": [...]}`` (compact specs may be
mixed in). Nothing is re-derived: totals, quantities, states and statuses stay as exported, so
an order with ``grand_total`` 100 over one item of row total 10, a custom status, a partial
refund already made or several invoices is held as it is. What is checked, each with a message
naming the field:

* every scalar field the schema knows has the schema's JSON type (a number is not a string);
* ``order.entity_id`` and each ``items[].item_id`` are positive integers, unique across the
  simulator; ``state`` is one of Magento's states (a custom *status* is fine);
* ``parent_item_id`` names an item of the same order; invoices and credit memos belong to the
  order (``order_id``), their ``items[].order_item_id`` name its items, a credit memo's
  ``invoice_id`` names one of the imported invoices.

Derived views are rebuilt on output, as Magento builds them from the rows: ``items[].
parent_item`` and ``shipping_assignments[].items`` from the items, the shipping assignment's
``total`` from the order's shipping fields. An item may carry ``product_options`` (the
``sales_order_item`` column REST does not show: ``product_calculations``, ``shipment_type``,
``bundle_selection_attributes``) to say how a bundle is priced; it is kept out of the output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import interfaces
from .entities import (
    CREDITMEMO_STATE_CANCELED,
    DEFAULT_STATUS,
    Creditmemo,
    Invoice,
    InvoiceItem,
    Order,
    OrderItem,
)
from .fields import CREDITMEMO_FLOAT_COLUMNS, CREDITMEMO_INT_COLUMNS, CREDITMEMO_STRING_COLUMNS
from .orderspec import SpecError
from .totals import InvoiceRefunds

CREDITMEMO = interfaces.Interface(
    "sales-data-creditmemo-interface",
    " ".join(CREDITMEMO_FLOAT_COLUMNS),
    " ".join(CREDITMEMO_INT_COLUMNS),
    " ".join(CREDITMEMO_STRING_COLUMNS),
)
CREDITMEMO_ITEM = interfaces.Interface(
    "sales-data-creditmemo-item-interface",
    "base_cost base_discount_amount base_discount_tax_compensation_amount base_price "
    "base_price_incl_tax base_row_total base_row_total_incl_tax base_tax_amount "
    "base_weee_tax_applied_amount base_weee_tax_applied_row_amnt base_weee_tax_disposition "
    "base_weee_tax_row_disposition discount_amount discount_tax_compensation_amount price "
    "price_incl_tax qty row_total row_total_incl_tax tax_amount weee_tax_applied_amount "
    "weee_tax_applied_row_amount weee_tax_disposition weee_tax_row_disposition",
    "entity_id order_item_id parent_id product_id",
    "additional_data description name sku weee_tax_applied",
)
COMMENT = interfaces.Interface(
    "sales-data-creditmemo-comment-interface",
    "",
    "entity_id is_customer_notified is_visible_on_front parent_id",
    "comment created_at",
)
MAX_ERRORS = 10


def is_import(data: Any) -> bool:
    """An import object (``{"order": {...}}``) rather than a compact spec."""
    return isinstance(data, Mapping) and isinstance(data.get("order"), Mapping)


@dataclass
class Imported:
    """One checked import: the records, ready to be stored."""

    order: Order
    invoices: list[Invoice]
    creditmemos: list[Creditmemo]
    invoice_refunds: dict[int, InvoiceRefunds] = field(default_factory=dict)


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def types(self, data: Mapping[str, Any], interface: interfaces.Interface, where: str) -> None:
        self.errors.extend(interface.type_errors(data, where))

    def fail(self, message: str) -> None:
        self.errors.append(message)

    def positive_int(self, data: Mapping[str, Any], key: str, where: str) -> int:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(f"{where}{key} must be a positive integer")
            return 0
        return value

    def dicts(self, data: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
        value = data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            self.fail(f"{where}{key} must be a list of objects")
            return []
        return [dict(v) for v in value]

    def raise_if_failed(self) -> None:
        if self.errors:
            shown = self.errors[:MAX_ERRORS]
            more = len(self.errors) - len(shown)
            suffix = f" (and {more} more)" if more else ""
            raise SpecError("; ".join(shown) + suffix)


def parse(data: Mapping[str, Any]) -> Imported:
    """Check one import object and build its records (ids not yet checked for collisions)."""
    check = _Checker()
    raw_order = dict(data["order"])
    for key in data:
        if key not in ("order", "invoices", "creditmemos"):
            check.fail(f"unknown key {key!r}: an import holds order, invoices, creditmemos")
    order_id = check.positive_int(raw_order, "entity_id", "order.")
    state = raw_order.get("state")
    if state not in DEFAULT_STATUS:
        check.fail(f"order.state must be one of {sorted(DEFAULT_STATUS)}")
    if not isinstance(raw_order.get("status"), str) or not raw_order.get("status"):
        check.fail("order.status must be a non-empty string")
    check.types(raw_order, interfaces.ORDER, "order.")
    for key, interface in (
        ("billing_address", interfaces.ADDRESS),
        ("payment", interfaces.PAYMENT),
    ):
        nested = raw_order.get(key)
        if nested is not None and not isinstance(nested, Mapping):
            check.fail(f"order.{key} must be an object")
        elif nested is not None:
            check.types(nested, interface, f"order.{key}.")
    for index, history in enumerate(check.dicts(raw_order, "status_histories", "order.")):
        check.types(history, interfaces.STATUS_HISTORY, f"order.status_histories[{index}].")
    payment = raw_order.get("payment")
    if not isinstance(payment, Mapping) or not isinstance(payment.get("method"), str):
        check.fail("order.payment.method must be a string")
    raw_items = check.dicts(raw_order, "items", "order.")
    if not raw_items:
        check.fail("order.items must be a non-empty list of objects")
    items = _items(check, raw_items, order_id)
    check.raise_if_failed()
    raw_order.pop("items", None)
    if isinstance(raw_order.get("extension_attributes"), Mapping):
        raw_order["extension_attributes"] = dict(raw_order["extension_attributes"])
    order = Order(raw_order, items)
    invoices = [
        _invoice(check, raw, index, order)
        for index, raw in enumerate(_list(check, data, "invoices"))
    ]
    by_invoice = {invoice.entity_id: invoice for invoice in invoices}
    memos = [
        _creditmemo(check, raw, index, order, by_invoice)
        for index, raw in enumerate(_list(check, data, "creditmemos"))
    ]
    check.raise_if_failed()
    order.invoice_ids.extend(invoice.entity_id for invoice in invoices)
    order.creditmemo_ids.extend(memo.entity_id for memo in memos)
    imported = Imported(order, invoices, memos)
    for memo in memos:
        invoice_id = memo.invoice_id
        if invoice_id is None or memo.columns.get("state") == CREDITMEMO_STATE_CANCELED:
            continue
        taken = imported.invoice_refunds.setdefault(invoice_id, InvoiceRefunds())
        for line in memo.items:
            item_id = int(line.get("order_item_id") or 0)
            taken.qty[item_id] = taken.qty.get(item_id, 0.0) + float(line.get("qty") or 0)
        for key in (
            "tax_amount",
            "base_tax_amount",
            "discount_tax_compensation_amount",
            "base_discount_tax_compensation_amount",
        ):
            setattr(taken, key, getattr(taken, key) + float(memo.columns.get(key) or 0))
    return imported


def _list(check: _Checker, data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    return check.dicts(data, key, "")


def _items(check: _Checker, raw_items: list[dict[str, Any]], order_id: int) -> list[OrderItem]:
    seen: set[int] = set()
    items = []
    for index, raw in enumerate(raw_items):
        where = f"order.items[{index}]."
        item_id = check.positive_int(raw, "item_id", where)
        if item_id in seen:
            check.fail(f"{where}item_id {item_id} appears twice")
        seen.add(item_id)
        if not isinstance(raw.get("sku"), str) or not raw.get("sku"):
            check.fail(f"{where}sku must be a non-empty string")
        if raw.get("order_id") is not None and raw.get("order_id") != order_id:
            check.fail(f"{where}order_id must be the order's entity_id {order_id}")
        check.types(raw, interfaces.ORDER_ITEM, where)
        raw.pop("parent_item", None)  # rebuilt from parent_item_id on output
        options = raw.pop("product_options", None)
        if options is not None and not isinstance(options, Mapping):
            check.fail(f"{where}product_options must be an object")
            options = None
        raw["order_id"] = order_id
        items.append(OrderItem(raw, dict(options) if options else None))
    for index, item in enumerate(items):
        parent_id = item.parent_item_id
        if parent_id is not None and (parent_id not in seen or parent_id == item.item_id):
            check.fail(
                f"order.items[{index}].parent_item_id {parent_id} is not an item of the order"
            )
    return items


def _invoice(check: _Checker, raw: dict[str, Any], index: int, order: Order) -> Invoice:
    where = f"invoices[{index}]."
    check.positive_int(raw, "entity_id", where)
    if raw.get("order_id") != order.entity_id:
        check.fail(f"{where}order_id must be the order's entity_id {order.entity_id}")
    check.types(raw, interfaces.INVOICE, where)
    lines = []
    for position, line in enumerate(check.dicts(raw, "items", where)):
        line_where = f"{where}items[{position}]."
        check.types(line, interfaces.INVOICE_ITEM, line_where)
        if order.item(int(line.get("order_item_id") or 0)) is None:
            check.fail(f"{line_where}order_item_id must name an item of the order")
        lines.append(InvoiceItem(line))
    comments = check.dicts(raw, "comments", where)
    for position, comment in enumerate(comments):
        check.types(comment, interfaces.INVOICE_COMMENT, f"{where}comments[{position}].")
    raw.pop("items", None)
    raw.pop("comments", None)
    return Invoice(raw, lines, comments)


def _creditmemo(
    check: _Checker,
    raw: dict[str, Any],
    index: int,
    order: Order,
    invoices: Mapping[int, Invoice],
) -> Creditmemo:
    where = f"creditmemos[{index}]."
    check.positive_int(raw, "entity_id", where)
    if raw.get("order_id") != order.entity_id:
        check.fail(f"{where}order_id must be the order's entity_id {order.entity_id}")
    invoice_id = raw.get("invoice_id")
    if invoice_id is not None and invoice_id not in invoices:
        check.fail(f"{where}invoice_id {invoice_id!r} is not one of the imported invoices")
    check.types(raw, CREDITMEMO, where)
    lines = check.dicts(raw, "items", where)
    for position, line in enumerate(lines):
        line_where = f"{where}items[{position}]."
        check.types(line, CREDITMEMO_ITEM, line_where)
        if order.item(int(line.get("order_item_id") or 0)) is None:
            check.fail(f"{line_where}order_item_id must name an item of the order")
    comments = check.dicts(raw, "comments", where)
    for position, comment in enumerate(comments):
        check.types(comment, COMMENT, f"{where}comments[{position}].")
    raw.pop("items", None)
    raw.pop("comments", None)
    return Creditmemo(raw, lines, comments)
