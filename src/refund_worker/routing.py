"""Pure routing: a refund request, plus what Magento said about the order, becomes one Magento call.

No I/O here. ``plan_refund`` decides the service (RefundInvoice online, RefundOrder offline, the
low-level credit-memo refund, or a record-only credit memo) and builds a body that validates
against Adobe's published schema and avoids Magento's known partial-refund pitfalls:

* a partial refund (explicit ``items``) without ``shipping_amount`` sends ``shipping_amount: 0``,
  because Magento's default would refund all remaining shipping with it;
* a fractional quantity on an item that is not decimal-qty is refused before calling;
* ``return_to_stock_items`` only ever names items that are in this credit memo;
* no key is sent inside ``items``, ``comment`` or ``arguments`` beyond the schema's own, since
  Magento 2.4 rejects unknown nested keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from refund_worker import order_shapes
from refund_worker.errors import InvalidRefund
from refund_worker.markers import comment_with_marker
from refund_worker.schemas import RefundRequest, Service

#: Magento's own offline methods: ``canRefund()`` is false, so RefundInvoice always rejects them.
OFFLINE_PAYMENT_METHODS = frozenset(
    {"checkmo", "banktransfer", "cashondelivery", "purchaseorder", "free", "companycredit"}
)
#: Gateways known to refund online through RefundInvoice with ``isOnline: true``.
ONLINE_PAYMENT_METHODS = frozenset(
    {
        "braintree",
        "braintree_paypal",
        "braintree_applepay",
        "braintree_googlepay",
        "braintree_venmo",
        "stripe_payments",
        "paypal_express",
        "payflowpro",
        "payflow_advanced",
        "payflow_link",
        "authorizenet_acceptjs",
        "adyen_cc",
        "klarna_kp",
        "amazon_payment",
        "checkoutcom_card_payment",
    }
)


@dataclass(frozen=True)
class RefundCall:
    """One Magento call: which service, on which entity, with which body."""

    service: Service
    body: dict[str, Any]
    target_id: int | None  # invoice id (INVOICE), order id (ORDER); None for credit-memo services
    description: str


def payment_is_online(
    method: str, invoice: dict[str, Any] | None, extra_offline: frozenset[str] = frozenset()
) -> bool:
    """Whether the order was paid through a gateway that refunds online.

    Unknown methods count as online only when the invoice carries a gateway transaction id; a
    method we cannot classify is refused rather than guessed, so an online refund is never turned
    silently into an offline one.
    """
    if method in OFFLINE_PAYMENT_METHODS or method in extra_offline:
        return False
    if method in ONLINE_PAYMENT_METHODS:
        return True
    if invoice is not None and invoice.get("transaction_id"):
        return True
    raise InvalidRefund(
        f"service: cannot tell whether payment method {method!r} refunds online or offline; "
        "send service 'invoice' (online) or 'order' (offline), or list it in "
        "REFUND_WORKER_OFFLINE_PAYMENT_METHODS"
    )


def choose_invoice(
    request: RefundRequest,
    invoices: list[dict[str, Any]],
    order: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The invoice to refund: the one named (which must have invoiced the items), else the one
    that invoiced the items (``order_shapes.choose_invoice``), else None."""
    return order_shapes.choose_invoice(request, order or {}, invoices, request.items)


def needs_invoices(
    request: RefundRequest, order: dict[str, Any], extra_offline: frozenset[str] = frozenset()
) -> bool:
    """Whether routing must look at the order's invoices (online payments, or service=invoice)."""
    if request.chosen_service is Service.INVOICE:
        return True
    if request.chosen_service is not None:
        return False
    method = str((order.get("payment") or {}).get("method") or "")
    return method not in OFFLINE_PAYMENT_METHODS and method not in extra_offline


def choose_service(
    request: RefundRequest,
    order: dict[str, Any],
    invoice: dict[str, Any] | None,
    extra_offline: frozenset[str] = frozenset(),
) -> tuple[Service, bool]:
    """(service, online) for the request; explicit services are honoured as asked."""
    method = str((order.get("payment") or {}).get("method") or "")
    if request.chosen_service is Service.ORDER:
        return Service.ORDER, False
    if request.chosen_service is Service.CREDITMEMO:
        return Service.CREDITMEMO, not request.offline_requested
    if request.chosen_service is Service.RECORD_ONLY:
        return Service.RECORD_ONLY, False
    if request.chosen_service is Service.INVOICE:
        if invoice is None:
            raise InvalidRefund(f"invoice_id: order {request.order_id} has no invoice to refund")
        return Service.INVOICE, payment_is_online(method, invoice, extra_offline)
    # auto: an online-paid invoice goes to RefundInvoice; offline or uninvoiced to RefundOrder.
    if invoice is None or not payment_is_online(method, invoice, extra_offline):
        return Service.ORDER, False
    return Service.INVOICE, True


def plan_refund(
    request: RefundRequest,
    *,
    marker: str,
    order: dict[str, Any],
    invoices: list[dict[str, Any]],
    extra_offline: frozenset[str] = frozenset(),
) -> RefundCall:
    """Decide the Magento call for ``request`` given the order and its invoices.

    ``request``'s order is resolved (``order_id`` set); its items are sent as Magento refunds
    them (``order_shapes``: a configurable by its parent, a dynamic bundle by its children)."""
    request = order_shapes.as_magento_sees_it(request, order)
    order_id = request.resolved_order_id
    wants_invoice = needs_invoices(request, order, extra_offline)
    invoice = choose_invoice(request, invoices, order) if wants_invoice else None
    service, online = choose_service(request, order, invoice, extra_offline)
    order_items = order_items_by_id(order)
    _check_quantities(request, order_items)
    comment = comment_with_marker(marker, request.comment)
    visible = 1 if request.comment_visible_to_customer else 0

    if service is Service.CREDITMEMO:
        assert request.creditmemo is not None  # guaranteed by RefundRequest
        if request.creditmemo.order_id not in (None, order_id):
            raise InvalidRefund(
                f"creditmemo.order_id: {request.creditmemo.order_id} is not the request's order "
                f"{order_id} (order_increment_id {request.order_increment_id!r})"
            )
        document = request.creditmemo.magento_fields()
        document["items"] = [
            {"entity_id": 0, "base_cost": Decimal(0), "base_price": Decimal(0), **item}
            for item in document.get("items", [])
        ]
        document_body = {
            "creditmemo": {
                "order_id": order_id,
                **document,
                "comments": [_comment_row(comment, visible)],
            },
            "offlineRequested": not online,
        }
        return RefundCall(
            service,
            _jsonable(document_body),
            None,
            f"CreditmemoManagement refund ({'online' if online else 'offline'})",
        )

    if service is Service.RECORD_ONLY:
        entity = _record_only_entity(request, order, order_items, invoice)
        entity["comments"] = [_comment_row(comment, visible)]
        return RefundCall(
            service,
            _jsonable({"entity": entity}),
            None,
            "CreditmemoRepository save: record only, no money moved, no totals changed",
        )

    body: dict[str, Any] = {"notify": False, "appendComment": False}
    if service is Service.INVOICE:
        body["isOnline"] = online
    if request.items is not None:
        body["items"] = [
            {"order_item_id": item.order_item_id, "qty": item.qty} for item in request.items
        ]
    body["comment"] = {"comment": comment, "is_visible_on_front": visible}
    arguments = _arguments(
        request, order, order_items, invoice if service is Service.INVOICE else None
    )
    if arguments:
        body["arguments"] = arguments
    if service is Service.INVOICE:
        assert invoice is not None
        target = int(invoice["entity_id"])
        description = f"RefundInvoice {'online' if online else 'offline'} on invoice {target}"
    else:
        target = order_id
        description = f"RefundOrder (offline) on order {target}"
    return RefundCall(service, _jsonable(body), target, description)


def order_items_by_id(order: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The order's items by ``item_id``."""
    return {int(item["item_id"]): item for item in order.get("items") or [] if "item_id" in item}


def _check_quantities(request: RefundRequest, order_items: dict[int, dict[str, Any]]) -> None:
    for item in request.items or []:
        order_item = order_items.get(item.order_item_id)
        if order_item is None:
            continue  # Magento names items that are not on the order in its own words
        if not order_item.get("is_qty_decimal") and item.qty != item.qty.to_integral_value():
            raise InvalidRefund(
                f"items: qty {item.qty.normalize()} of order item {item.order_item_id} "
                f"({order_item.get('sku')}) must be a whole number: the item is not decimal-qty"
            )


def _arguments(
    request: RefundRequest,
    order: dict[str, Any],
    order_items: dict[int, dict[str, Any]],
    invoice: dict[str, Any] | None,
) -> dict[str, Any]:
    """RefundOrder/RefundInvoice ``arguments``. The caller's amounts are in the order's
    currency; Magento's are in the base currency (``order_shapes`` converts, exactly)."""
    arguments: dict[str, Any] = {}
    if request.shipping_amount is not None:
        arguments["shipping_amount"] = order_shapes.shipping_to_base(
            order, request.shipping_amount
        )
    elif request.is_partial:
        arguments["shipping_amount"] = Decimal(0)  # Magento would refund all remaining shipping
    if request.adjustment_positive is not None:
        arguments["adjustment_positive"] = order_shapes.adjustment_to_base(
            order, request.adjustment_positive, "adjustment_positive"
        )
    if request.adjustment_negative is not None:
        arguments["adjustment_negative"] = order_shapes.adjustment_to_base(
            order, request.adjustment_negative, "adjustment_negative"
        )
    stock = _return_to_stock_items(request, order_items, invoice)
    if stock:
        arguments["extension_attributes"] = {"return_to_stock_items": stock}
    return arguments


def _return_to_stock_items(
    request: RefundRequest,
    order_items: dict[int, dict[str, Any]],
    invoice: dict[str, Any] | None,
) -> list[int]:
    if isinstance(request.return_to_stock, list):
        return sorted(request.return_to_stock)
    if not request.return_to_stock:
        return []
    if request.items is not None:
        return sorted(item.order_item_id for item in request.items)
    if invoice is not None:
        candidates = [int(item["order_item_id"]) for item in invoice.get("items") or []]
        return sorted(i for i in candidates if _refundable_qty(order_items.get(i)) > 0)
    return sorted(
        item_id
        for item_id, item in order_items.items()
        if not item.get("parent_item_id") and _refundable_qty(item) > 0
    )


def _refundable_qty(order_item: dict[str, Any] | None) -> Decimal:
    if order_item is None:
        return Decimal(0)
    return Decimal(str(order_item.get("qty_invoiced") or 0)) - Decimal(
        str(order_item.get("qty_refunded") or 0)
    )


def _comment_row(comment: str, visible: int) -> dict[str, Any]:
    return {
        "comment": comment,
        "is_visible_on_front": visible,
        "is_customer_notified": 0,
        "parent_id": 0,
    }


def _record_only_entity(
    request: RefundRequest,
    order: dict[str, Any],
    order_items: dict[int, dict[str, Any]],
    invoice: dict[str, Any] | None,
) -> dict[str, Any]:
    """A credit memo document computed from the order, for the record-only repository save:
    each figure in the order's currency and its ``base_`` twin in the base currency."""
    if request.items is not None:
        wanted = [(item.order_item_id, item.qty) for item in request.items]
    else:
        wanted = [
            (item_id, qty)
            for item_id, item in order_items.items()
            if not item.get("parent_item_id") and (qty := _refundable_qty(item)) > 0
        ]
    items = []
    subtotal = base_subtotal = Decimal(0)
    for item_id, qty in wanted:
        order_item = order_items.get(item_id)
        if order_item is None:
            raise InvalidRefund(
                f"items: order item {item_id} is not part of order {request.order_id}"
            )
        price = Decimal(str(order_item.get("price") or 0))
        base_price = Decimal(str(order_item.get("base_price") or price))
        items.append(
            {
                "entity_id": 0,
                "order_item_id": item_id,
                "sku": order_item.get("sku"),
                "qty": qty,
                "price": price,
                "base_price": base_price,
                "base_cost": Decimal(str(order_item.get("base_cost") or 0)),
                "row_total": price * qty,
                "base_row_total": base_price * qty,
            }
        )
        subtotal += price * qty
        base_subtotal += base_price * qty
    if request.shipping_amount is not None:
        shipping = request.shipping_amount
        base_shipping = order_shapes.shipping_to_base(order, shipping)
    elif request.is_partial:
        shipping = base_shipping = Decimal(0)
    else:
        shipping = order_shapes.decimal(order.get("shipping_amount")) - order_shapes.decimal(
            order.get("shipping_refunded")
        )
        base_shipping = order_shapes.decimal(
            order.get("base_shipping_amount")
        ) - order_shapes.decimal(order.get("base_shipping_refunded"))
    positive = request.adjustment_positive or Decimal(0)
    negative = request.adjustment_negative or Decimal(0)
    base_positive = order_shapes.adjustment_to_base(order, positive, "adjustment_positive")
    base_negative = order_shapes.adjustment_to_base(order, negative, "adjustment_negative")
    entity: dict[str, Any] = {
        "order_id": request.order_id,
        "items": items,
        "subtotal": subtotal,
        "base_subtotal": base_subtotal,
        "shipping_amount": shipping,
        "base_shipping_amount": base_shipping,
        "adjustment_positive": positive,
        "base_adjustment_positive": base_positive,
        "adjustment_negative": negative,
        "base_adjustment_negative": base_negative,
        "grand_total": subtotal + shipping + positive - negative,
        "base_grand_total": base_subtotal + base_shipping + base_positive - base_negative,
    }
    if invoice is not None:
        entity["invoice_id"] = int(invoice["entity_id"])
    elif request.invoice_id is not None:
        entity["invoice_id"] = request.invoice_id
    return entity


def _jsonable(value: Any) -> Any:
    """Decimals become JSON numbers (int when whole), recursively; the schema wants numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value
