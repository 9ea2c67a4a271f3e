"""The credit memo totals collectors, in Magento's order (``Sales/etc/sales.xml``).

``collect`` runs, as ``Creditmemo::collectTotals`` does, the collectors of
``app/code/Magento/Sales/Model/Order/Creditmemo/Total/``:

* ``Subtotal.php`` (50): each non-dummy item's row total (``Creditmemo/Item.php``,
  ``calcRowTotal``): what is left of ``row_invoiced``, pro rata by quantity unless the item is
  *last* (its whole refundable quantity), then everything left.
* ``Discount.php`` (150): each item's invoiced discount the same way, plus the shipping discount
  in proportion to the shipping asked for (only when a shipping amount was asked for: the
  collector runs before ``Shipping``).
* ``Shipping.php`` (200): the shipping to refund, capped by what is left
  (``Maximum shipping amount allowed to refund is: %1``); the amount asked for is in the base
  currency and the order-currency figure follows the same ratio.
* ``Tax.php`` (250): each item's invoiced tax pro rata (all that is left when last), the shipping
  tax in proportion to the shipping refunded, then capped by the tax still refundable: the
  invoice's for RefundInvoice, the order's otherwise. When the whole credit memo is *last* and
  the shipping is refunded whole, it takes all the tax left (Magento issue #14713: 2.4 builds a
  zero-quantity line for every item not asked for, so a partial refund is never "last").
* ``Cost.php`` (300) and ``Grand.php`` (400): base cost and the adjustments.

Amounts are rounded as ``Creditmemo::roundPrice`` does: ``Math/Calculator::deltaRound``, one
running remainder per kind (``regular``, ``base``, ``including``, ``including_base``), so three
thirds of 1.00 come out 0.33, 0.34, 0.33. Pure: no I/O, nothing stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .entities import Invoice, Order, OrderItem
from .errors import MagentoError
from .money import format_currency, round_price

EPSILON = 1e-6
MSG_MAX_SHIPPING = "Maximum shipping amount allowed to refund is: %1"
MSG_NO_SHIPPING = "You can not refund shipping if there is no shipping amount."


def r4(amount: float) -> float:
    """The 4 decimals ``sales_*`` decimal(20,4) columns keep (and never -0.0)."""
    return (round(amount, 4) or 0.0) if amount else 0.0


class DeltaRounder:
    """``Creditmemo::roundPrice``: one ``Calculator`` per kind, carrying its rounding error."""

    def __init__(self) -> None:
        self._delta: dict[str, float] = {}

    def __call__(self, price: float, kind: str = "regular", negative: bool = False) -> float:
        if not price:
            return price
        delta = self._delta.get(kind, 0.0)
        if negative:
            delta = -delta
        price += delta
        rounded = round_price(price)
        delta = price - rounded
        self._delta[kind] = -delta if negative else delta
        return rounded


@dataclass(slots=True)
class DraftItem:
    """One credit memo line before it is stored (quantity 0 lines included)."""

    order_item: OrderItem
    qty: float
    row_total: float = 0.0
    base_row_total: float = 0.0
    row_total_incl_tax: float | None = None
    base_row_total_incl_tax: float | None = None
    tax_amount: float = 0.0
    base_tax_amount: float = 0.0
    discount_amount: float = 0.0
    base_discount_amount: float = 0.0
    discount_tax_compensation_amount: float = 0.0
    base_discount_tax_compensation_amount: float = 0.0
    is_dummy: bool = field(init=False)
    last: bool = field(init=False)

    def __post_init__(self) -> None:
        # Neither changes while the collectors run: worked out once.
        self.is_dummy = self.order_item.is_dummy
        self.last = abs(self.qty - self.order_item.qty_to_refund) < EPSILON

    def is_last(self) -> bool:
        """Creditmemo/Item::isLast: the whole quantity left to refund."""
        return self.last


@dataclass(slots=True)
class InvoiceRefunds:
    """What the credit memos of one invoice took from it (for RefundInvoice's limits)."""

    qty: dict[int, float] = field(default_factory=dict)
    tax_amount: float = 0.0
    base_tax_amount: float = 0.0
    discount_tax_compensation_amount: float = 0.0
    base_discount_tax_compensation_amount: float = 0.0

    def copy(self) -> InvoiceRefunds:
        return InvoiceRefunds(
            dict(self.qty),
            self.tax_amount,
            self.base_tax_amount,
            self.discount_tax_compensation_amount,
            self.base_discount_tax_compensation_amount,
        )


@dataclass(slots=True)
class Draft:
    """A credit memo after collectTotals, before validation. Amounts in both currencies."""

    items: list[DraftItem]
    requested_base_shipping: float | None = None
    base_adjustment_positive: float = 0.0
    adjustment_positive: float = 0.0
    base_adjustment_negative: float = 0.0
    adjustment_negative: float = 0.0
    invoice: Invoice | None = None
    invoice_limits: dict[int, float] | None = None
    invoice_refunds: InvoiceRefunds | None = None
    subtotal: float = 0.0
    base_subtotal: float = 0.0
    subtotal_incl_tax: float = 0.0
    base_subtotal_incl_tax: float = 0.0
    discount_amount: float = 0.0  # negative, like Magento's
    base_discount_amount: float = 0.0
    shipping_amount: float = 0.0
    base_shipping_amount: float = 0.0
    shipping_incl_tax: float = 0.0
    base_shipping_incl_tax: float = 0.0
    shipping_tax_amount: float = 0.0
    base_shipping_tax_amount: float = 0.0
    tax_amount: float = 0.0
    base_tax_amount: float = 0.0
    discount_tax_compensation_amount: float = 0.0
    base_discount_tax_compensation_amount: float = 0.0
    base_cost: float = 0.0
    grand_total: float = 0.0
    base_grand_total: float = 0.0

    @property
    def adjustment(self) -> float:
        return r4(self.adjustment_positive - self.adjustment_negative)

    @property
    def base_adjustment(self) -> float:
        return r4(self.base_adjustment_positive - self.base_adjustment_negative)

    @property
    def total_qty(self) -> float:
        return sum(item.qty for item in self.items)

    @property
    def refunded_items(self) -> list[DraftItem]:
        """The lines Magento stores: quantity above 0 (RefundOperation drops the rest)."""
        return [item for item in self.items if item.qty > 0]

    def is_last(self, order: Order) -> bool:
        """Creditmemo::isLast: every non-dummy line takes its item's whole refundable rest."""
        if not self.items:
            return not any(item.qty_to_refund > 0 for item in order.items)
        return all(line.last for line in self.items if not line.is_dummy)


def collect(order: Order, draft: Draft) -> Draft:
    """Run the collectors over ``draft`` (in place) and return it."""
    rounder = DeltaRounder()
    _subtotal(draft, rounder)
    _discount(order, draft, rounder)
    _shipping(order, draft)
    _tax(order, draft, rounder)
    _cost(draft)
    _grand(draft)
    return draft


def _subtotal(draft: Draft, rounder: DeltaRounder) -> None:
    for line in draft.items:
        item = line.order_item
        if line.is_dummy:
            continue
        row = item.row_invoiced - item.amount_refunded
        base_row = item.base_row_invoiced - item.base_amount_refunded
        available = item.qty_invoiced - item.qty_refunded
        if not line.last and item.qty_invoiced > 0 and line.qty >= 0:
            if available > EPSILON:
                row = rounder(row / available * line.qty)
                base_row = rounder(base_row / available * line.qty, "base")
            else:  # more than is left: Magento refuses it later; price it by the unit
                row = rounder(item.price * line.qty)
                base_row = rounder(item.base_price * line.qty, "base")
        line.row_total, line.base_row_total = r4(row), r4(base_row)
        incl, base_incl = item.row_total_incl_tax, item.base_row_total_incl_tax
        if incl and base_incl and item.qty_ordered:
            line.row_total_incl_tax = rounder(incl / item.qty_ordered * line.qty, "including")
            line.base_row_total_incl_tax = rounder(
                base_incl / item.qty_ordered * line.qty, "including_base"
            )
        draft.subtotal += line.row_total
        draft.base_subtotal += line.base_row_total
        draft.subtotal_incl_tax += line.row_total_incl_tax or 0.0
        draft.base_subtotal_incl_tax += line.base_row_total_incl_tax or 0.0
    draft.subtotal, draft.base_subtotal = r4(draft.subtotal), r4(draft.base_subtotal)
    draft.subtotal_incl_tax = r4(draft.subtotal_incl_tax)
    draft.base_subtotal_incl_tax = r4(draft.base_subtotal_incl_tax)


def _discount(order: Order, draft: Draft, rounder: DeltaRounder) -> None:
    total = base_total = 0.0
    base_shipping = draft.requested_base_shipping or 0.0
    if base_shipping and order.base_shipping_amount <= 0:
        raise MagentoError(400, MSG_NO_SHIPPING)
    if base_shipping:
        base_shipping_discount = (
            base_shipping * abs(order.base_shipping_discount_amount) / order.base_shipping_amount
        )
        total += order.shipping_amount * base_shipping_discount / order.base_shipping_amount
        base_total += base_shipping_discount
    for line in draft.items:
        item = line.order_item
        if line.is_dummy or not item.discount_invoiced or not item.qty_invoiced:
            continue
        discount = item.discount_invoiced - item.discount_refunded
        base_discount = item.base_discount_invoiced - item.base_discount_refunded
        available = item.qty_invoiced - item.qty_refunded
        if not line.last and available > EPSILON:
            discount = rounder(discount / available * line.qty, "regular", True)
            base_discount = rounder(base_discount / available * line.qty, "base", True)
        line.discount_amount, line.base_discount_amount = r4(discount), r4(base_discount)
        total += line.discount_amount
        base_total += line.base_discount_amount
    draft.discount_amount, draft.base_discount_amount = -r4(total), -r4(base_total)


def _shipping(order: Order, draft: Draft) -> None:
    allowed = order.shipping_amount - order.shipping_refunded
    base_allowed = order.base_shipping_amount - order.base_shipping_refunded
    allowed_incl = allowed + order.shipping_tax_amount - order.shipping_tax_refunded
    base_allowed_incl = base_allowed + order.base_shipping_tax_amount
    base_allowed_incl -= order.base_shipping_tax_refunded
    desired = draft.requested_base_shipping
    if desired is None:
        shipping, base_shipping = allowed, base_allowed
        incl, base_incl = round_price(allowed_incl), round_price(max(base_allowed_incl, 0.0))
    else:
        desired = round_price(desired)
        if desired >= round_price(base_allowed) + 0.0001:
            raise MagentoError(
                400, MSG_MAX_SHIPPING, [format_currency(base_allowed, order.base_currency)]
            )
        original = order.base_shipping_amount
        ratio = desired / original if original > 0 else 0.0
        if desired > base_allowed - 0.0001:
            shipping, base_shipping = allowed, base_allowed
        else:
            shipping = round_price(order.shipping_amount * ratio)
            base_shipping = round_price(order.base_shipping_amount * ratio)
        incl = round_price(order.shipping_incl_tax * ratio)
        base_incl = round_price(order.base_shipping_incl_tax * ratio)
    draft.shipping_amount, draft.base_shipping_amount = r4(shipping), r4(base_shipping)
    draft.shipping_incl_tax, draft.base_shipping_incl_tax = r4(incl), r4(base_incl)


def _tax(order: Order, draft: Draft, rounder: DeltaRounder) -> None:
    tax = base_tax = dtc = base_dtc = 0.0
    for line in draft.items:
        item = line.order_item
        if line.is_dummy or line.qty <= 0 or not item.qty_invoiced:
            continue
        item_tax = item.tax_invoiced - item.tax_refunded
        item_base_tax = item.base_tax_invoiced - item.base_tax_refunded
        item_dtc = item.discount_tax_compensation_invoiced - item.discount_tax_compensation_refunded
        item_base_dtc = (
            item.base_discount_tax_compensation_invoiced
            - item.base_discount_tax_compensation_refunded
        )
        available = item.qty_invoiced - item.qty_refunded
        if not line.last:
            if available > EPSILON:
                share = line.qty / available
            else:  # more than is left (refused later): the ordered tax per unit
                item_tax, item_base_tax = item.tax_amount, item.base_tax_amount
                item_dtc = item_base_dtc = 0.0
                share = line.qty / item.qty_ordered if item.qty_ordered else 0.0
            item_tax = rounder(item_tax * share)
            item_base_tax = rounder(item_base_tax * share, "base")
            item_dtc = rounder(item_dtc * share)
            item_base_dtc = rounder(item_base_dtc * share, "base")
        line.tax_amount, line.base_tax_amount = r4(item_tax), r4(item_base_tax)
        line.discount_tax_compensation_amount = r4(item_dtc)
        line.base_discount_tax_compensation_amount = r4(item_base_dtc)
        tax += line.tax_amount
        base_tax += line.base_tax_amount
        dtc += line.discount_tax_compensation_amount
        base_dtc += line.base_discount_tax_compensation_amount

    shipping_tax = base_shipping_tax = 0.0
    partial_shipping = False
    base_order_shipping = order.base_shipping_amount
    invoice = draft.invoice
    if invoice is not None:
        if base_order_shipping:
            factor = draft.base_shipping_amount / base_order_shipping
            shipping_tax = rounder(invoice.shipping_tax_amount * factor)
            base_shipping_tax = rounder(invoice.base_shipping_tax_amount * factor, "base")
            dtc = rounder(dtc + invoice.shipping_discount_tax_compensation_amount * factor)
            base_dtc = rounder(
                base_dtc + invoice.base_shipping_discount_tax_compensation_amnt * factor, "base"
            )
            if (factor < 1 and invoice.shipping_tax_amount > 0) or (
                abs(order.shipping_discount_amount) >= order.shipping_amount
            ):
                partial_shipping = True
            tax += shipping_tax
            base_tax += base_shipping_tax
    else:
        shipping_dtc = base_shipping_dtc = 0.0
        delta = base_order_shipping - order.base_shipping_refunded
        if order.shipping_amount > 0 and delta > draft.base_shipping_amount + EPSILON:
            part = draft.shipping_amount / order.shipping_amount
            base_part = draft.base_shipping_amount / base_order_shipping
            shipping_tax = rounder(order.shipping_tax_amount * part)
            base_shipping_tax = rounder(order.base_shipping_tax_amount * base_part, "base")
            shipping_dtc = rounder(order.shipping_discount_tax_compensation_amount * part)
            base_shipping_dtc = rounder(
                order.base_shipping_discount_tax_compensation_amnt * base_part, "base"
            )
            if part < 1 and (
                order.shipping_tax_amount > 0
                or abs(order.shipping_discount_amount) >= order.shipping_amount
            ):
                partial_shipping = True
        elif abs(delta - draft.base_shipping_amount) < EPSILON:
            shipping_tax = order.shipping_tax_amount - order.shipping_tax_refunded
            base_shipping_tax = order.base_shipping_tax_amount - order.base_shipping_tax_refunded
            shipping_dtc = (
                order.shipping_discount_tax_compensation_amount
                - order.shipping_discount_tax_compensation_refunded
            )
            base_shipping_dtc = (
                order.base_shipping_discount_tax_compensation_amnt
                - order.base_shipping_discount_tax_compensation_refunded
            )
        tax += shipping_tax
        base_tax += base_shipping_tax
        dtc += shipping_dtc
        base_dtc += base_shipping_dtc

    allowed, base_allowed, allowed_dtc, base_allowed_dtc = allowed_tax(order, draft)
    if draft.is_last(order) and not partial_shipping:
        tax, base_tax, dtc, base_dtc = allowed, base_allowed, allowed_dtc, base_allowed_dtc
    else:
        tax, base_tax = min(allowed, tax), min(base_allowed, base_tax)
        dtc, base_dtc = min(allowed_dtc, dtc), min(base_allowed_dtc, base_dtc)
    draft.tax_amount, draft.base_tax_amount = r4(tax), r4(base_tax)
    draft.discount_tax_compensation_amount = r4(dtc)
    draft.base_discount_tax_compensation_amount = r4(base_dtc)
    draft.shipping_tax_amount = r4(shipping_tax)
    draft.base_shipping_tax_amount = r4(base_shipping_tax)


def allowed_tax(order: Order, draft: Draft) -> tuple[float, float, float, float]:
    """Tax.php calculateAllowed*: the tax (and discount tax compensation) still refundable.

    For RefundInvoice the invoice's tax less what its credit memos took, but never more than
    the order has left; for RefundOrder the order's invoiced tax less what was refunded.
    """
    order_tax = order.tax_invoiced - order.tax_refunded
    order_base_tax = order.base_tax_invoiced - order.base_tax_refunded
    order_dtc = (
        order.discount_tax_compensation_invoiced
        + order.shipping_discount_tax_compensation_amount
        - order.discount_tax_compensation_refunded
        - order.shipping_discount_tax_compensation_refunded
    )
    order_base_dtc = (
        order.base_discount_tax_compensation_invoiced
        + order.base_shipping_discount_tax_compensation_amnt
        - order.base_discount_tax_compensation_refunded
        - order.base_shipping_discount_tax_compensation_refunded
    )
    invoice = draft.invoice
    if invoice is None:
        return order_tax, order_base_tax, order_dtc, order_base_dtc
    taken = draft.invoice_refunds or InvoiceRefunds()
    invoice_dtc = (
        invoice.discount_tax_compensation_amount
        + invoice.shipping_discount_tax_compensation_amount
        - taken.discount_tax_compensation_amount
    )
    invoice_base_dtc = (
        invoice.base_discount_tax_compensation_amount
        + invoice.base_shipping_discount_tax_compensation_amnt
        - taken.base_discount_tax_compensation_amount
    )
    return (
        min(invoice.tax_amount - taken.tax_amount, order_tax),
        min(invoice.base_tax_amount - taken.base_tax_amount, order_base_tax),
        min(invoice_dtc, order_dtc),
        min(invoice_base_dtc, order_base_dtc),
    )


def _cost(draft: Draft) -> None:
    draft.base_cost = r4(sum(line.order_item.base_cost * line.qty for line in draft.items))


def _grand(draft: Draft) -> None:
    grand = draft.subtotal + draft.discount_amount + draft.shipping_amount
    grand += draft.tax_amount + draft.discount_tax_compensation_amount
    base = draft.base_subtotal + draft.base_discount_amount + draft.base_shipping_amount
    base += draft.base_tax_amount + draft.base_discount_tax_compensation_amount
    grand += draft.adjustment_positive - draft.adjustment_negative
    base += draft.base_adjustment_positive - draft.base_adjustment_negative
    draft.grand_total, draft.base_grand_total = r4(grand), r4(base)
