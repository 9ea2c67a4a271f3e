"""The compact order spec of the control API, seed files and ``SimulatorState.add_order``.

::

    {"entity_id": 42,                      # optional; next free id otherwise
     "increment_id": "000000042",          # optional
     "currency": "USD",                    # optional (USD)
     "customer_email": "jane@example.com", # optional
     "payment_method": "braintree",        # optional (checkmo); offline: checkmo, banktransfer,
                                           # cashondelivery, purchaseorder; free; others online
     "items": [{"sku": "TSHIRT-M",         # required, non-empty
                "name": "T-shirt M",       # optional (sku)
                "qty": 2,                  # required, > 0
                "price": 20.0,             # required, >= 0 (unit price, excl. tax)
                "tax": 1.6,                # optional: tax per unit (0)
                "is_qty_decimal": false,   # optional (false): fractional qty allowed or not
                "qty_invoiced": 2,         # optional (qty when invoiced, else 0)
                "qty_shipped": 1,          # optional (qty_invoiced when "shipped", else 0)
                "qty_canceled": 0,         # optional (0; the uninvoiced rest when canceled)
                "product_type": "simple"}],
     "shipping": 5.0,                      # optional shipping amount (0)
     "invoiced": true,                     # optional (true): create the paid invoice
     "shipped": false,                     # optional (false): ship every invoiced item
     "state": "processing",                # optional: new, processing, complete, closed,
                                           # holded, canceled, payment_review (derived if absent)
     "status": "custom_processing",        # optional (the state's default status)
     "created_at": "2025-06-01 10:00:00",  # optional (now, UTC)
     "refunds": [{...RefundOrder body...}]}  # optional: refunds applied right after creation
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .entities import DEFAULT_STATUS

STATES = frozenset(DEFAULT_STATUS)


class SpecError(ValueError):
    """Raised when an order spec is malformed; the message names the field."""


@dataclass(slots=True)
class ItemSpec:
    sku: str
    name: str
    qty: float
    price: float
    tax: float
    is_qty_decimal: bool
    qty_invoiced: float
    qty_shipped: float
    qty_canceled: float
    product_type: str
    product_id: int | None


@dataclass(slots=True)
class OrderSpec:
    items: list[ItemSpec]
    entity_id: int | None = None
    increment_id: str | None = None
    currency: str = "USD"
    customer_email: str = "customer@example.com"
    customer_firstname: str = "Veronica"
    customer_lastname: str = "Costello"
    payment_method: str = "checkmo"
    shipping: float = 0.0
    state: str = "new"
    status: str = "pending"
    hold_before_state: str | None = None
    created_at: str | None = None
    refunds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def invoiced(self) -> bool:
        return any(item.qty_invoiced > 0 for item in self.items)


def _num(data: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = data.get(key, default)
    if value is None:
        raise SpecError(f"{where}{key} is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where}{key} must be a number")
    if value < 0:
        raise SpecError(f"{where}{key} must not be negative")
    return float(value)


def _str(data: Mapping[str, Any], key: str, default: str, where: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}{key} must be a non-empty string")
    return value


def _bool(data: Mapping[str, Any], key: str, default: bool, where: str = "") -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"{where}{key} must be true or false")
    return value


def _item(data: Any, index: int, invoiced: bool, shipped: bool) -> ItemSpec:
    where = f"items[{index}]."
    if not isinstance(data, Mapping):
        raise SpecError(f"items[{index}] must be an object")
    sku = _str(data, "sku", "", where)
    qty = _num(data, "qty", where)
    if qty <= 0:
        raise SpecError(f"{where}qty must be greater than 0")
    is_decimal = _bool(data, "is_qty_decimal", False, where)
    qty_invoiced = _num(data, "qty_invoiced", where, qty if invoiced else 0.0)
    qty_shipped = _num(data, "qty_shipped", where, qty_invoiced if shipped else 0.0)
    qty_canceled = _num(data, "qty_canceled", where, 0.0)
    for key, value in (
        ("qty", qty),
        ("qty_invoiced", qty_invoiced),
        ("qty_shipped", qty_shipped),
        ("qty_canceled", qty_canceled),
    ):
        if not is_decimal and not float(value).is_integer():
            raise SpecError(f"{where}{key} must be a whole number unless is_qty_decimal")
        if value > qty:
            raise SpecError(f"{where}{key} must not exceed qty")
    if qty_invoiced + qty_canceled > qty:
        raise SpecError(f"{where}qty_invoiced + qty_canceled must not exceed qty")
    product_id = data.get("product_id")
    if product_id is not None and (isinstance(product_id, bool) or not isinstance(product_id, int)):
        raise SpecError(f"{where}product_id must be an integer")
    return ItemSpec(
        sku=sku,
        name=_str(data, "name", sku, where),
        qty=qty,
        price=_num(data, "price", where),
        tax=_num(data, "tax", where, 0.0),
        is_qty_decimal=is_decimal,
        qty_invoiced=qty_invoiced,
        qty_shipped=qty_shipped,
        qty_canceled=qty_canceled,
        product_type=_str(data, "product_type", "simple", where),
        product_id=product_id,
    )


def _derived_state(items: list[ItemSpec]) -> str:
    if not any(item.qty_invoiced > 0 for item in items):
        return "new"
    done = all(
        item.qty_invoiced + item.qty_canceled >= item.qty and item.qty_shipped >= item.qty_invoiced
        for item in items
    )
    return "complete" if done else "processing"


def parse(data: Any) -> OrderSpec:
    """Validate a compact order spec."""
    if not isinstance(data, Mapping):
        raise SpecError("an order spec must be a JSON object")
    invoiced = _bool(data, "invoiced", True)
    shipped = _bool(data, "shipped", False)
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise SpecError("items must be a non-empty list")
    state_given = data.get("state")
    if state_given is not None and state_given not in STATES:
        raise SpecError(f"state must be one of {sorted(STATES)}")
    items = [_item(item, index, invoiced, shipped) for index, item in enumerate(raw_items)]
    if state_given == "canceled":
        for raw, item in zip(raw_items, items, strict=True):
            if "qty_canceled" not in raw:
                item.qty_canceled = item.qty - item.qty_invoiced
    spec = OrderSpec(items=items)
    entity_id = data.get("entity_id")
    if entity_id is not None and (
        isinstance(entity_id, bool) or not isinstance(entity_id, int) or entity_id < 1
    ):
        raise SpecError("entity_id must be a positive integer")
    spec.entity_id = entity_id
    if data.get("increment_id") is not None:
        spec.increment_id = _str(data, "increment_id", "")
    spec.currency = _str(data, "currency", "USD").upper()
    spec.customer_email = _str(data, "customer_email", spec.customer_email)
    spec.customer_firstname = _str(data, "customer_firstname", spec.customer_firstname)
    spec.customer_lastname = _str(data, "customer_lastname", spec.customer_lastname)
    spec.payment_method = _str(data, "payment_method", "checkmo")
    spec.shipping = _num(data, "shipping", "", 0.0)
    derived = _derived_state(items)
    spec.state = str(state_given or derived)
    if spec.state == "holded":
        spec.hold_before_state = derived
    spec.status = _str(data, "status", DEFAULT_STATUS[spec.state])
    if data.get("created_at") is not None:
        spec.created_at = _str(data, "created_at", "")
    refunds = data.get("refunds", [])
    if not isinstance(refunds, list) or not all(isinstance(r, Mapping) for r in refunds):
        raise SpecError("refunds must be a list of RefundOrder bodies")
    spec.refunds = [dict(refund) for refund in refunds]
    return spec
