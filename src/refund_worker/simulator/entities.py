"""Orders, invoices and credit memos held by the simulator, stored as Magento's own JSON.

Each record keeps the entity exactly as ``GET /V1/orders/{id}`` (``/V1/invoices/{id}``,
``/V1/creditmemo/{id}``) shows it, in ``data``: amounts are stored, never re-derived from the
items, so an imported production order keeps its totals. The typed attributes below
(``order.total_paid``, ``item.qty_invoiced``...) read and write fields of ``data``; a missing or
null field reads as 0. The refund rules use both currencies: ``base_*`` fields are in the base
currency, the others in the order currency (``base_to_order_rate`` converts).

Items know their parent and children (``parent_item_id``) and whether Magento treats them as
*dummies* (``Order/Item.php``: ``isDummy``): a configurable's child and a fixed-price bundle's
children are dummies (the parent carries the price), a dynamic-price bundle's parent is a dummy
(the children carry the prices). Magento decides from ``product_options.product_calculations``
(a ``sales_order_item`` column that the REST API never shows); the simulator reads it when an
imported item carries ``product_options``, and otherwise infers it: a configurable parent
calculates, a bundle whose children carry no price is a fixed-price bundle.

JSON output follows Magento's: a field that is null is left out, except for the few getters
that the interface declares non-nullable (``payment.account_status``, ``payment.cc_last4``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar, overload

OFFLINE_METHODS = frozenset({"checkmo", "banktransfer", "cashondelivery", "purchaseorder"})
FREE_METHOD = "free"
METHOD_TITLES = {
    "checkmo": "Check / Money order",
    "banktransfer": "Bank Transfer Payment",
    "cashondelivery": "Cash On Delivery",
    "purchaseorder": "Purchase Order",
    "free": "No Payment Information Required",
    "braintree": "Credit Card (Braintree)",
    "braintree_paypal": "PayPal (Braintree)",
    "stripe_payments": "Pay by Card (Stripe)",
    "paypal_express": "PayPal Express Checkout",
}
DEFAULT_STATUS = {
    "new": "pending",
    "pending_payment": "pending_payment",
    "processing": "processing",
    "complete": "complete",
    "closed": "closed",
    "canceled": "canceled",
    "holded": "holded",
    "payment_review": "payment_review",
}
FORBIDDEN_REFUND_STATES = ("payment_review", "holded", "canceled", "closed")

CREDITMEMO_STATE_OPEN = 1
CREDITMEMO_STATE_REFUNDED = 2
CREDITMEMO_STATE_CANCELED = 3
INVOICE_STATE_PAID = 2

CALCULATE_CHILD = 0  # Catalog\Model\Product\Type\AbstractType::CALCULATE_CHILD
CALCULATE_PARENT = 1
SHIPMENT_SEPARATELY = 1
STOCKLESS_TYPES = frozenset({"configurable", "bundle", "grouped"})  # no stock of their own

# sales-data-total-interface: the shipping figures of a shipping assignment, as on the order.
SHIPPING_TOTAL_FIELDS = (
    *tuple(
        prefix + name
        for prefix in ("base_", "")
        for name in [
            "shipping_amount",
            "shipping_canceled",
            "shipping_discount_amount",
            "shipping_incl_tax",
            "shipping_invoiced",
            "shipping_refunded",
            "shipping_tax_amount",
            "shipping_tax_refunded",
        ]
    ),
    "shipping_discount_tax_compensation_amount",
    "base_shipping_discount_tax_compensation_amnt",
)

# Getters the interfaces declare non-nullable: Magento sends null rather than leaving them out.
_KEEP_NULL = {"payment": frozenset({"account_status", "cc_last4"})}


def is_online_method(method: str) -> bool:
    """Gateway methods (braintree, stripe_payments, paypal_express, ...) refund online."""
    return method not in OFFLINE_METHODS and method != FREE_METHOD


def clean(value: Any, keep_null: frozenset[str] = frozenset()) -> Any:
    """A deep copy of JSON ``value`` without null fields (Magento leaves them out)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if item is None:
                if key in keep_null:
                    out[key] = None
                continue
            if isinstance(item, (dict, list)):
                item = clean(item, _KEEP_NULL.get(key, frozenset()))
            out[key] = item
        return out
    if isinstance(value, list):
        return [clean(item) if isinstance(item, (dict, list)) else item for item in value]
    return value


R = TypeVar("R", bound="Record")


class Record:
    """A Magento entity held as its JSON object."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


class Num:
    """A numeric field of ``data``: null or missing reads as 0.0."""

    __slots__ = ("key",)

    def __init__(self) -> None:
        self.key = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Num: ...
    @overload
    def __get__(self, obj: Record, owner: type | None = None) -> float: ...
    def __get__(self, obj: Record | None, owner: type | None = None) -> float | Num:
        if obj is None:
            return self
        value = obj.data.get(self.key)
        return 0.0 if value is None else value

    def __set__(self, obj: Record, value: float) -> None:
        obj.data[self.key] = value


class Int:
    """An integer field of ``data``: null or missing reads as 0."""

    __slots__ = ("key",)

    def __init__(self) -> None:
        self.key = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Int: ...
    @overload
    def __get__(self, obj: Record, owner: type | None = None) -> int: ...
    def __get__(self, obj: Record | None, owner: type | None = None) -> int | Int:
        if obj is None:
            return self
        value = obj.data.get(self.key)
        return 0 if value is None else int(value)

    def __set__(self, obj: Record, value: int) -> None:
        obj.data[self.key] = value


class Str:
    """A string field of ``data``: null or missing reads as ""."""

    __slots__ = ("key",)

    def __init__(self) -> None:
        self.key = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Str: ...
    @overload
    def __get__(self, obj: Record, owner: type | None = None) -> str: ...
    def __get__(self, obj: Record | None, owner: type | None = None) -> str | Str:
        if obj is None:
            return self
        value = obj.data.get(self.key)
        return "" if value is None else str(value)

    def __set__(self, obj: Record, value: str) -> None:
        obj.data[self.key] = value


def _getter(kind: type, key: str) -> Any:
    if kind is Num:
        return lambda self: self.data.get(key) or 0.0
    if kind is Int:
        return lambda self: int(self.data.get(key) or 0)
    return lambda self: str(self.data.get(key) or "")


def _setter(key: str) -> Any:
    def set_field(self: Record, value: Any) -> None:
        self.data[key] = value

    return set_field


def fields_as_properties(cls: type[R]) -> type[R]:
    """Swap the Num/Int/Str descriptors for plain properties: same reads, a third faster.

    The descriptors stay what mypy sees (typed fields); the refund path reads about a hundred
    fields per refund, so the speed shows in ``bench/bench_simulator.py``.
    """
    for name, value in list(vars(cls).items()):
        if isinstance(value, (Num, Int, Str)):
            setattr(cls, name, property(_getter(type(value), value.key), _setter(value.key)))
    return cls


@fields_as_properties
class OrderItem(Record):
    """One ``sales_order_item`` row (``sales-data-order-item-interface``)."""

    __slots__ = ("children", "options", "parent")

    item_id = Int()
    order_id = Int()
    product_id = Int()
    sku = Str()
    name = Str()
    product_type = Str()
    qty_ordered = Num()
    qty_invoiced = Num()
    qty_shipped = Num()
    qty_refunded = Num()
    qty_canceled = Num()
    qty_returned = Num()
    price = Num()
    base_price = Num()
    price_incl_tax = Num()
    base_price_incl_tax = Num()
    row_total = Num()
    base_row_total = Num()
    row_total_incl_tax = Num()
    base_row_total_incl_tax = Num()
    row_invoiced = Num()
    base_row_invoiced = Num()
    amount_refunded = Num()
    base_amount_refunded = Num()
    tax_amount = Num()
    base_tax_amount = Num()
    tax_invoiced = Num()
    base_tax_invoiced = Num()
    tax_refunded = Num()
    base_tax_refunded = Num()
    discount_amount = Num()
    base_discount_amount = Num()
    discount_invoiced = Num()
    base_discount_invoiced = Num()
    discount_refunded = Num()
    base_discount_refunded = Num()
    discount_tax_compensation_invoiced = Num()
    base_discount_tax_compensation_invoiced = Num()
    discount_tax_compensation_refunded = Num()
    base_discount_tax_compensation_refunded = Num()
    base_cost = Num()
    updated_at = Str()

    def __init__(self, data: dict[str, Any], options: dict[str, Any] | None = None) -> None:
        super().__init__(data)
        self.parent: OrderItem | None = None
        self.children: list[OrderItem] = []
        # sales_order_item.product_options, which REST never shows: product_calculations,
        # shipment_type, bundle_selection_attributes. None when not known.
        self.options = options

    def _option(self, name: str) -> int | None:
        value = (self.options or {}).get(name)
        try:
            return None if value is None else int(value)
        except (TypeError, ValueError):
            return None

    @property
    def parent_item_id(self) -> int | None:
        value = self.data.get("parent_item_id")
        return None if value is None else int(value)

    @property
    def is_qty_decimal(self) -> bool:
        return bool(self.data.get("is_qty_decimal"))

    @property
    def is_virtual(self) -> bool:
        return bool(self.data.get("is_virtual"))

    @property
    def has_children(self) -> bool:
        return bool(self.children)

    def children_calculated(self) -> bool:
        """Item::isChildrenCalculated: the parent's product_calculations says CALCULATE_CHILD."""
        top = self.parent or self
        calculations = top._option("product_calculations")
        if calculations is None:
            if top.product_type == "bundle":
                priced = any(c.price or c.row_total or c.row_invoiced for c in top.children)
                calculations = CALCULATE_CHILD if priced else CALCULATE_PARENT
            else:
                calculations = CALCULATE_PARENT
        return calculations == CALCULATE_CHILD

    @property
    def is_dummy(self) -> bool:
        """Item::isDummy() for calculations: the item whose amounts Magento ignores."""
        if self.children:
            return self.children_calculated()
        if self.parent is not None:
            return not self.children_calculated()
        return False

    def ships_separately(self) -> bool:
        top = self.parent or self
        return top._option("shipment_type") == SHIPMENT_SEPARATELY

    @property
    def is_dummy_for_shipment(self) -> bool:
        """Item::isDummy(true): which of parent and children Magento ships."""
        if self.children:
            return self.ships_separately()
        if self.parent is not None:
            return not self.ships_separately()
        return False

    @property
    def qty_to_refund(self) -> float:
        if self.is_dummy:
            return 0.0
        return max(self.qty_invoiced - self.qty_refunded, 0.0)

    @property
    def qty_to_ship(self) -> float:
        if self.is_dummy_for_shipment:
            return 0.0
        left = self.qty_ordered - self.qty_shipped - self.qty_refunded - self.qty_canceled
        return max(round(left, 8), 0.0)

    @property
    def qty_to_invoice(self) -> float:
        if self.is_dummy:
            return 0.0
        return max(round(self.qty_ordered - self.qty_invoiced - self.qty_canceled, 8), 0.0)

    def to_dict(self, with_parent: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = clean(self.data)
        if with_parent and self.parent is not None:
            out["parent_item"] = self.parent.to_dict(with_parent=False)
        return out


@fields_as_properties
class Order(Record):
    """One order (``sales-data-order-interface``): the order's JSON without its items.

    ``data`` holds every field but ``items``; billing address, payment, status histories and
    extension attributes stay in it as given. ``items`` holds the item records in item-id
    order; ``shipping_assignments[].items`` are rebuilt from them on output, as Magento loads
    them from the same rows.
    """

    __slots__ = ("by_id", "creditmemo_ids", "invoice_ids", "items")

    entity_id = Int()
    increment_id = Str()
    state = Str()
    status = Str()
    store_id = Int()
    base_currency_code = Str()
    order_currency_code = Str()
    base_to_order_rate = Num()
    grand_total = Num()
    base_grand_total = Num()
    subtotal = Num()
    base_subtotal = Num()
    tax_amount = Num()
    base_tax_amount = Num()
    shipping_amount = Num()
    base_shipping_amount = Num()
    shipping_incl_tax = Num()
    base_shipping_incl_tax = Num()
    shipping_tax_amount = Num()
    base_shipping_tax_amount = Num()
    shipping_discount_amount = Num()
    base_shipping_discount_amount = Num()
    shipping_discount_tax_compensation_amount = Num()
    base_shipping_discount_tax_compensation_amnt = Num()
    shipping_invoiced = Num()
    base_shipping_invoiced = Num()
    shipping_refunded = Num()
    base_shipping_refunded = Num()
    shipping_tax_refunded = Num()
    base_shipping_tax_refunded = Num()
    shipping_discount_tax_compensation_refunded = Num()
    base_shipping_discount_tax_compensation_refunded = Num()
    total_invoiced = Num()
    base_total_invoiced = Num()
    total_paid = Num()
    base_total_paid = Num()
    total_refunded = Num()
    base_total_refunded = Num()
    total_offline_refunded = Num()
    base_total_offline_refunded = Num()
    total_online_refunded = Num()
    base_total_online_refunded = Num()
    total_canceled = Num()
    subtotal_refunded = Num()
    base_subtotal_refunded = Num()
    tax_invoiced = Num()
    base_tax_invoiced = Num()
    tax_refunded = Num()
    base_tax_refunded = Num()
    discount_refunded = Num()
    base_discount_refunded = Num()
    discount_tax_compensation_invoiced = Num()
    base_discount_tax_compensation_invoiced = Num()
    discount_tax_compensation_refunded = Num()
    base_discount_tax_compensation_refunded = Num()
    adjustment_positive = Num()
    base_adjustment_positive = Num()
    adjustment_negative = Num()
    base_adjustment_negative = Num()
    base_total_invoiced_cost = Num()
    customer_email = Str()
    updated_at = Str()

    def __init__(self, data: dict[str, Any], items: Iterable[OrderItem]) -> None:
        super().__init__(data)
        self.items: list[OrderItem] = sorted(items, key=lambda item: item.item_id)
        self.by_id: dict[int, OrderItem] = {item.item_id: item for item in self.items}
        for item in self.items:
            parent = self.by_id.get(item.parent_item_id or 0)
            if parent is not None and parent is not item:
                item.parent = parent
                parent.children.append(item)
        self.invoice_ids: list[int] = []
        self.creditmemo_ids: list[int] = []

    def item(self, item_id: int) -> OrderItem | None:
        return self.by_id.get(item_id)

    @property
    def payment(self) -> dict[str, Any]:
        payment = self.data.get("payment")
        if not isinstance(payment, dict):
            payment = self.data["payment"] = {}
        return payment

    @property
    def payment_method(self) -> str:
        return str(self.payment.get("method") or "")

    @property
    def is_online(self) -> bool:
        return is_online_method(self.payment_method)

    @property
    def is_virtual(self) -> bool:
        return bool(self.data.get("is_virtual"))

    @property
    def base_currency(self) -> str:
        return self.base_currency_code or self.order_currency_code or "USD"

    @property
    def customer_note_notify(self) -> bool:
        return bool(self.data.get("customer_note_notify"))

    @customer_note_notify.setter
    def customer_note_notify(self, value: bool) -> None:
        self.data["customer_note_notify"] = int(value)

    @property
    def status_histories(self) -> list[dict[str, Any]]:
        """Newest first, as Magento lists them."""
        histories = self.data.get("status_histories")
        if not isinstance(histories, list):
            histories = self.data["status_histories"] = []
        return histories

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = clean(self.data)
        items = [item.to_dict() for item in self.items]
        out["items"] = items
        assignments = (out.get("extension_attributes") or {}).get("shipping_assignments")
        if isinstance(assignments, list):
            by_id = {item["item_id"]: item for item in items}
            for assignment in assignments:
                if not isinstance(assignment, dict):
                    continue
                listed = assignment.get("items")
                ids = (
                    [i.get("item_id") for i in listed if isinstance(i, dict)]
                    if isinstance(listed, list)
                    else list(by_id)
                )
                assignment["items"] = [by_id[i] for i in ids if i in by_id]
                shipping = assignment.get("shipping")
                if isinstance(shipping, dict) and isinstance(shipping.get("total"), dict):
                    total = shipping["total"]
                    for key in SHIPPING_TOTAL_FIELDS:
                        if out.get(key) is not None:
                            total[key] = out[key]
        return out


@fields_as_properties
class InvoiceItem(Record):
    """One ``sales_invoice_item`` row."""

    __slots__ = ()

    order_item_id = Int()
    qty = Num()


@fields_as_properties
class Invoice(Record):
    """One invoice (``sales-data-invoice-interface``): its JSON without items and comments."""

    __slots__ = ("comments", "items")

    entity_id = Int()
    order_id = Int()
    state = Int()
    transaction_id = Str()
    grand_total = Num()
    base_grand_total = Num()
    base_total_refunded = Num()
    is_used_for_refund = Int()
    shipping_amount = Num()
    base_shipping_amount = Num()
    shipping_tax_amount = Num()
    base_shipping_tax_amount = Num()
    shipping_discount_tax_compensation_amount = Num()
    base_shipping_discount_tax_compensation_amnt = Num()
    tax_amount = Num()
    base_tax_amount = Num()
    discount_tax_compensation_amount = Num()
    base_discount_tax_compensation_amount = Num()
    updated_at = Str()

    def __init__(
        self,
        data: dict[str, Any],
        items: Iterable[InvoiceItem],
        comments: Iterable[dict[str, Any]] = (),
    ) -> None:
        super().__init__(data)
        self.items: list[InvoiceItem] = list(items)
        self.comments: list[dict[str, Any]] = list(comments)

    def columns(self) -> dict[str, Any]:
        """The ``sales_invoice`` row: what searchCriteria filters and sorts on."""
        return self.data

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = clean(self.data)
        out["items"] = [clean(item.data) for item in self.items]
        out["comments"] = [clean(comment) for comment in self.comments]
        return out


class Creditmemo:
    """A stored credit memo: its ``sales_creditmemo`` columns, items and comments."""

    __slots__ = ("columns", "comments", "items")

    def __init__(
        self,
        columns: dict[str, Any],
        items: list[dict[str, Any]],
        comments: list[dict[str, Any]],
    ) -> None:
        self.columns = columns
        self.items = items
        self.comments = comments

    @property
    def entity_id(self) -> int:
        return int(self.columns["entity_id"])

    @property
    def order_id(self) -> int | None:
        value = self.columns.get("order_id")
        return None if value is None else int(value)

    @property
    def invoice_id(self) -> int | None:
        value = self.columns.get("invoice_id")
        return None if value is None else int(value)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = clean(self.columns)
        out["items"] = [clean(item) for item in self.items]
        out["comments"] = [clean(comment) for comment in self.comments]
        return out
