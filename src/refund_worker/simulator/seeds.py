"""Seeds: the ``demo`` catalogue, a JSON file of order specs, or nothing.

The ``demo`` seed (all USD, customer ``customer@example.com``)::

    order  invoice  payment          state / status              what it is for
    -----  -------  ---------------  --------------------------  ------------------------------
      1       1     braintree        complete / complete         online-paid, fully shipped:
                                                                 RefundInvoice isOnline works
      2       2     checkmo          complete / complete         offline-paid: RefundInvoice says
                                                                 "We can't create creditmemo for
                                                                 the invoice."; RefundOrder works
      3       3     stripe_payments  processing / processing    partly shipped (1 of 3 BAG-01,
                                                                 2 of 2 SOCK-02 shipped)
      4       4     banktransfer     closed / closed             fully refunded (credit memo 1)
      5       5     paypal_express   holded / holded             on hold: refunds refused
      6       -     cashondelivery   canceled / canceled         canceled, never invoiced
      7       6     purchaseorder    complete / complete         decimal qty: 2.5 kg COFFEE-KG
                                                                 (is_qty_decimal) + 2 MUG-01
      8       -     checkmo          new / pending               never invoiced: "The order does
                                                                 not allow a creditmemo..."
      9       7     braintree        complete / complete         partly refunded (credit memo 2
                                                                 refunded HOODIE-L), money left
     10       8     paypal_express   payment_review /            under payment review: refunds
                                     payment_review              refused
     11       9     braintree        processing /                invoiced, nothing shipped,
                                     custom_processing           custom status kept by partial
                                                                 RefundOrder

Order item ids run from 1 in the order listed (order 1 has items 1 and 2, order 2 has 3 and 4,
...); ``GET /rest/V1/orders/{id}`` shows them.

A seed file holds the same JSON as ``POST /_simulator/orders``: compact order specs (see
``orderspec``) or orders in Magento's entity form (see ``imports``), either one import object,
a list, or ``{"orders": [...]}``. ``--import FILE`` reads the same files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEMO_ORDERS: list[dict[str, Any]] = [
    {
        "entity_id": 1,
        "payment_method": "braintree",
        "shipped": True,
        "shipping": 10.0,
        "items": [
            {
                "sku": "HOODIE-M",
                "name": "Chaz Kangeroo Hoodie M",
                "qty": 2,
                "price": 52.0,
                "tax": 4.29,
            },
            {"sku": "TEE-S", "name": "Tiberius Gym Tank S", "qty": 1, "price": 29.0, "tax": 2.39},
        ],
    },
    {
        "entity_id": 2,
        "payment_method": "checkmo",
        "shipped": True,
        "shipping": 5.0,
        "items": [
            {"sku": "BAG-01", "name": "Joust Duffle Bag", "qty": 1, "price": 34.0},
            {"sku": "BOTTLE-06", "name": "Affirm Water Bottle", "qty": 3, "price": 7.0},
        ],
    },
    {
        "entity_id": 3,
        "payment_method": "stripe_payments",
        "shipping": 8.0,
        "items": [
            {
                "sku": "BAG-01",
                "name": "Joust Duffle Bag",
                "qty": 3,
                "price": 34.0,
                "qty_shipped": 1,
            },
            {"sku": "SOCK-02", "name": "Running Socks", "qty": 2, "price": 9.5, "qty_shipped": 2},
        ],
    },
    {
        "entity_id": 4,
        "payment_method": "banktransfer",
        "shipped": True,
        "shipping": 5.0,
        "items": [{"sku": "YOGA-MAT", "name": "Sprite Yoga Mat", "qty": 1, "price": 45.0}],
        "refunds": [{"comment": {"comment": "demo: refunded in full", "is_visible_on_front": 0}}],
    },
    {
        "entity_id": 5,
        "payment_method": "paypal_express",
        "state": "holded",
        "shipping": 5.0,
        "items": [
            {"sku": "JACKET-L", "name": "Jupiter All-Weather Jacket", "qty": 1, "price": 56.99}
        ],
    },
    {
        "entity_id": 6,
        "payment_method": "cashondelivery",
        "invoiced": False,
        "state": "canceled",
        "shipping": 5.0,
        "items": [{"sku": "TEE-S", "name": "Tiberius Gym Tank S", "qty": 2, "price": 29.0}],
    },
    {
        "entity_id": 7,
        "payment_method": "purchaseorder",
        "shipped": True,
        "shipping": 6.0,
        "items": [
            {
                "sku": "COFFEE-KG",
                "name": "Ground Coffee (kg)",
                "qty": 2.5,
                "price": 18.0,
                "is_qty_decimal": True,
            },
            {"sku": "MUG-01", "name": "Stoneware Mug", "qty": 2, "price": 8.0},
        ],
    },
    {
        "entity_id": 8,
        "payment_method": "checkmo",
        "invoiced": False,
        "shipping": 5.0,
        "items": [{"sku": "BOTTLE-06", "name": "Affirm Water Bottle", "qty": 1, "price": 7.0}],
    },
    {
        "entity_id": 9,
        "payment_method": "braintree",
        "shipped": True,
        "shipping": 10.0,
        "items": [
            {"sku": "HOODIE-L", "name": "Chaz Kangeroo Hoodie L", "qty": 1, "price": 52.0},
            {"sku": "SOCK-02", "name": "Running Socks", "qty": 4, "price": 9.5},
        ],
        "refunds": [
            {
                "items": [{"order_item_id": 13, "qty": 1}],
                "arguments": {"shipping_amount": 0},
                "comment": {"comment": "demo: hoodie returned", "is_visible_on_front": 0},
            }
        ],
    },
    {
        "entity_id": 10,
        "payment_method": "paypal_express",
        "state": "payment_review",
        "shipping": 5.0,
        "items": [{"sku": "WATCH-01", "name": "Clamber Watch", "qty": 1, "price": 54.0}],
    },
    {
        "entity_id": 11,
        "payment_method": "braintree",
        "status": "custom_processing",
        "shipping": 7.5,
        "items": [
            {"sku": "TEE-S", "name": "Tiberius Gym Tank S", "qty": 3, "price": 29.0, "tax": 2.39},
            {"sku": "MUG-01", "name": "Stoneware Mug", "qty": 1, "price": 8.0},
        ],
    },
]


class SeedError(ValueError):
    """Raised when a seed name or seed file cannot be used."""


def order_specs(seed: str | None) -> list[dict[str, Any]]:
    """The order specs a seed stands for: ``None``, ``"demo"`` or a path to a JSON file."""
    if seed is None or seed == "":
        return []
    if seed == "demo":
        return [dict(spec) for spec in DEMO_ORDERS]
    path = Path(seed)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SeedError(f"cannot read seed file {seed!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise SeedError(f"seed file {seed!r} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("order"), dict):
        data = [data]  # one order in Magento's entity form
    elif isinstance(data, dict):
        data = data.get("orders")
    if not isinstance(data, list):
        raise SeedError(
            f'seed file {seed!r} must hold a list of order specs or {{"orders": [...]}}'
        )
    return data
