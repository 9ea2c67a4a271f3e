"""Pure reconciliation: the credit memo an earlier attempt made, and whether it fits the refund.

After an attempt whose outcome is unknown, the worker lists the order's credit memos and looks
for the refund's marker (``markers``). A credit memo carrying it is accepted only if it also fits
the request: the same order, the invoice named (if any), the same items and quantities, and the
amounts asked for. Anything else (two credit memos with the marker, one that does not fit) is
for a person to settle: ``AttentionRequired``, never a success and never a second refund.

No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from refund_worker.errors import AttentionRequired
from refund_worker.markers import carries_marker
from refund_worker.schemas import RefundRequest

#: Amounts in Magento are stored with four decimals and often shown rounded to two.
TOLERANCE = Decimal("0.005")


@dataclass(frozen=True)
class Match:
    """The credit memo an earlier attempt made for this refund."""

    creditmemo_id: int
    creditmemo: dict[str, Any]


def with_marker(creditmemos: Iterable[dict[str, Any]], marker: str) -> list[dict[str, Any]]:
    """The credit memos one of whose comments carries ``marker``, lowest id first."""
    found = []
    for creditmemo in creditmemos:
        comments = creditmemo.get("comments")
        if not isinstance(comments, list):
            continue
        texts = (c.get("comment") for c in comments if isinstance(c, dict))
        if any(isinstance(text, str) and carries_marker(text, marker) for text in texts):
            found.append(creditmemo)
    return sorted(found, key=lambda creditmemo: _int(creditmemo.get("entity_id")) or 0)


def choose(
    request: RefundRequest,
    matches: list[dict[str, Any]],
    order_items: Mapping[int, Mapping[str, Any]] | None = None,
) -> Match | None:
    """The one credit memo carrying the marker, checked to fit ``request``.

    ``order_items`` (item id → order item) lets an unrequested credit memo row be told apart as
    the child of a requested configurable or bundle item; without it such a row is a misfit.
    Raises ``AttentionRequired`` when several carry the marker or the one does not fit.
    """
    if not matches:
        return None
    ids = [_int(creditmemo.get("entity_id")) for creditmemo in matches]
    if len(matches) > 1:
        raise AttentionRequired(
            f"credit memos {', '.join(map(str, ids))} all carry this refund's marker; "
            "at most one should: check them in Magento"
        )
    creditmemo, creditmemo_id = matches[0], ids[0]
    if creditmemo_id is None:
        raise AttentionRequired("a credit memo carrying this refund's marker has no entity_id")
    problems = fit_problems(request, creditmemo, order_items)
    if problems:
        raise AttentionRequired(
            f"credit memo {creditmemo_id} carries this refund's marker but does not fit it: "
            + "; ".join(problems)
        )
    return Match(creditmemo_id, creditmemo)


def fit_problems(
    request: RefundRequest,
    creditmemo: Mapping[str, Any],
    order_items: Mapping[int, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Every way ``creditmemo`` differs from what ``request`` asked for (empty: it fits)."""
    problems: list[str] = []
    order_id = _int(creditmemo.get("order_id"))
    if order_id != request.order_id:
        problems.append(f"it belongs to order {order_id}, not {request.order_id}")
    # A refund naming an invoice goes to RefundInvoice (the memo names that invoice) or, when the
    # payment is offline, to RefundOrder (the memo names none); another invoice never fits.
    invoice_id = _int(creditmemo.get("invoice_id"))
    if request.invoice_id is not None and invoice_id not in (None, request.invoice_id):
        problems.append(f"it refunds invoice {invoice_id}, not {request.invoice_id}")
    problems.extend(_item_problems(request, creditmemo, order_items))
    problems.extend(_amount_problems(request, creditmemo))
    return problems


def _requested_items(request: RefundRequest) -> dict[int, Decimal] | None:
    if request.creditmemo is not None:
        items = request.creditmemo.items
        return {item.order_item_id: item.qty for item in items} if items else None
    if request.items is None:
        return None
    return {item.order_item_id: item.qty for item in request.items}


def _item_problems(
    request: RefundRequest,
    creditmemo: Mapping[str, Any],
    order_items: Mapping[int, Mapping[str, Any]] | None,
) -> list[str]:
    wanted = _requested_items(request)
    if wanted is None:
        return []  # "everything still refundable": what that was is no longer knowable
    refunded: dict[int, Decimal] = {}
    for row in creditmemo.get("items") or []:
        if not isinstance(row, dict):
            continue
        item_id, qty = _int(row.get("order_item_id")), _decimal(row.get("qty"))
        if item_id is not None and qty is not None and qty > 0:
            refunded[item_id] = refunded.get(item_id, Decimal(0)) + qty
    problems = []
    for item_id, qty in sorted(wanted.items()):
        got = refunded.get(item_id)
        if got is None:
            problems.append(f"it does not refund order item {item_id}")
        elif abs(got - qty) > TOLERANCE:
            problems.append(
                f"it refunds {_show(got)} of order item {item_id}, not {_show(qty)}"
            )
    # Rows Magento adds on its own: a configurable's or fixed bundle's children follow their
    # parent, and a dynamic bundle's parent joins its children (CreditmemoFactory).
    parents_of_wanted = {
        _int((order_items or {}).get(item_id, {}).get("parent_item_id")) for item_id in wanted
    }
    for item_id in sorted(set(refunded) - set(wanted)):
        parent = _int((order_items or {}).get(item_id, {}).get("parent_item_id"))
        if (parent is None or parent not in wanted) and item_id not in parents_of_wanted:
            problems.append(f"it also refunds order item {item_id}, which was not asked for")
    return problems


def _amount_problems(request: RefundRequest, creditmemo: Mapping[str, Any]) -> list[str]:
    expected: dict[str, Decimal | None]
    if request.creditmemo is not None:
        document = request.creditmemo
        expected = {
            "grand_total": document.grand_total,
            "shipping_amount": document.shipping_amount,
            "adjustment_positive": document.adjustment_positive,
            "adjustment_negative": document.adjustment_negative,
        }
    else:
        shipping = request.shipping_amount
        if shipping is None and request.is_partial:
            shipping = Decimal(0)  # what the worker sends for a partial refund without it
        expected = {
            "shipping_amount": shipping,
            "adjustment_positive": request.adjustment_positive or Decimal(0),
            "adjustment_negative": request.adjustment_negative or Decimal(0),
        }
    problems = []
    for name, amount in expected.items():
        if amount is None:
            continue
        # The request's amount may be read in either currency (docs/magento.md §1.1).
        seen = [_decimal(creditmemo.get(name)), _decimal(creditmemo.get(f"base_{name}"))]
        if not any(value is not None and abs(value - amount) <= TOLERANCE for value in seen):
            shown = _show(seen[0]) if seen[0] is not None else "nothing"
            problems.append(f"its {name} is {shown}, not {_show(amount)}")
    return problems


def _show(number: Decimal) -> str:
    """``5``, ``2.5``: without trailing zeros or an exponent."""
    return format(number.normalize(), "f")


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None
