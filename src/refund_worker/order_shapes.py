"""Pure: an order's items as Magento refunds them, the invoice a refund goes to, and a caller's
amounts (in the order's currency) as the base-currency figures Magento's arguments take.

No I/O: functions over the order and invoice JSON the worker already GETs (docs/magento.md
§15 has the rules and the Magento source files they follow).

* **Parent and child items.** A configurable's parent carries price and quantity, its child
  the product: a caller may name either; the refund names the parent (its child follows). A
  fixed-price bundle is refunded by its parent (its selections follow); a selection alone is
  refused. A dynamic-price bundle's children carry the prices: they are refunded; naming the
  parent means all its children at the parent's quantity ratio.
* **Several invoices.** RefundInvoice refunds one invoice: the one that invoiced the named
  items; items of two invoices are refused with the split to send (one request per invoice).
* **Currency.** ``shipping_amount`` and the adjustments are in the order's currency; Magento's
  arguments are in the base currency (``CreditmemoFactory::initData``), converted back by the
  order's rates. An amount is converted only when the round trip gives it back exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal, NoReturn

from refund_worker.errors import InvalidRefund
from refund_worker.schemas import RefundItem, RefundRequest

Role = Literal[
    "simple",
    "configurable",
    "configurable_child",
    "bundle_fixed",
    "bundle_fixed_selection",
    "bundle_dynamic",
    "bundle_dynamic_selection",
]
CENT = Decimal("0.01")
#: Amounts closer than this are equal (Magento keeps four decimals).
EPSILON = Decimal("0.00005")

OrderItems = Mapping[int, Mapping[str, Any]]


def decimal(value: Any) -> Decimal:
    """An amount or quantity from Magento's JSON (absent, null or odd: 0)."""
    if value is None or isinstance(value, bool):
        return Decimal(0)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)
    return number if number.is_finite() else Decimal(0)


def round_price(value: Decimal) -> Decimal:
    """Magento's ``PriceCurrency::round``: two places, halves away from zero."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def items_by_id(order: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    """The order's items by ``item_id``."""
    return {int(item["item_id"]): item for item in order.get("items") or [] if "item_id" in item}


def children(order_items: OrderItems, parent_id: int) -> list[Mapping[str, Any]]:
    """The child items of ``parent_id``, in the order's order."""
    return [item for item in order_items.values() if _parent_id(item) == parent_id]


def role(order_items: OrderItems, item_id: int) -> Role:
    """What ``item_id`` is: a simple item, or which part of a configurable or bundle."""
    item = order_items[item_id]
    parent_id = _parent_id(item)
    if parent_id is not None and parent_id in order_items:
        parent = order_items[parent_id]
        if parent.get("product_type") == "bundle":
            return (
                "bundle_dynamic_selection"
                if _prices_children(order_items, parent_id)
                else "bundle_fixed_selection"
            )
        return "configurable_child"
    product_type = item.get("product_type")
    if product_type == "bundle":
        return "bundle_dynamic" if _prices_children(order_items, item_id) else "bundle_fixed"
    if product_type == "configurable" or children(order_items, item_id):
        return "configurable"
    return "simple"


def as_magento_sees_it(request: RefundRequest, order: Mapping[str, Any]) -> RefundRequest:
    """``request`` with its items as Magento must be sent them (``refund_lines``); the same
    request when it names none or the order is not known."""
    if request.items is None or not order.get("items"):
        return request
    lines = refund_lines(order, request.items)
    if lines == list(request.items):
        return request
    copied = request.model_copy(update={"items": lines})
    copied.__dict__.pop("_canonical_json", None)  # never stored: what Magento is sent
    return copied


def refund_lines(order: Mapping[str, Any], items: Sequence[RefundItem]) -> list[RefundItem]:
    """The items as Magento must be sent them: a configurable's child becomes its parent, a
    dynamic bundle's parent becomes its children at its quantity ratio; a fixed bundle's
    selection is refused (``InvalidRefund`` naming it). Items not on the order pass through
    (Magento names them in its own words)."""
    order_items = items_by_id(order)
    lines: dict[int, RefundItem] = {}
    named_as: dict[int, int] = {}  # line id -> the item id the caller named for it
    for item in items:
        order_item = order_items.get(item.order_item_id)
        if order_item is None:
            _add(lines, named_as, item, item.order_item_id)
            continue
        kind = role(order_items, item.order_item_id)
        parent_id = _parent_id(order_item)
        if kind == "configurable_child":
            assert parent_id is not None
            qty = _scaled(item.qty, order_items[parent_id], order_item)
            _add(lines, named_as, _line(parent_id, qty, item), item.order_item_id)
        elif kind == "bundle_fixed_selection":
            assert parent_id is not None
            raise InvalidRefund(
                f"items: order item {item.order_item_id} ({order_item.get('sku')}) is a selection "
                f"of the fixed-price bundle {parent_id} ({order_items[parent_id].get('sku')}), "
                f"which Magento refunds whole: name order item {parent_id}"
            )
        elif kind == "bundle_dynamic":
            for child in children(order_items, item.order_item_id):
                qty = _scaled(item.qty, child, order_item)
                _add(lines, named_as, _line(int(child["item_id"]), qty, item), item.order_item_id)
        else:
            _add(lines, named_as, item, item.order_item_id)
    return list(lines.values())


def _line(item_id: int, qty: Decimal, named: RefundItem) -> RefundItem:
    """The line of ``item_id`` that ``named`` stands for; refused when its quantity is not one
    Magento can take (more than four places: a ratio that does not divide)."""
    if qty != qty.quantize(Decimal("0.0001")):
        raise InvalidRefund(
            f"items: qty {_show(named.qty)} of order item {named.order_item_id} is "
            f"{_show(qty.quantize(Decimal('0.000001')))} of order item {item_id}, which Magento "
            "cannot refund: name a quantity that divides"
        )
    return RefundItem(order_item_id=item_id, qty=qty)


def _add(
    lines: dict[int, RefundItem], named_as: dict[int, int], line: RefundItem, named: int
) -> None:
    if line.order_item_id in lines:
        raise InvalidRefund(
            f"items: order items {named_as[line.order_item_id]} and {named} name the same "
            f"product line (order item {line.order_item_id}, a parent and its child): name it once"
        )
    lines[line.order_item_id] = line
    named_as[line.order_item_id] = named


def _scaled(qty: Decimal, item: Mapping[str, Any], named: Mapping[str, Any]) -> Decimal:
    """``qty`` of ``named`` as a quantity of ``item``: by their ordered quantities' ratio."""
    ordered = decimal(named.get("qty_ordered"))
    if ordered <= 0:
        return qty
    return qty * decimal(item.get("qty_ordered")) / ordered


def _prices_children(order_items: OrderItems, parent_id: int) -> bool:
    """Whether a bundle's children carry the prices (a dynamic-price bundle). The REST order
    does not show ``product_options.product_calculations``; a fixed-price bundle's selections
    are stored at price 0, a dynamic one's at their own prices (Magento's order fixtures)."""
    return any(
        decimal(child.get("price")) > 0 or decimal(child.get("row_total")) > 0
        for child in children(order_items, parent_id)
    )


def _parent_id(item: Mapping[str, Any]) -> int | None:
    parent = item.get("parent_item_id")
    return int(parent) if parent is not None and not isinstance(parent, bool) else None


# -- invoices ------------------------------------------------------------------------------


def invoiced_items(invoice: Mapping[str, Any]) -> set[int]:
    """The order item ids ``invoice`` invoiced (a positive quantity)."""
    return {
        int(line["order_item_id"])
        for line in invoice.get("items") or []
        if line.get("order_item_id") is not None and decimal(line.get("qty")) > 0
    }


def choose_invoice(
    request: RefundRequest,
    order: Mapping[str, Any],
    invoices: Sequence[dict[str, Any]],
    lines: Sequence[RefundItem] | None,
) -> dict[str, Any] | None:
    """The invoice to refund for ``lines`` (``None``: everything still refundable).

    The one named, which must have invoiced the lines; else the one invoice that invoiced them
    all (of several, only those with something left to refund). Refused (``InvalidRefund``)
    when the lines span invoices, saying which lines go to which invoice."""
    order_id = request.order_id
    order_items = items_by_id(order)
    if request.invoice_id is not None:
        named = next(
            (i for i in invoices if int(i["entity_id"]) == request.invoice_id), None
        )
        if named is None or int(named.get("order_id") or order_id or 0) != order_id:
            raise InvalidRefund(
                f"invoice_id: invoice {request.invoice_id} does not belong to order {order_id}"
            )
        if lines and named.get("items") is not None:
            strays = sorted(
                line.order_item_id
                for line in lines
                if line.order_item_id in order_items
                and line.order_item_id not in invoiced_items(named)
            )
            if strays:
                raise InvalidRefund(
                    f"invoice_id: invoice {request.invoice_id} did not invoice order items "
                    f"{_names(strays, order_items)}; a refund of invoice {request.invoice_id} "
                    "can only take back what it invoiced"
                )
        return dict(named)
    if len(invoices) <= 1:
        return invoices[0] if invoices else None
    by_invoice = {int(i["entity_id"]): invoiced_items(i) for i in invoices}
    if lines:
        wanted = [line.order_item_id for line in lines if line.order_item_id in order_items]
    else:
        wanted = [
            item_id
            for item_id, item in order_items.items()
            if _parent_id(item) is None and _refundable(item) > 0
        ]
    if not wanted:
        return _ask_for_invoice(order_id, by_invoice)
    holders = {item_id: [i for i, held in by_invoice.items() if item_id in held]
               for item_id in wanted}
    common = set(by_invoice)
    for item_id in wanted:
        common &= set(holders[item_id])
    if len(common) == 1:
        chosen = common.pop()
        return dict(next(i for i in invoices if int(i["entity_id"]) == chosen))
    if common:
        return _ask_for_invoice(order_id, {i: by_invoice[i] for i in sorted(common)})
    split: dict[int, list[int]] = {}
    for item_id in wanted:
        if holders[item_id]:
            split.setdefault(holders[item_id][0], []).append(item_id)
    plan = "; ".join(
        f"invoice_id {invoice_id} with items {_names(ids, order_items)}"
        for invoice_id, ids in sorted(split.items())
    )
    raise InvalidRefund(
        f"items: the items to refund were invoiced on {len(split)} invoices of order "
        f"{order_id}, and one online refund (RefundInvoice) takes back one invoice: send one "
        f"request per invoice: {plan}"
    )


def _ask_for_invoice(order_id: int | None, by_invoice: Mapping[int, set[int]]) -> NoReturn:
    listed = "; ".join(
        f"{invoice_id}: items {', '.join(map(str, sorted(ids))) or 'none'}"
        for invoice_id, ids in sorted(by_invoice.items())
    )
    raise InvalidRefund(
        f"invoice_id: order {order_id} has {len(by_invoice)} invoices that could be refunded "
        f"({listed}); say which one to refund, one request per invoice"
    )


def _refundable(item: Mapping[str, Any]) -> Decimal:
    return decimal(item.get("qty_invoiced")) - decimal(item.get("qty_refunded"))


def _names(item_ids: Sequence[int], order_items: OrderItems) -> str:
    return ", ".join(f"{i} ({order_items[i].get('sku')})" for i in item_ids)


# -- currency ------------------------------------------------------------------------------


def is_foreign_currency(order: Mapping[str, Any]) -> bool:
    """Whether the order's currency is not its base currency (two sets of figures)."""
    order_code, base_code = order.get("order_currency_code"), order.get("base_currency_code")
    if order_code and base_code and order_code != base_code:
        return True
    rate = decimal(order.get("base_to_order_rate"))
    return rate not in (Decimal(0), Decimal(1))


def shipping_left(order: Mapping[str, Any]) -> Decimal:
    """The shipping still refundable, in the order's currency: the larger of the amounts with
    and without tax (which one Magento compares with depends on a store setting)."""
    without_tax = _shipping(order) - decimal(
        order.get("shipping_refunded", order.get("base_shipping_refunded"))
    )
    with_tax = (
        decimal(order.get("shipping_incl_tax"))
        - decimal(order.get("shipping_refunded"))
        - decimal(order.get("shipping_tax_refunded"))
    )
    return max(without_tax, with_tax, Decimal(0))


def check_shipping(order: Mapping[str, Any], amount: Decimal) -> None:
    """Refuse early what Magento's shipping collector refuses (``Total/Shipping.php``)."""
    if amount <= 0 or not any(key in order for key in _SHIPPING_KEYS):
        return  # nothing to refund, or an order whose shipping is not known here
    code = order.get("order_currency_code") or ""
    if _shipping(order) <= 0 and decimal(order.get("shipping_incl_tax")) <= 0:
        raise InvalidRefund(
            "shipping_amount: the order has no shipping to refund (Magento: You can not refund "
            "shipping if there is no shipping amount.)"
        )
    left = shipping_left(order)
    if amount > left + EPSILON:
        raise InvalidRefund(
            f"shipping_amount: {_show(amount)} {code} is more than the {_show(left)} {code} of "
            "shipping left to refund (Magento: Maximum shipping amount allowed to refund is ...)"
        )


_SHIPPING_KEYS = ("shipping_amount", "base_shipping_amount", "shipping_incl_tax")


def _shipping(order: Mapping[str, Any]) -> Decimal:
    """The order's shipping in its currency (the base figure when only that is known)."""
    return decimal(order.get("shipping_amount", order.get("base_shipping_amount")))


def shipping_to_base(order: Mapping[str, Any], amount: Decimal) -> Decimal:
    """``amount`` of shipping in the order's currency as Magento's ``shipping_amount`` argument
    (base currency). Magento turns it back into the order's currency by the order's own ratio
    of shipping (``round(shipping_amount * base / base_shipping_amount)``)."""
    check_shipping(order, amount)
    if not is_foreign_currency(order):
        return amount
    left = decimal(order.get("shipping_amount")) - decimal(order.get("shipping_refunded"))
    if abs(amount - left) <= EPSILON:  # all that is left: Magento takes its own figures
        return decimal(order.get("base_shipping_amount")) - decimal(
            order.get("base_shipping_refunded")
        )
    total, base_total = (
        decimal(order.get("shipping_amount")),
        decimal(order.get("base_shipping_amount")),
    )
    return _exact_base(
        amount,
        guess=amount * base_total / total,
        back=lambda base: round_price(total * base / base_total),
        field="shipping_amount",
        order=order,
    )


def adjustment_to_base(order: Mapping[str, Any], amount: Decimal, field: str) -> Decimal:
    """An adjustment in the order's currency as Magento's argument (base currency), which
    Magento rounds and multiplies by ``base_to_order_rate``
    (``Creditmemo::setAdjustmentPositive``)."""
    if not is_foreign_currency(order) or amount == 0:
        return amount
    rate = decimal(order.get("base_to_order_rate"))
    if rate <= 0:
        raise InvalidRefund(f"{field}: the order has no base_to_order_rate to convert it with")
    return _exact_base(
        amount,
        guess=amount / rate,
        back=lambda base: round_price(base * rate),
        field=field,
        order=order,
    )


def _exact_base(
    amount: Decimal, *, guess: Decimal, back: Any, field: str, order: Mapping[str, Any]
) -> Decimal:
    """The base amount (two places) that Magento turns back into exactly ``amount``, the one
    nearest ``guess``; ``InvalidRefund`` with the nearest amounts that can be when none can."""
    start = round_price(guess)
    candidates = [start + CENT * step for step in (0, -1, 1, -2, 2)]
    exact = [base for base in candidates if base >= 0 and back(base) == amount]
    if exact:
        return min(exact, key=lambda base: abs(base - guess))
    code, base_code = order.get("order_currency_code"), order.get("base_currency_code")
    nearest = sorted({back(base) for base in candidates if base >= 0})
    below = [n for n in nearest if n < amount]
    above = [n for n in nearest if n > amount]
    options = " or ".join(_show(n) for n in (below[-1:] + above[:1]))
    raise InvalidRefund(
        f"{field}: {_show(amount)} {code} cannot be refunded exactly: Magento takes it in the "
        f"base currency ({base_code}) and converts it at the order's rate; the nearest "
        f"amounts it can refund are {options} {code}"
    )


def _show(number: Decimal) -> str:
    return format(number.normalize(), "f")
