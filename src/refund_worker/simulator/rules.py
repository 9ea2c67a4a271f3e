"""Magento's refund business rules as pure functions (docs/magento.md §1-§3).

Each function names the Magento 2.4 file it follows (magento/magento2, ``app/code/Magento/``):

* :func:`build_from_order` / :func:`build_from_invoice` are ``Sales/Model/Order/
  CreditmemoFactory.php`` (``createByOrder`` / ``createByInvoice``, with
  ``CreditmemoValidator.php``'s ``canRefundItem``): which items make the credit memo and with
  what quantity, parent and child items included, then :func:`.totals.collect`.
* :func:`validate` runs the RefundOrder/RefundInvoice validators in Magento's order and returns
  every message (``Order/Validation/CanRefund.php``, ``Creditmemo/Validation/
  QuantityValidator.php`` and ``TotalsValidator.php``, ``Creditmemo/Item/Validation/
  CreationQuantityValidator.php``, ``Invoice/Validation/CanRefund.php``,
  ``SalesInventory/Model/Order/ReturnValidator.php``).
* :func:`apply_refund` / :func:`apply_document_refund` move the order's totals, item quantities,
  payment and invoice amounts (``Creditmemo/RefundOperation.php``, ``Creditmemo/Item.php``
  ``register``, ``Order/Payment.php`` ``refund``), then the state
  (``Order/StateResolver.php``, ``ResourceModel/Order/Handler/State.php``).
* :func:`stock_returns` is ``SalesInventory/Model/Order/ReturnProcessor.php``.

Nothing here locks, stores or does I/O: the caller holds the order lock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .entities import (
    CREDITMEMO_STATE_REFUNDED,
    DEFAULT_STATUS,
    FORBIDDEN_REFUND_STATES,
    FREE_METHOD,
    INVOICE_STATE_PAID,
    STOCKLESS_TYPES,
    Invoice,
    Order,
    OrderItem,
    is_online_method,
)
from .errors import MagentoError
from .money import format_currency, php_number, round_price
from .totals import EPSILON, Draft, DraftItem, InvoiceRefunds, collect, r4

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
MSG_INCORRECT_ITEMS = "The creditmemo contains incorrect product items."
MSG_QTY_REFUND = "The quantity to refund must not be greater than the unrefunded quantity."
MSG_INVOICE = "We can't create creditmemo for the invoice."
MSG_STOCK_NOT_IN_ORDER = (
    "The return to stock argument contains product item that is not part of the original order."
)
MSG_STOCK_NOT_IN_MEMO = 'The "%s" product is not part of the current creditmemo.'


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

    def qtys(self) -> dict[int, float]:
        """CreditmemoDocumentFactory: ``qtys`` keyed by order item id (the last entry wins)."""
        return {
            item.order_item_id: item.qty or 0.0
            for item in self.items
            if item.order_item_id is not None
        }


# ------------------------------------------------------------------ which items, what quantity


def _can_refund_no_dummy(item: OrderItem, limits: Mapping[int, float]) -> bool:
    """CreditmemoValidator::canRefundNoDummyItem (2.4.8)."""
    if item.qty_to_refund <= 0:
        return False
    if item.item_id in limits:
        return limits[item.item_id] > 0
    return True


def can_refund_item(
    item: OrderItem, qtys: Mapping[int, float], limits: Mapping[int, float]
) -> bool:
    """CreditmemoValidator::canRefundItem: is the item a line of the credit memo at all."""
    if item.is_dummy:
        if item.children:
            values = list(qtys.values())
            nothing_asked = not qtys or (len(set(values)) == 1 and int(values[-1]) == 0)
            for child in item.children:
                if nothing_asked:
                    if _can_refund_no_dummy(child, limits):
                        return True
                elif qtys.get(child.item_id, 0) > 0:
                    return True
            return False
        if item.parent is not None:
            if not qtys:
                return _can_refund_no_dummy(item.parent, limits)
            return qtys.get(item.parent.item_id, 0) > 0
        return False
    return _can_refund_no_dummy(item, limits)


def selection_qty(item: OrderItem) -> float:
    """``bundle_selection_attributes.qty``: units of this child per unit of its bundle."""
    options = item.options
    if isinstance(options, Mapping):
        attributes = options.get("bundle_selection_attributes")
        if isinstance(attributes, str):
            try:
                attributes = json.loads(attributes)
            except ValueError:
                attributes = None
        if isinstance(attributes, Mapping) and attributes.get("qty") is not None:
            return float(attributes["qty"])
    parent = item.parent
    if parent is not None and parent.product_type == "bundle" and parent.qty_ordered:
        return item.qty_ordered / parent.qty_ordered
    return 1.0


def qty_to_refund(item: OrderItem, qtys: Mapping[int, float], limits: Mapping[int, float]) -> float:
    """CreditmemoFactory::getQtyToRefund: a dummy follows its counterpart."""
    if item.is_dummy:
        parent_id = item.parent_item_id
        if parent_id is not None and parent_id in qtys:
            parent_qty = qtys[parent_id]
        elif item.product_type == "bundle":
            parent_qty = item.qty_invoiced
        else:
            parent_qty = item.parent.qty_to_refund if item.parent is not None else 1.0
        return float(selection_qty(item) * parent_qty if item.parent is not None else parent_qty)
    if item.item_id in qtys:
        qty = qtys[item.item_id]
    elif not qtys:
        qty = item.qty_to_refund
    else:
        return 0.0
    if item.item_id in limits:
        qty = min(qty, limits[item.item_id])
    return float(qty)


def _adjustments(order: Order, draft: Draft, request: RefundRequest) -> Draft:
    """Creditmemo::setAdjustmentAmount: base rounded, order currency at base_to_order_rate."""
    rate = order.base_to_order_rate or 1.0
    if request.adjustment_positive is not None:
        draft.base_adjustment_positive = round_price(request.adjustment_positive)
        draft.adjustment_positive = round_price(draft.base_adjustment_positive * rate)
    if request.adjustment_negative is not None:
        draft.base_adjustment_negative = round_price(request.adjustment_negative)
        draft.adjustment_negative = round_price(draft.base_adjustment_negative * rate)
    return draft


def build_from_order(order: Order, request: RefundRequest) -> Draft:
    """CreditmemoFactory::createByOrder. No items = every item's remaining refundable qty.

    With items, every other refundable item still makes a line of quantity 0: that keeps a
    partial refund from being "last" (it must not take all the tax left, issue #14713).
    """
    qtys = request.qtys()
    lines = [
        DraftItem(item, qty_to_refund(item, qtys, {}))
        for item in order.items
        if can_refund_item(item, qtys, {})
    ]
    draft = Draft(lines, requested_base_shipping=request.shipping_amount)
    return collect(order, _adjustments(order, draft, request))


def invoice_refund_limits(
    invoice: Invoice, refunded_on_invoice: Mapping[int, float]
) -> dict[int, float]:
    """Per order item: the invoiced qty not yet refunded by credit memos of this invoice."""
    return {
        item.order_item_id: item.qty - refunded_on_invoice.get(item.order_item_id, 0.0)
        for item in invoice.items
    }


def build_from_invoice(
    order: Order,
    invoice: Invoice,
    refunded_on_invoice: Mapping[int, float] | InvoiceRefunds,
    request: RefundRequest,
) -> Draft:
    """CreditmemoFactory::createByInvoice: only this invoice's items, capped by what it has left.

    An item the invoice does not hold is not a line at all; a quantity above what the invoice
    has left is cut down to it (Magento says nothing); shipping defaults to what is left of the
    order's, at most the invoice's.
    """
    taken = (
        refunded_on_invoice
        if isinstance(refunded_on_invoice, InvoiceRefunds)
        else InvoiceRefunds(dict(refunded_on_invoice))
    )
    limits = invoice_refund_limits(invoice, taken.qty)
    qtys = request.qtys()
    lines = []
    for invoice_item in invoice.items:
        item = order.item(invoice_item.order_item_id)
        if item is None or not can_refund_item(item, qtys, limits):
            continue
        qty = min(qty_to_refund(item, qtys, limits), invoice_item.qty)
        lines.append(DraftItem(item, qty))
    shipping = request.shipping_amount
    if shipping is None:
        left = order.base_shipping_amount - order.base_shipping_refunded
        shipping = min(left, invoice.base_shipping_amount)
    draft = Draft(lines, requested_base_shipping=shipping, invoice=invoice)
    draft.invoice_limits = limits
    draft.invoice_refunds = taken
    return collect(order, _adjustments(order, draft, request))


# ------------------------------------------------------------------ validation


def can_creditmemo(order: Order) -> bool:
    """Order::canCreditmemo: money left to refund that is not just an adjustment fee."""
    if order.state in ("canceled", "closed", "holded", "payment_review"):
        return False
    left = round_price(order.total_paid) - order.total_refunded
    if abs(order.grand_total) < 0.0001:  # canCreditmemoForZeroTotal
        paid_at_most_total = order.total_paid <= order.grand_total
        if _can_invoice(order) and paid_at_most_total:
            return False
        if order.total_refunded == order.total_paid and order.creditmemo_ids:
            return False
        return paid_at_most_total or abs(left - order.adjustment_negative) >= 0.0001
    if abs(left) < 0.0001:
        return False
    return abs(left - order.adjustment_negative) >= 0.0001


def invoice_can_refund(order: Order, invoice: Invoice) -> bool:
    """Invoice\\Validation\\CanRefund: paid, money left, and a method able to refund it."""
    if invoice.state != INVOICE_STATE_PAID:
        return False
    if abs(invoice.base_grand_total - invoice.base_total_refunded) < 0.0001:
        return False
    method = order.payment_method
    if method == FREE_METHOD:
        return True
    if not is_online_method(method):
        return False
    payment = order.payment
    paid = float(payment.get("amount_paid") or 0)
    refunded = float(payment.get("amount_refunded") or 0)
    return paid > refunded or not invoice.is_used_for_refund


def _line_message(line: DraftItem, limits: Mapping[int, float]) -> str | None:
    """QuantityValidator::validateTotalQuantityRefundable: at most one message per line."""
    item = line.order_item
    if not item.is_qty_decimal and abs(line.qty - int(line.qty)) > EPSILON:
        return MSG_INVALID_DECIMAL % item.sku
    if item.is_dummy:
        refundable = line.qty > 0 and (item.has_children or item.parent is not None)
    else:
        refundable = item.qty_to_refund >= 0 and limits.get(item.item_id, 1.0) > 0
        refundable = refundable and line.qty <= item.qty_to_refund + EPSILON
    return None if refundable else MSG_QTY_CREDITMEMO % item.sku


def validate(order: Order, draft: Draft, request: RefundRequest) -> list[str]:
    """Every RefundOrder/RefundInvoice validation message, in Magento's order."""
    messages: list[str] = []
    # Order checks (Order\Validation\CanRefund).
    if order.state in FORBIDDEN_REFUND_STATES:
        messages.append(MSG_STATE % order.status)
    elif abs(round_price(order.total_paid) - order.total_refunded) < 0.0001:
        messages.append(MSG_ORDER_NOT_REFUNDABLE)
    # Credit-memo checks (QuantityValidator, TotalsValidator).
    limits = draft.invoice_limits or {}
    for line in draft.items:
        message = _line_message(line, limits)
        if message:
            messages.append(message)
    if draft.grand_total <= 0:
        messages.append(MSG_TOTAL_POSITIVE)
    elif draft.total_qty <= 0 and draft.shipping_amount <= 0:
        messages.append(MSG_NO_PRODUCTS)
    if round_price(order.base_total_refunded + draft.base_grand_total) > round_price(
        order.base_total_paid
    ):
        messages.append(
            MSG_MOST_MONEY % php_number(order.base_total_paid - order.base_total_refunded)
        )
    # Per-item checks (CreationQuantityValidator), once per requested entry.
    for requested in request.items:
        found = None if requested.order_item_id is None else order.item(requested.order_item_id)
        if found is None:
            messages.append(MSG_ITEM_NOT_IN_ORDER)
        elif found.is_dummy:
            messages.append(MSG_INCORRECT_ITEMS)
        elif (requested.qty or 0.0) > found.qty_to_refund + EPSILON:
            messages.append(MSG_QTY_REFUND)
    # Invoice check (Invoice\Validation\CanRefund), RefundInvoice only.
    if draft.invoice is not None and not invoice_can_refund(order, draft.invoice):
        messages.append(MSG_INVOICE)
    # Stock check (Magento_SalesInventory ReturnValidator): the first id that fails, if any.
    # A line of quantity 0 is part of the credit memo at this point.
    if request.return_to_stock_items:
        in_memo = {line.order_item.item_id for line in draft.items}
        for item_id in request.return_to_stock_items:
            stock_item = order.item(item_id)
            if stock_item is None:
                messages.append(MSG_STOCK_NOT_IN_ORDER)
                break
            if item_id not in in_memo:
                messages.append(MSG_STOCK_NOT_IN_MEMO % stock_item.sku)
                break
    return messages


# ------------------------------------------------------------------ state


def _items_to_ship(order: Order) -> bool:
    return any(
        item.qty_to_ship > 0
        and not item.is_virtual
        and not item.data.get("locked_do_ship")
        and abs(item.qty_refunded - item.qty_ordered) > EPSILON
        for item in order.items
    )


def _items_to_invoice(order: Order) -> bool:
    return any(
        item.qty_to_invoice > 0 and not item.data.get("locked_do_invoice") for item in order.items
    )


def _can_ship(order: Order, items_left: bool | None = None) -> bool:
    """Order::canShip (``items_left``: :func:`_items_to_ship`, when already known)."""
    if order.state in ("holded", "payment_review", "canceled") or order.is_virtual:
        return False
    return _items_to_ship(order) if items_left is None else items_left


def _can_invoice(order: Order, items_left: bool | None = None) -> bool:
    """Order::canInvoice (``items_left``: :func:`_items_to_invoice`, when already known)."""
    if order.state in ("holded", "payment_review", "canceled", "complete", "closed"):
        return False
    return _items_to_invoice(order) if items_left is None else items_left


def _all_fulfilled(order: Order) -> bool:
    """Handler\\State::areAllItemsFulfilled: shipped, refunded or canceled, every unit."""
    for item in order.items:
        if item.is_virtual or item.data.get("locked_do_ship"):
            continue
        open_qty = int(item.qty_ordered) - int(item.qty_canceled)
        open_qty -= int(item.qty_shipped) + int(item.qty_refunded)
        if open_qty > 0:
            return False
    return True


def resolve_state(order: Order, *, keep_status: bool) -> None:
    """OrderStateResolver followed by the save-time state handler (docs/magento.md §1.5)."""
    previous_state = order.state
    to_invoice, to_ship = _items_to_invoice(order), _items_to_ship(order)
    state = "processing" if previous_state == "processing" else "new"
    if (
        previous_state not in ("canceled", "holded")
        and not _can_invoice(order, to_invoice)
        and not _can_ship(order, to_ship)
    ):
        if order.base_grand_total == 0 or can_creditmemo(order):
            state = "complete"
        elif order.total_refunded:
            state = "closed"
    # The handler sees the new state on save.
    order.state = state
    if state not in ("canceled", "holded") and not _can_invoice(order, to_invoice):
        fulfilled = not _can_ship(order, to_ship) or _all_fulfilled(order)
        closes = state in ("processing", "complete") and fulfilled and not can_creditmemo(order)
        if closes and not order.is_virtual:
            state = "closed"
        elif state == "processing" and fulfilled:
            state = "complete"
    if state != previous_state or not keep_status:
        order.status = DEFAULT_STATUS.get(state, state)
    order.state = state


# ------------------------------------------------------------------ applying a refund


def _history(order: Order, base_amount: float, online: bool, transaction_id: str | None) -> str:
    formatted = format_currency(base_amount, order.base_currency)
    if online:
        return f'We refunded {formatted} online. Transaction ID: "{transaction_id}"'
    return f"We refunded {formatted} offline."


def _add_history(order: Order, text: str, notified: bool, now: str, entity_id: int) -> None:
    order.status_histories.insert(
        0,
        {
            "comment": text,
            "created_at": now,
            "entity_id": entity_id,
            "entity_name": "creditmemo",
            "is_customer_notified": int(notified),
            "is_visible_on_front": 0,
            "parent_id": order.entity_id,
            "status": order.status,
        },
    )


def _add(record: dict[str, Any], key: str, amount: float) -> None:
    """``setX(getX() + amount)``: the field exists afterwards, even when adding 0."""
    current = record.get(key)
    if amount or current is None:
        record[key] = r4(float(current or 0.0) + amount)


# The credit memo amounts a refund moves, in both currencies.
_MEMO_NAMES = (
    "grand_total",
    "subtotal",
    "tax_amount",
    "discount_tax_compensation_amount",
    "shipping_amount",
    "shipping_tax_amount",
    "adjustment_positive",
    "adjustment_negative",
    "discount_amount",
)
MEMO_AMOUNTS = (
    *(prefix + name for name in _MEMO_NAMES for prefix in ("", "base_")),
    "base_cost",
)
# RefundOperation::execute: credit memo amount -> the order total it adds to.
_ORDER_REFUNDED = tuple(
    (prefix + memo, prefix + total)
    for memo, total in (
        ("subtotal", "subtotal_refunded"),
        ("tax_amount", "tax_refunded"),
        ("discount_tax_compensation_amount", "discount_tax_compensation_refunded"),
        ("shipping_amount", "shipping_refunded"),
        ("shipping_tax_amount", "shipping_tax_refunded"),
        ("adjustment_positive", "adjustment_positive"),
        ("adjustment_negative", "adjustment_negative"),
        ("discount_amount", "discount_refunded"),
    )
    for prefix in ("", "base_")
)
# Payment::refund (_updateTotals): credit memo amount -> payment total.
_PAYMENT_REFUNDED = (
    ("grand_total", "amount_refunded"),
    ("base_grand_total", "base_amount_refunded"),
    ("shipping_amount", "shipping_refunded"),
    ("base_shipping_amount", "base_shipping_refunded"),
)


def memo_amounts(source: Draft | Mapping[str, Any]) -> dict[str, float]:
    """MEMO_AMOUNTS of a draft, or of a caller's document (a missing twin stands in)."""
    if isinstance(source, Draft):
        return {name: getattr(source, name) for name in MEMO_AMOUNTS}
    values = {}
    for name in MEMO_AMOUNTS:
        value = source.get(name)
        if value is None:
            value = source.get(_twin(name))
        values[name] = float(value or 0.0)
    return values


def _add_all(
    record: dict[str, Any], table: tuple[tuple[str, str], ...], amounts: Mapping[str, float]
) -> None:
    """``setX(getX() + amount)`` for each pair: the field exists afterwards, even at 0."""
    for source, target in table:
        amount = amounts[source]
        current = record.get(target)
        if amount or current is None:
            record[target] = r4((current or 0.0) + amount)


def _register_item(item: OrderItem, qty: float, amounts: Mapping[str, float], now: str) -> None:
    """Creditmemo/Item::register: the order item's refunded quantities and amounts."""
    data = item.data
    item.qty_refunded = round(item.qty_refunded + qty, 4)
    _add_all(data, _ITEM_REFUNDED, amounts)
    item.updated_at = now


_ITEM_REFUNDED = (  # Creditmemo/Item::register: credit memo line amount -> order item total
    ("tax_amount", "tax_refunded"),
    ("base_tax_amount", "base_tax_refunded"),
    ("discount_tax_compensation_amount", "discount_tax_compensation_refunded"),
    ("base_discount_tax_compensation_amount", "base_discount_tax_compensation_refunded"),
    ("row_total", "amount_refunded"),
    ("base_row_total", "base_amount_refunded"),
    ("discount_amount", "discount_refunded"),
    ("base_discount_amount", "base_discount_refunded"),
)


def _add_to_order_totals(order: Order, memo: Mapping[str, float], *, online: bool) -> None:
    """RefundOperation::execute and Payment::refund: every total a credit memo moves."""
    data = order.data
    data["base_total_refunded"] = round_price(order.base_total_refunded + memo["base_grand_total"])
    data["total_refunded"] = round_price(order.total_refunded + memo["grand_total"])
    _add_all(data, _ORDER_REFUNDED, memo)
    channel = "online" if online else "offline"
    _add(data, f"total_{channel}_refunded", memo["grand_total"])
    _add(data, f"base_total_{channel}_refunded", memo["base_grand_total"])
    _add(data, "base_total_invoiced_cost", -memo["base_cost"])
    payment = order.payment
    _add_all(payment, _PAYMENT_REFUNDED, memo)
    if online:
        _add(payment, "base_amount_refunded_online", memo["base_grand_total"])


def _finish(
    order: Order,
    memo: Mapping[str, float],
    *,
    online: bool,
    notify: bool,
    transaction_id: str | None,
    keep_status: bool,
    invoice: Invoice | None,
    now: str,
    history_id: int,
) -> None:
    _add_to_order_totals(order, memo, online=online)
    if invoice is not None:
        invoice.base_total_refunded = r4(invoice.base_total_refunded + memo["base_grand_total"])
        invoice.is_used_for_refund = 1
        invoice.updated_at = now
    if online and transaction_id:
        order.payment["last_trans_id"] = transaction_id
    order.customer_note_notify = notify
    resolve_state(order, keep_status=keep_status)
    text = _history(order, memo["base_grand_total"], online, transaction_id)
    _add_history(order, text, notify, now, history_id)
    order.updated_at = now


def apply_refund(
    order: Order,
    draft: Draft,
    *,
    online: bool,
    notify: bool,
    transaction_id: str | None,
    keep_status: bool,
    now: str,
    history_id: int = 0,
) -> None:
    """The refund adapter: order items, order, payment and invoice totals, state and history."""
    for line in draft.refunded_items:
        _register_item(line.order_item, line.qty, _line_amounts(line), now)
    _finish(
        order,
        memo_amounts(draft),
        online=online,
        notify=notify,
        transaction_id=transaction_id,
        keep_status=keep_status,
        invoice=draft.invoice,
        now=now,
        history_id=history_id,
    )


def _line_amounts(line: DraftItem) -> dict[str, float]:
    if line.is_dummy:  # the collectors leave a dummy's amounts null: register adds 0
        return dict.fromkeys((key for key, _ in _ITEM_REFUNDED), 0.0)
    return {
        "row_total": line.row_total,
        "base_row_total": line.base_row_total,
        "tax_amount": line.tax_amount,
        "base_tax_amount": line.base_tax_amount,
        "discount_amount": line.discount_amount,
        "base_discount_amount": line.base_discount_amount,
        "discount_tax_compensation_amount": line.discount_tax_compensation_amount,
        "base_discount_tax_compensation_amount": line.base_discount_tax_compensation_amount,
    }


def stock_returns(
    order: Order, draft: Draft, return_to_stock: list[int]
) -> list[tuple[OrderItem, float]]:
    """ReturnProcessor: every line named, or whose parent is named, goes back to stock.

    A configurable's child and a bundle's children carry the stock; the parent products
    (configurable, bundle) have none of their own, so only their children move.
    """
    named = set(return_to_stock)
    out = []
    for line in draft.refunded_items:
        item = line.order_item
        parent_named = item.parent is not None and item.parent.item_id in named
        if (item.item_id in named or parent_named) and item.product_type not in STOCKLESS_TYPES:
            out.append((item, line.qty))
    return out


def _number(document: Mapping[str, Any], *names: str) -> float:
    for name in names:
        value = document.get(name)
        if value is not None:
            return float(value)
    return 0.0


def check_document_refund(order: Order, document: Mapping[str, Any]) -> None:
    """CreditmemoService::validateForRefund: the only check of ``/V1/creditmemo/refund``."""
    base_grand_total = _number(document, "base_grand_total", "grand_total")
    if round_price(order.base_total_refunded + base_grand_total) > round_price(
        order.base_total_paid
    ):
        available = order.base_total_paid - order.base_total_refunded
        raise MagentoError(
            400,
            "The most money available to refund is %1.",
            [format_currency(available, order.base_currency)],
        )


def apply_document_refund(
    order: Order,
    document: Mapping[str, Any],
    *,
    online: bool,
    invoice: Invoice | None,
    transaction_id: str | None,
    now: str,
    history_id: int = 0,
) -> None:
    """Register a caller-supplied credit memo: no collectTotals, the document's figures rule."""
    for raw in document.get("items") or []:
        item = order.item(int(raw.get("order_item_id") or 0))
        if item is None:
            continue
        amounts = {key: _number(raw, key, _twin(key)) for key, _ in _ITEM_REFUNDED}
        _register_item(item, float(raw.get("qty") or 0), amounts, now)
    _finish(
        order,
        memo_amounts(document),
        online=online,
        notify=False,
        transaction_id=transaction_id,
        keep_status=False,
        invoice=invoice,
        now=now,
        history_id=history_id,
    )


def _twin(key: str) -> str:
    return key[5:] if key.startswith("base_") else f"base_{key}"


# ------------------------------------------------------------------ the stored credit memo


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
    data = order.data
    columns: dict[str, Any] = {
        "entity_id": entity_id,
        "increment_id": increment_id,
        "order_id": order.entity_id,
        "invoice_id": draft.invoice.entity_id if draft.invoice else None,
        "store_id": data.get("store_id", 1),
        "state": CREDITMEMO_STATE_REFUNDED,
        "creditmemo_status": None,
        "email_sent": None,
        "transaction_id": transaction_id,
        "billing_address_id": data.get("billing_address_id"),
        "shipping_address_id": _shipping_address_id(order),
        "discount_description": data.get("discount_description"),
        "base_currency_code": data.get("base_currency_code"),
        "global_currency_code": data.get("global_currency_code"),
        "order_currency_code": data.get("order_currency_code"),
        "store_currency_code": data.get("store_currency_code"),
        "base_to_global_rate": data.get("base_to_global_rate"),
        "base_to_order_rate": data.get("base_to_order_rate"),
        "store_to_base_rate": data.get("store_to_base_rate"),
        "store_to_order_rate": data.get("store_to_order_rate"),
        "subtotal": draft.subtotal,
        "base_subtotal": draft.base_subtotal,
        "subtotal_incl_tax": draft.subtotal_incl_tax or r4(draft.subtotal + draft.tax_amount),
        "base_subtotal_incl_tax": draft.base_subtotal_incl_tax
        or r4(draft.base_subtotal + draft.base_tax_amount),
        "tax_amount": draft.tax_amount,
        "base_tax_amount": draft.base_tax_amount,
        "shipping_amount": draft.shipping_amount,
        "base_shipping_amount": draft.base_shipping_amount,
        "shipping_incl_tax": draft.shipping_incl_tax,
        "base_shipping_incl_tax": draft.base_shipping_incl_tax,
        "shipping_tax_amount": draft.shipping_tax_amount,
        "base_shipping_tax_amount": draft.base_shipping_tax_amount,
        "discount_amount": draft.discount_amount,
        "base_discount_amount": draft.base_discount_amount,
        "discount_tax_compensation_amount": draft.discount_tax_compensation_amount,
        "base_discount_tax_compensation_amount": draft.base_discount_tax_compensation_amount,
        "shipping_discount_tax_compensation_amount": 0.0,
        "base_shipping_discount_tax_compensation_amnt": 0.0,
        "adjustment": draft.adjustment,
        "base_adjustment": draft.base_adjustment,
        "adjustment_positive": draft.adjustment_positive,
        "base_adjustment_positive": draft.base_adjustment_positive,
        "adjustment_negative": draft.adjustment_negative,
        "base_adjustment_negative": draft.base_adjustment_negative,
        "grand_total": draft.grand_total,
        "base_grand_total": draft.base_grand_total,
        "created_at": now,
        "updated_at": now,
    }
    return columns


def _shipping_address_id(order: Order) -> int | None:
    extension = order.data.get("extension_attributes") or {}
    for assignment in extension.get("shipping_assignments") or []:
        address = ((assignment or {}).get("shipping") or {}).get("address") or {}
        if address.get("entity_id") is not None:
            return int(address["entity_id"])
    return None


_WEEE_FIELDS = [
    "weee_tax_applied_amount",
    "weee_tax_applied_row_amount",
    "weee_tax_disposition",
    "weee_tax_row_disposition",
    "base_weee_tax_applied_amount",
    "base_weee_tax_applied_row_amnt",
    "base_weee_tax_disposition",
    "base_weee_tax_row_disposition",
]


def creditmemo_items(draft: Draft, creditmemo_id: int, first_item_id: int) -> list[dict[str, Any]]:
    """The ``sales_creditmemo_item`` rows: Convert\\Order::itemToCreditmemoItem + collectors."""
    rows = []
    for offset, line in enumerate(draft.refunded_items):
        item = line.order_item
        row: dict[str, Any] = {
            "entity_id": first_item_id + offset,
            "parent_id": creditmemo_id,
            "order_item_id": item.item_id,
            "product_id": item.product_id,
            "sku": item.sku,
            "name": item.name,
            "description": item.data.get("description"),
            "additional_data": item.data.get("additional_data"),
            "qty": line.qty,
            "price": item.price,
            "base_price": item.base_price,
            "price_incl_tax": item.data.get("price_incl_tax"),
            "base_price_incl_tax": item.data.get("base_price_incl_tax"),
            "base_cost": item.base_cost,
            "weee_tax_applied": item.data.get("weee_tax_applied"),
        }
        if not line.is_dummy:
            row.update(
                {
                    "row_total": line.row_total,
                    "base_row_total": line.base_row_total,
                    "row_total_incl_tax": line.row_total_incl_tax
                    if line.row_total_incl_tax is not None
                    else r4(line.row_total + line.tax_amount),
                    "base_row_total_incl_tax": line.base_row_total_incl_tax
                    if line.base_row_total_incl_tax is not None
                    else r4(line.base_row_total + line.base_tax_amount),
                    "tax_amount": line.tax_amount,
                    "base_tax_amount": line.base_tax_amount,
                    "discount_amount": line.discount_amount,
                    "base_discount_amount": line.base_discount_amount,
                    "discount_tax_compensation_amount": line.discount_tax_compensation_amount,
                    "base_discount_tax_compensation_amount": (
                        line.base_discount_tax_compensation_amount
                    ),
                }
            )
            if item.data.get("weee_tax_applied") is not None:  # Magento_Weee's collector
                row.update(dict.fromkeys(_WEEE_FIELDS, 0.0))
        rows.append(row)
    return rows
