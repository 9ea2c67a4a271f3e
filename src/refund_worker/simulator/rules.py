"""Magento's refund business rules as pure functions (docs/magento.md §1-§3).

* :func:`build_from_order` / :func:`build_from_invoice` are CreditmemoFactory + collectTotals:
  which items and quantities, row totals and tax, shipping (raising
  ``Maximum shipping amount allowed to refund is: %1``), adjustments, grand total.
* :func:`validate` runs the RefundOrder/RefundInvoice validators in Magento's order and returns
  every message (order checks, credit-memo checks, per-item checks, invoice check, stock checks).
* :func:`apply_refund` / :func:`apply_document_refund` move the order's totals, item quantities,
  invoice refunded amounts and order state/status as Magento's refund adapter does.

Nothing here locks, stores or does I/O: the caller holds the order lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .entities import (
    CREDITMEMO_STATE_REFUNDED,
    DEFAULT_STATUS,
    FORBIDDEN_REFUND_STATES,
    FREE_METHOD,
    INVOICE_STATE_PAID,
    Invoice,
    Order,
    OrderItem,
    is_online_method,
)
from .errors import MagentoError
from .money import format_currency, php_number, round_price

EPSILON = 1e-6

MSG_STATE = "A creditmemo can not be created when an order has a status of %s"
MSG_ORDER_NOT_REFUNDABLE = "The order does not allow a creditmemo to be created."
MSG_INVALID_DECIMAL = 'We found an invalid quantity to refund item "%s".'
MSG_QTY_CREDITMEMO = (
    "The quantity to creditmemo must not be greater than the unrefunded quantity"
    ' for product SKU "%s".'
)
MSG_TOTAL_POSITIVE = "The credit memo's total must be positive."
MSG_NO_PRODUCTS = "You can't create a creditmemo without products."
MSG_MOST_MONEY = "The most money available to refund is %s."
MSG_ITEM_NOT_IN_ORDER = (
    "The creditmemo contains product item that is not part of the original order."
)
MSG_QTY_REFUND = "The quantity to refund must not be greater than the unrefunded quantity."
MSG_INVOICE = "We can't create creditmemo for the invoice."
MSG_STOCK_NOT_IN_ORDER = (
    "The return to stock argument contains product item that is not part of the original order."
)
MSG_STOCK_NOT_IN_MEMO = 'The "%s" product is not part of the current creditmemo.'
MSG_MAX_SHIPPING = "Maximum shipping amount allowed to refund is: %1"


@dataclass(frozen=True, slots=True)
class ItemRequest:
    order_item_id: int | None
    qty: float | None


@dataclass(slots=True)
class RefundRequest:
    """The converted body of RefundOrder/RefundInvoice."""

    items: list[ItemRequest] = field(default_factory=list)
    notify: bool = False
    append_comment: bool = False
    comment: str | None = None
    is_visible_on_front: int = 0
    shipping_amount: float | None = None
    adjustment_positive: float | None = None
    adjustment_negative: float | None = None
    return_to_stock_items: list[int] | None = None
    is_online: bool = False

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RefundRequest:
        comment = params.get("comment") or {}
        arguments = params.get("arguments") or {}
        extension = arguments.get("extension_attributes") or {}
        return cls(
            items=[
                ItemRequest(item.get("order_item_id"), item.get("qty"))
                for item in params.get("items") or []
                if item is not None
            ],
            notify=bool(params.get("notify", False)),
            append_comment=bool(params.get("appendComment", False)),
            comment=comment.get("comment"),
            is_visible_on_front=int(comment.get("is_visible_on_front", 0)),
            shipping_amount=arguments.get("shipping_amount"),
            adjustment_positive=arguments.get("adjustment_positive"),
            adjustment_negative=arguments.get("adjustment_negative"),
            return_to_stock_items=extension.get("return_to_stock_items"),
            is_online=bool(params.get("isOnline", False)),
        )


@dataclass(slots=True)
class DraftItem:
    order_item: OrderItem
    qty: float
    row_total: float
    tax_amount: float


@dataclass(slots=True)
class Draft:
    """A credit memo after collectTotals, before validation."""

    items: list[DraftItem]
    subtotal: float
    tax_amount: float
    shipping_amount: float
    adjustment_positive: float
    adjustment_negative: float
    grand_total: float
    invoice: Invoice | None = None
    invoice_limits: dict[int, float] | None = None

    @property
    def total_qty(self) -> float:
        return sum(item.qty for item in self.items)


def _draft_item(order_item: OrderItem, qty: float) -> DraftItem:
    """Subtotal and tax collectors: a share of what is still refundable, the rest when last."""
    available = order_item.qty_invoiced - order_item.qty_refunded
    row_left = order_item.row_invoiced - order_item.amount_refunded
    tax_left = order_item.tax_invoiced - order_item.tax_refunded
    if available > EPSILON and abs(qty - available) < EPSILON:
        row_total, tax = row_left, tax_left
    elif available > EPSILON:
        row_total, tax = row_left / available * qty, tax_left / available * qty
    else:
        row_total, tax = order_item.price * qty, order_item.tax_per_unit * qty
    return DraftItem(order_item, qty, round_price(row_total), round_price(tax))


def _shipping(order: Order, requested: float | None, default_cap: float | None) -> float:
    allowed = round_price(order.shipping_amount - order.shipping_refunded)
    if requested is None:
        return allowed if default_cap is None else min(allowed, default_cap)
    desired = round_price(requested)
    if desired > allowed + 0.0001:
        raise MagentoError(400, MSG_MAX_SHIPPING, [format_currency(allowed, order.currency)])
    return desired


def _totals(
    items: list[DraftItem], shipping: float, request: RefundRequest, invoice: Invoice | None
) -> Draft:
    subtotal = round_price(sum(item.row_total for item in items))
    tax = round_price(sum(item.tax_amount for item in items))
    positive = round_price(request.adjustment_positive or 0.0)
    negative = round_price(request.adjustment_negative or 0.0)
    grand_total = round_price(subtotal + tax + shipping + positive - negative)
    return Draft(items, subtotal, tax, shipping, positive, negative, grand_total, invoice)


def _requested_qtys(request: RefundRequest) -> dict[int, float]:
    return {
        item.order_item_id: item.qty or 0.0
        for item in request.items
        if item.order_item_id is not None
    }


def build_from_order(order: Order, request: RefundRequest) -> Draft:
    """CreditmemoFactory::createByOrder. No items = every item's remaining refundable qty."""
    qtys = _requested_qtys(request)
    items: list[DraftItem] = []
    for order_item in order.items:
        if qtys:
            if order_item.item_id not in qtys:
                continue
            qty = qtys[order_item.item_id]
        else:
            qty = order_item.qty_to_refund
        if qty != 0:
            items.append(_draft_item(order_item, qty))
    shipping = _shipping(order, request.shipping_amount, None)
    return _totals(items, shipping, request, None)


def invoice_refund_limits(
    invoice: Invoice, refunded_on_invoice: dict[int, float]
) -> dict[int, float]:
    """Per order item: the invoiced qty not yet refunded by credit memos of this invoice."""
    return {
        item.order_item_id: max(item.qty - refunded_on_invoice.get(item.order_item_id, 0.0), 0.0)
        for item in invoice.items
    }


def build_from_invoice(
    order: Order, invoice: Invoice, refunded_on_invoice: dict[int, float], request: RefundRequest
) -> Draft:
    """CreditmemoFactory::createByInvoice: the invoice's items, capped by what it has left."""
    limits = invoice_refund_limits(invoice, refunded_on_invoice)
    qtys = _requested_qtys(request)
    items: list[DraftItem] = []
    for invoice_item in invoice.items:
        order_item = order.item(invoice_item.order_item_id)
        if order_item is None:
            continue
        if qtys:
            if order_item.item_id not in qtys:
                continue
            qty = qtys[order_item.item_id]
        else:
            qty = min(order_item.qty_to_refund, limits[order_item.item_id])
        if qty != 0:
            items.append(_draft_item(order_item, qty))
    shipping = _shipping(order, request.shipping_amount, invoice.shipping_amount)
    draft = _totals(items, shipping, request, invoice)
    draft.invoice_limits = limits
    return draft


def can_creditmemo(order: Order) -> bool:
    """Order::canCreditmemo: money left to refund that is not just an adjustment fee."""
    if order.state in ("canceled", "closed"):
        return False
    left = round_price(order.total_paid) - round_price(order.total_refunded)
    if abs(left) < 0.0001:
        return False
    return abs(left - order.adjustment_negative) >= 0.0001


def invoice_can_refund(order: Order, invoice: Invoice) -> bool:
    """Invoice\\Validation\\CanRefund: paid, money left, and a method able to refund it."""
    if invoice.state != INVOICE_STATE_PAID:
        return False
    if invoice.grand_total - invoice.base_total_refunded < 0.0001:
        return False
    if order.payment_method == FREE_METHOD:
        return True
    if not is_online_method(order.payment_method):
        return False
    return order.total_paid > order.total_refunded or not invoice.is_used_for_refund


def validate(order: Order, draft: Draft, request: RefundRequest) -> list[str]:
    """Every RefundOrder/RefundInvoice validation message, in Magento's order."""
    messages: list[str] = []
    # Order checks (Order\Validation\CanRefund).
    if order.state in FORBIDDEN_REFUND_STATES:
        messages.append(MSG_STATE % order.status)
    elif abs(round_price(order.total_paid) - order.total_refunded) < 0.0001:
        messages.append(MSG_ORDER_NOT_REFUNDABLE)
    # Credit-memo checks (QuantityValidator, TotalsValidator).
    for item in draft.items:
        order_item = item.order_item
        if not order_item.is_qty_decimal and abs(item.qty - round(item.qty)) > EPSILON:
            messages.append(MSG_INVALID_DECIMAL % order_item.sku)
        limit = order_item.qty_to_refund
        if draft.invoice_limits is not None:
            limit = min(limit, draft.invoice_limits.get(order_item.item_id, 0.0))
        if item.qty > limit + EPSILON:
            messages.append(MSG_QTY_CREDITMEMO % order_item.sku)
    if draft.grand_total <= 0:
        messages.append(MSG_TOTAL_POSITIVE)
    elif draft.total_qty <= 0 and draft.shipping_amount <= 0:
        messages.append(MSG_NO_PRODUCTS)
    if round_price(order.total_refunded + draft.grand_total) > round_price(order.total_paid):
        messages.append(MSG_MOST_MONEY % php_number(order.total_paid - order.total_refunded))
    # Per-item checks (CreationQuantityValidator), once per requested entry.
    for requested in request.items:
        found = None if requested.order_item_id is None else order.item(requested.order_item_id)
        if found is None:
            messages.append(MSG_ITEM_NOT_IN_ORDER)
        elif (requested.qty or 0.0) > found.qty_to_refund + EPSILON:
            messages.append(MSG_QTY_REFUND)
    # Invoice check (Invoice\Validation\CanRefund), RefundInvoice only.
    if draft.invoice is not None and not invoice_can_refund(order, draft.invoice):
        messages.append(MSG_INVOICE)
    # Stock checks (Magento_SalesInventory), only with return_to_stock_items.
    if request.return_to_stock_items:
        in_memo = {item.order_item.item_id for item in draft.items}
        for item_id in request.return_to_stock_items:
            stock_item = order.item(item_id)
            if stock_item is None:
                messages.append(MSG_STOCK_NOT_IN_ORDER)
            elif item_id not in in_memo:
                messages.append(MSG_STOCK_NOT_IN_MEMO % stock_item.sku)
    return messages


def resolve_state(order: Order, *, keep_status: bool) -> None:
    """OrderStateResolver followed by the save-time state handler (docs/magento.md §1.5)."""
    previous_state = order.state
    nothing_to_ship = all(item.qty_to_ship <= EPSILON for item in order.items)
    nothing_to_invoice = all(item.qty_to_invoice <= EPSILON for item in order.items)
    state = "processing" if previous_state == "processing" else "new"
    if previous_state not in ("canceled", "holded") and nothing_to_invoice and nothing_to_ship:
        if can_creditmemo(order) or order.grand_total == 0:
            state = "complete"
        elif order.total_refunded > 0:
            state = "closed"
    if state in ("processing", "complete") and nothing_to_ship and not can_creditmemo(order):
        state = "closed"
    elif state == "processing" and nothing_to_ship:
        state = "complete"
    if state != previous_state or not keep_status:
        order.status = DEFAULT_STATUS.get(state, state)
    order.state = state


def _history(order: Order, amount: float, online: bool, transaction_id: str | None) -> str:
    formatted = format_currency(amount, order.currency)
    if online:
        return f'We refunded {formatted} online. Transaction ID: "{transaction_id}"'
    return f"We refunded {formatted} offline."


def _add_history(order: Order, text: str, notified: bool, now: str) -> None:
    order.status_histories.append(
        {
            "comment": text,
            "created_at": now,
            "entity_name": "creditmemo",
            "is_customer_notified": int(notified),
            "is_visible_on_front": 0,
            "parent_id": order.entity_id,
            "status": order.status,
        }
    )


def apply_refund(
    order: Order,
    draft: Draft,
    *,
    online: bool,
    notify: bool,
    transaction_id: str | None,
    keep_status: bool,
    now: str,
) -> None:
    """The refund adapter: order items, order and invoice totals, state, status and history."""
    for item in draft.items:
        order_item = item.order_item
        order_item.qty_refunded = round(order_item.qty_refunded + item.qty, 4)
        order_item.amount_refunded = round_price(order_item.amount_refunded + item.row_total)
        order_item.tax_refunded = round_price(order_item.tax_refunded + item.tax_amount)
        order_item.updated_at = now
    _add_to_order_totals(
        order,
        grand_total=draft.grand_total,
        subtotal=draft.subtotal,
        tax=draft.tax_amount,
        shipping=draft.shipping_amount,
        positive=draft.adjustment_positive,
        negative=draft.adjustment_negative,
        online=online,
    )
    if draft.invoice is not None:
        draft.invoice.base_total_refunded = round_price(
            draft.invoice.base_total_refunded + draft.grand_total
        )
        draft.invoice.is_used_for_refund = 1
        draft.invoice.updated_at = now
    order.customer_note_notify = notify
    resolve_state(order, keep_status=keep_status)
    _add_history(order, _history(order, draft.grand_total, online, transaction_id), notify, now)
    order.updated_at = now


def _add_to_order_totals(
    order: Order,
    *,
    grand_total: float,
    subtotal: float,
    tax: float,
    shipping: float,
    positive: float,
    negative: float,
    online: bool,
) -> None:
    order.total_refunded = round_price(order.total_refunded + grand_total)
    if online:
        order.total_online_refunded = round_price(order.total_online_refunded + grand_total)
    else:
        order.total_offline_refunded = round_price(order.total_offline_refunded + grand_total)
    order.subtotal_refunded = round_price(order.subtotal_refunded + subtotal)
    order.tax_refunded = round_price(order.tax_refunded + tax)
    order.shipping_refunded = round_price(order.shipping_refunded + shipping)
    order.adjustment_positive = round_price(order.adjustment_positive + positive)
    order.adjustment_negative = round_price(order.adjustment_negative + negative)


def _number(document: dict[str, Any], *names: str) -> float:
    for name in names:
        value = document.get(name)
        if value is not None:
            return float(value)
    return 0.0


def check_document_refund(order: Order, document: dict[str, Any]) -> None:
    """CreditmemoService::validateForRefund: the only check of ``/V1/creditmemo/refund``."""
    grand_total = _number(document, "base_grand_total", "grand_total")
    if round_price(order.total_refunded + grand_total) > round_price(order.total_paid):
        available = order.total_paid - order.total_refunded
        raise MagentoError(
            400,
            "The most money available to refund is %1.",
            [format_currency(available, order.currency)],
        )


def apply_document_refund(
    order: Order,
    document: dict[str, Any],
    *,
    online: bool,
    invoice: Invoice | None,
    transaction_id: str | None,
    now: str,
) -> None:
    """Register a caller-supplied credit memo: no collectTotals, the document's figures rule."""
    for item in document.get("items", []):
        order_item = order.item(int(item.get("order_item_id") or 0))
        if order_item is None:
            continue
        order_item.qty_refunded = round(order_item.qty_refunded + float(item.get("qty") or 0), 4)
        order_item.amount_refunded = round_price(
            order_item.amount_refunded + _number(item, "base_row_total", "row_total")
        )
        order_item.tax_refunded = round_price(
            order_item.tax_refunded + _number(item, "base_tax_amount", "tax_amount")
        )
        order_item.updated_at = now
    grand_total = round_price(_number(document, "base_grand_total", "grand_total"))
    _add_to_order_totals(
        order,
        grand_total=grand_total,
        subtotal=_number(document, "base_subtotal", "subtotal"),
        tax=_number(document, "base_tax_amount", "tax_amount"),
        shipping=_number(document, "base_shipping_amount", "shipping_amount"),
        positive=_number(document, "base_adjustment_positive", "adjustment_positive"),
        negative=_number(document, "base_adjustment_negative", "adjustment_negative"),
        online=online,
    )
    if invoice is not None:
        invoice.base_total_refunded = round_price(invoice.base_total_refunded + grand_total)
        invoice.is_used_for_refund = 1
        invoice.updated_at = now
    resolve_state(order, keep_status=False)
    _add_history(order, _history(order, grand_total, online, transaction_id), False, now)
    order.updated_at = now


def creditmemo_columns(
    order: Order,
    draft: Draft,
    *,
    entity_id: int,
    increment_id: str,
    transaction_id: str | None,
    now: str,
) -> dict[str, Any]:
    """The ``sales_creditmemo`` row of a credit memo built by RefundOrder/RefundInvoice."""
    adjustment = round_price(draft.adjustment_positive - draft.adjustment_negative)
    subtotal_incl_tax = round_price(draft.subtotal + draft.tax_amount)
    amounts = {
        "subtotal": draft.subtotal,
        "subtotal_incl_tax": subtotal_incl_tax,
        "tax_amount": draft.tax_amount,
        "shipping_amount": draft.shipping_amount,
        "shipping_incl_tax": draft.shipping_amount,
        "shipping_tax_amount": 0.0,
        "discount_amount": 0.0,
        "discount_tax_compensation_amount": 0.0,
        "adjustment": adjustment,
        "adjustment_positive": draft.adjustment_positive,
        "adjustment_negative": draft.adjustment_negative,
        "grand_total": draft.grand_total,
    }
    columns: dict[str, Any] = {
        "entity_id": entity_id,
        "increment_id": increment_id,
        "order_id": order.entity_id,
        "invoice_id": draft.invoice.entity_id if draft.invoice else None,
        "store_id": 1,
        "state": CREDITMEMO_STATE_REFUNDED,
        "creditmemo_status": None,
        "email_sent": None,
        "transaction_id": transaction_id,
        "base_currency_code": order.currency,
        "global_currency_code": order.currency,
        "order_currency_code": order.currency,
        "store_currency_code": order.currency,
        "base_to_global_rate": 1.0,
        "base_to_order_rate": 1.0,
        "store_to_base_rate": 0.0,
        "store_to_order_rate": 0.0,
        "created_at": now,
        "updated_at": now,
    }
    for key, value in amounts.items():
        columns[key] = value
        columns["base_" + key] = value
    return columns


def creditmemo_items(draft: Draft, creditmemo_id: int, first_item_id: int) -> list[dict[str, Any]]:
    """The ``sales_creditmemo_item`` rows of a credit memo built by RefundOrder/RefundInvoice."""
    rows = []
    for offset, item in enumerate(draft.items):
        order_item = item.order_item
        price_incl_tax = round_price(order_item.price + order_item.tax_per_unit)
        row_incl_tax = round_price(item.row_total + item.tax_amount)
        rows.append(
            {
                "entity_id": first_item_id + offset,
                "parent_id": creditmemo_id,
                "order_item_id": order_item.item_id,
                "product_id": order_item.product_id,
                "sku": order_item.sku,
                "name": order_item.name,
                "qty": item.qty,
                "price": order_item.price,
                "base_price": order_item.price,
                "price_incl_tax": price_incl_tax,
                "base_price_incl_tax": price_incl_tax,
                "row_total": item.row_total,
                "base_row_total": item.row_total,
                "row_total_incl_tax": row_incl_tax,
                "base_row_total_incl_tax": row_incl_tax,
                "tax_amount": item.tax_amount,
                "base_tax_amount": item.tax_amount,
                "discount_amount": 0.0,
                "base_discount_amount": 0.0,
                "base_cost": 0.0,
            }
        )
    return rows
