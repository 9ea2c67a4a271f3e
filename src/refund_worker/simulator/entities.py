"""Orders, invoices and credit memos held by the simulator, and their Magento JSON shapes.

All amounts are in one currency (base = order currency, rates 1.0). Orders and invoices are
dataclasses because refunds compute with them; a credit memo is kept as the document Magento
would store (``columns`` + ``items`` + ``comments``) because callers may supply it whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
INVOICE_STATE_PAID = 2


def is_online_method(method: str) -> bool:
    """Gateway methods (braintree, stripe_payments, paypal_express, ...) refund online."""
    return method not in OFFLINE_METHODS and method != FREE_METHOD


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


@dataclass(slots=True)
class OrderItem:
    item_id: int
    order_id: int
    sku: str
    name: str
    product_id: int
    product_type: str
    qty_ordered: float
    price: float
    tax_per_unit: float
    is_qty_decimal: bool
    qty_invoiced: float = 0.0
    qty_shipped: float = 0.0
    qty_refunded: float = 0.0
    qty_canceled: float = 0.0
    qty_returned: float = 0.0
    tax_invoiced: float = 0.0
    tax_refunded: float = 0.0
    row_invoiced: float = 0.0
    amount_refunded: float = 0.0
    parent_item_id: int | None = None
    created_at: str = ""
    updated_at: str = ""

    @property
    def qty_to_refund(self) -> float:
        return max(self.qty_invoiced - self.qty_refunded, 0.0)

    @property
    def qty_to_ship(self) -> float:
        return max(self.qty_ordered - self.qty_shipped - self.qty_refunded - self.qty_canceled, 0.0)

    @property
    def qty_to_invoice(self) -> float:
        return max(self.qty_ordered - self.qty_invoiced - self.qty_canceled, 0.0)

    @property
    def row_total(self) -> float:
        return round(self.price * self.qty_ordered, 4)

    @property
    def tax_amount(self) -> float:
        return round(self.tax_per_unit * self.qty_ordered, 4)

    def to_dict(self) -> dict[str, Any]:
        price_incl_tax = round(self.price + self.tax_per_unit, 4)
        tax_percent = round(self.tax_per_unit / self.price * 100, 4) if self.price else 0.0
        return _drop_none(
            {
                "item_id": self.item_id,
                "order_id": self.order_id,
                "parent_item_id": self.parent_item_id,
                "product_id": self.product_id,
                "product_type": self.product_type,
                "sku": self.sku,
                "name": self.name,
                "store_id": 1,
                "is_virtual": 0,
                "is_qty_decimal": int(self.is_qty_decimal),
                "qty_ordered": self.qty_ordered,
                "qty_invoiced": self.qty_invoiced,
                "qty_shipped": self.qty_shipped,
                "qty_refunded": self.qty_refunded,
                "qty_canceled": self.qty_canceled,
                "qty_returned": self.qty_returned,
                "qty_backordered": None,
                "price": self.price,
                "base_price": self.price,
                "original_price": self.price,
                "base_original_price": self.price,
                "price_incl_tax": price_incl_tax,
                "base_price_incl_tax": price_incl_tax,
                "row_total": self.row_total,
                "base_row_total": self.row_total,
                "row_total_incl_tax": round(self.row_total + self.tax_amount, 4),
                "base_row_total_incl_tax": round(self.row_total + self.tax_amount, 4),
                "row_invoiced": self.row_invoiced,
                "base_row_invoiced": self.row_invoiced,
                "tax_percent": tax_percent,
                "tax_amount": self.tax_amount,
                "base_tax_amount": self.tax_amount,
                "tax_invoiced": self.tax_invoiced,
                "base_tax_invoiced": self.tax_invoiced,
                "tax_refunded": self.tax_refunded,
                "base_tax_refunded": self.tax_refunded,
                "amount_refunded": self.amount_refunded,
                "base_amount_refunded": self.amount_refunded,
                "discount_amount": 0.0,
                "base_discount_amount": 0.0,
                "discount_percent": 0.0,
                "base_cost": 0.0,
                "weight": 1.0,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
            }
        )


@dataclass(slots=True)
class Order:
    entity_id: int
    increment_id: str
    state: str
    status: str
    currency: str
    customer_email: str
    customer_firstname: str
    customer_lastname: str
    payment_method: str
    items: list[OrderItem]
    shipping_amount: float
    created_at: str
    updated_at: str
    shipping_invoiced: float = 0.0
    shipping_refunded: float = 0.0
    total_invoiced: float = 0.0
    total_paid: float = 0.0
    total_refunded: float = 0.0
    total_offline_refunded: float = 0.0
    total_online_refunded: float = 0.0
    total_canceled: float = 0.0
    subtotal_invoiced: float = 0.0
    subtotal_refunded: float = 0.0
    tax_invoiced: float = 0.0
    tax_refunded: float = 0.0
    adjustment_positive: float = 0.0
    adjustment_negative: float = 0.0
    last_trans_id: str | None = None
    hold_before_state: str | None = None
    hold_before_status: str | None = None
    customer_note_notify: bool = False
    status_histories: list[dict[str, Any]] = field(default_factory=list)
    invoice_ids: list[int] = field(default_factory=list)
    creditmemo_ids: list[int] = field(default_factory=list)

    def item(self, item_id: int) -> OrderItem | None:
        for item in self.items:
            if item.item_id == item_id:
                return item
        return None

    @property
    def subtotal(self) -> float:
        return round(sum(item.row_total for item in self.items), 4)

    @property
    def tax_amount(self) -> float:
        return round(sum(item.tax_amount for item in self.items), 4)

    @property
    def grand_total(self) -> float:
        return round(self.subtotal + self.tax_amount + self.shipping_amount, 4)

    @property
    def is_online(self) -> bool:
        return is_online_method(self.payment_method)

    def to_dict(self) -> dict[str, Any]:
        grand_total = self.grand_total
        total_qty = sum(item.qty_ordered for item in self.items)
        total_due = round(grand_total - self.total_paid, 4)
        payment = {
            "account_status": None,
            "additional_information": [METHOD_TITLES.get(self.payment_method, self.payment_method)],
            "amount_ordered": grand_total,
            "base_amount_ordered": grand_total,
            "amount_paid": self.total_paid,
            "base_amount_paid": self.total_paid,
            "amount_refunded": self.total_refunded,
            "base_amount_refunded": self.total_refunded,
            "base_amount_refunded_online": self.total_online_refunded or None,
            "base_shipping_amount": self.shipping_amount,
            "shipping_amount": self.shipping_amount,
            "base_shipping_captured": self.shipping_invoiced,
            "shipping_captured": self.shipping_invoiced,
            "base_shipping_refunded": self.shipping_refunded,
            "shipping_refunded": self.shipping_refunded,
            "cc_last4": None,
            "entity_id": self.entity_id,
            "parent_id": self.entity_id,
            "last_trans_id": self.last_trans_id,
            "method": self.payment_method,
        }
        payment = {k: v for k, v in payment.items() if v is not None or k in _NULLABLE_PAYMENT}
        money = {
            "subtotal": self.subtotal,
            "tax_amount": self.tax_amount,
            "shipping_amount": self.shipping_amount,
            "shipping_incl_tax": self.shipping_amount,
            "shipping_tax_amount": 0.0,
            "discount_amount": 0.0,
            "grand_total": grand_total,
            "subtotal_incl_tax": round(self.subtotal + self.tax_amount, 4),
            "total_invoiced": self.total_invoiced,
            "total_paid": self.total_paid,
            "total_refunded": self.total_refunded,
            "total_offline_refunded": self.total_offline_refunded,
            "total_online_refunded": self.total_online_refunded,
            "total_canceled": self.total_canceled,
            "total_due": total_due,
            "subtotal_invoiced": self.subtotal_invoiced,
            "subtotal_refunded": self.subtotal_refunded,
            "tax_invoiced": self.tax_invoiced,
            "tax_refunded": self.tax_refunded,
            "shipping_invoiced": self.shipping_invoiced,
            "shipping_refunded": self.shipping_refunded,
            "adjustment_positive": self.adjustment_positive,
            "adjustment_negative": self.adjustment_negative,
        }
        out: dict[str, Any] = {
            "entity_id": self.entity_id,
            "increment_id": self.increment_id,
            "state": self.state,
            "status": self.status,
            "store_id": 1,
            "store_name": "Main Website\nMain Website Store\nDefault Store View",
            "customer_email": self.customer_email,
            "customer_firstname": self.customer_firstname,
            "customer_lastname": self.customer_lastname,
            "customer_is_guest": 0,
            "customer_note_notify": int(self.customer_note_notify),
            "base_currency_code": self.currency,
            "global_currency_code": self.currency,
            "order_currency_code": self.currency,
            "store_currency_code": self.currency,
            "base_to_global_rate": 1.0,
            "base_to_order_rate": 1.0,
            "store_to_base_rate": 0.0,
            "store_to_order_rate": 0.0,
            "is_virtual": 0,
            "total_item_count": len(self.items),
            "total_qty_ordered": total_qty,
            "base_total_qty_ordered": total_qty,
            "hold_before_state": self.hold_before_state,
            "hold_before_status": self.hold_before_status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        for key, value in money.items():
            out[key] = value
            out["base_" + key] = value
        out["base_total_due"] = total_due
        out["items"] = [item.to_dict() for item in self.items]
        out["payment"] = payment
        out["status_histories"] = [dict(entry) for entry in reversed(self.status_histories)]
        return _drop_none(out)


_NULLABLE_PAYMENT = frozenset({"account_status", "cc_last4"})


@dataclass(slots=True)
class InvoiceItem:
    entity_id: int
    parent_id: int
    order_item_id: int
    sku: str
    name: str
    product_id: int
    qty: float
    price: float
    tax_amount: float

    def to_dict(self) -> dict[str, Any]:
        row_total = round(self.price * self.qty, 4)
        return {
            "entity_id": self.entity_id,
            "parent_id": self.parent_id,
            "order_item_id": self.order_item_id,
            "product_id": self.product_id,
            "sku": self.sku,
            "name": self.name,
            "qty": self.qty,
            "price": self.price,
            "base_price": self.price,
            "base_cost": 0.0,
            "price_incl_tax": round(
                self.price + (self.tax_amount / self.qty if self.qty else 0), 4
            ),
            "row_total": row_total,
            "base_row_total": row_total,
            "row_total_incl_tax": round(row_total + self.tax_amount, 4),
            "tax_amount": self.tax_amount,
            "base_tax_amount": self.tax_amount,
            "discount_amount": 0.0,
        }


@dataclass(slots=True)
class Invoice:
    entity_id: int
    increment_id: str
    order_id: int
    currency: str
    items: list[InvoiceItem]
    shipping_amount: float
    transaction_id: str | None
    created_at: str
    updated_at: str
    state: int = INVOICE_STATE_PAID
    base_total_refunded: float = 0.0
    is_used_for_refund: int = 0
    email_sent: int | None = None

    @property
    def subtotal(self) -> float:
        return round(sum(item.price * item.qty for item in self.items), 4)

    @property
    def tax_amount(self) -> float:
        return round(sum(item.tax_amount for item in self.items), 4)

    @property
    def grand_total(self) -> float:
        return round(self.subtotal + self.tax_amount + self.shipping_amount, 4)

    def columns(self) -> dict[str, Any]:
        """The ``sales_invoice`` row: what searchCriteria filters and sorts on."""
        return {
            "entity_id": self.entity_id,
            "increment_id": self.increment_id,
            "order_id": self.order_id,
            "store_id": 1,
            "state": self.state,
            "transaction_id": self.transaction_id,
            "is_used_for_refund": self.is_used_for_refund,
            "can_void_flag": 0,
            "email_sent": self.email_sent,
            "subtotal": self.subtotal,
            "base_subtotal": self.subtotal,
            "tax_amount": self.tax_amount,
            "base_tax_amount": self.tax_amount,
            "shipping_amount": self.shipping_amount,
            "base_shipping_amount": self.shipping_amount,
            "grand_total": self.grand_total,
            "base_grand_total": self.grand_total,
            "base_total_refunded": self.base_total_refunded,
            "total_qty": sum(item.qty for item in self.items),
            "base_currency_code": self.currency,
            "order_currency_code": self.currency,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def to_dict(self) -> dict[str, Any]:
        out = _drop_none(self.columns())
        out.update(
            {
                "global_currency_code": self.currency,
                "store_currency_code": self.currency,
                "base_to_global_rate": 1.0,
                "base_to_order_rate": 1.0,
                "shipping_incl_tax": self.shipping_amount,
                "base_shipping_incl_tax": self.shipping_amount,
                "subtotal_incl_tax": round(self.subtotal + self.tax_amount, 4),
                "base_subtotal_incl_tax": round(self.subtotal + self.tax_amount, 4),
                "discount_amount": 0.0,
                "base_discount_amount": 0.0,
                "items": [item.to_dict() for item in self.items],
                "comments": [],
            }
        )
        return out


@dataclass(slots=True)
class Creditmemo:
    """A stored credit memo: its ``sales_creditmemo`` columns, items and comments."""

    columns: dict[str, Any]
    items: list[dict[str, Any]]
    comments: list[dict[str, Any]]

    @property
    def entity_id(self) -> int:
        return int(self.columns["entity_id"])

    @property
    def order_id(self) -> int | None:
        value = self.columns.get("order_id")
        return None if value is None else int(value)

    def to_dict(self) -> dict[str, Any]:
        out = _drop_none(self.columns)
        out["items"] = [dict(item) for item in self.items]
        out["comments"] = [dict(comment) for comment in self.comments]
        return out
