"""Frozen pydantic models at the boundaries: the refund request, receipts and status views.

Money is ``Decimal``, at most four decimal places, finite and non-negative; it is validated here
once and never turned into a float inside the worker.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from refund_worker.markers import imitates_marker
from refund_worker.statuses import DEFAULT_SHOP as DEFAULT_SHOP  # re-exported, as are these:
from refund_worker.statuses import DEFAULT_TENANT as DEFAULT_TENANT
from refund_worker.statuses import MAX_SHOP_NAME, SHOP_NAME_PATTERN
from refund_worker.statuses import SETTLED_STATUSES as SETTLED_STATUSES
from refund_worker.statuses import ErrorKind as ErrorKind
from refund_worker.statuses import NotificationStatus as NotificationStatus
from refund_worker.statuses import RefundStatus as RefundStatus
from refund_worker.statuses import Service as Service

MAX_AMOUNT = Decimal("1000000000")
MAX_QTY = Decimal("1000000")
MAX_ITEMS = 1000
MAX_COMMENT_LENGTH = 2000
#: Tenant names, as API key names: 1-64 of A-Z a-z 0-9 _ . -
TENANT_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


#: ``service`` when the worker chooses it (from the payment and the invoices).
AUTO: Literal["auto"] = "auto"


def _finite_with_four_places(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4 and value != value.quantize(Decimal("0.0001")):
        raise ValueError("must have at most 4 decimal places")
    value = value.quantize(Decimal("0.0001"))
    return value.copy_abs() if value.is_zero() else value  # -0 is stored as 0


Amount = Annotated[
    Decimal,
    Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False),
    AfterValidator(_finite_with_four_places),
]
Quantity = Annotated[
    Decimal,
    Field(gt=0, le=MAX_QTY, allow_inf_nan=False),
    AfterValidator(_finite_with_four_places),
]
#: Magento entity ids are signed 32-bit integers.
MAX_ENTITY_ID = 2**31 - 1
EntityId = Annotated[StrictInt, Field(gt=0, le=MAX_ENTITY_ID)]
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
]
StoreCode = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,32}$")]
#: A configured shop's name (``Settings.shops``); which names exist is checked at intake.
ShopName = Annotated[
    str,
    StringConstraints(max_length=MAX_SHOP_NAME, pattern=f"^{SHOP_NAME_PATTERN.pattern}$"),
]


def _no_marker_imitation(text: str) -> str:
    if imitates_marker(text):
        raise ValueError(
            "must not contain 'refund-worker:' or anything like it: the worker writes its own "
            "marker after the comment, and no caller may write one"
        )
    return text


CommentText = Annotated[
    str,
    StringConstraints(
        max_length=MAX_COMMENT_LENGTH, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
    ),
    AfterValidator(_no_marker_imitation),
]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        keys = [key for key, _ in pairs]
        twice = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"key {twice[:64]!r} appears more than once in one object")
    return document


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(data: str | bytes, *, constants: bool = False) -> Any:
    """A JSON document, strictly: a key twice in one object is ``ValueError`` (never
    last-wins); numbers with a fraction become ``Decimal``, never float. ``NaN`` and ``Infinity``
    are not JSON (``ValueError``), unless ``constants``: then they are ``Decimal`` too, for the
    field's own validation to refuse by name."""
    return json.loads(
        data,
        parse_float=Decimal,
        parse_constant=Decimal if constants else _no_constants,
        object_pairs_hook=_unique_keys,
    )


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class RefundItem(_Frozen):
    """One order item and how many of it to refund."""

    order_item_id: EntityId
    qty: Quantity


class CreditmemoItem(_Frozen):
    """An item of a caller-built credit memo (``service=creditmemo``)."""

    order_item_id: EntityId
    qty: Quantity
    price: Amount | None = None
    base_price: Amount | None = None
    row_total: Amount | None = None
    base_row_total: Amount | None = None
    base_cost: Amount | None = None


class CreditmemoDocument(_Frozen):
    """A whole credit memo for ``POST /V1/creditmemo/refund``; Magento does not recompute it."""

    invoice_id: EntityId | None = None
    items: Annotated[list[CreditmemoItem], Field(max_length=MAX_ITEMS)] = Field(
        default_factory=list
    )
    subtotal: Amount | None = None
    base_subtotal: Amount | None = None
    shipping_amount: Amount | None = None
    base_shipping_amount: Amount | None = None
    adjustment_positive: Amount | None = None
    base_adjustment_positive: Amount | None = None
    adjustment_negative: Amount | None = None
    base_adjustment_negative: Amount | None = None
    grand_total: Amount
    base_grand_total: Amount


class RefundRequest(_Frozen):
    """What an order system asks; unknown fields are refused, each rejection names its field."""

    idempotency_key: IdempotencyKey
    #: The Magento installation (a configured shop); optional while exactly one is configured,
    #: and stored resolved, so ``shop`` given or left out is one payload.
    shop: ShopName | None = None
    order_id: EntityId
    invoice_id: EntityId | None = None
    store_code: StoreCode | None = None
    items: Annotated[list[RefundItem], Field(min_length=1, max_length=MAX_ITEMS)] | None = None
    shipping_amount: Amount | None = None
    adjustment_positive: Amount | None = None
    adjustment_negative: Amount | None = None
    return_to_stock: StrictBool | Annotated[list[EntityId], Field(max_length=MAX_ITEMS)] = False
    notify_customer: StrictBool = False
    comment: CommentText | None = None
    comment_visible_to_customer: StrictBool = False
    #: ``auto`` or a ``Service`` value (a Literal, not the enum: one clear error for a bad one).
    service: Literal["auto", "invoice", "order", "creditmemo", "record_only"] = AUTO
    creditmemo: CreditmemoDocument | None = None
    offline_requested: StrictBool = False

    @model_validator(mode="after")
    def _coherent(self) -> RefundRequest:
        if self.items is not None:
            ids = [item.order_item_id for item in self.items]
            if len(ids) != len(set(ids)):
                raise ValueError("items: each order_item_id may appear only once")
        if self.service == "creditmemo":
            if self.creditmemo is None:
                raise ValueError("creditmemo: required when service is 'creditmemo'")
            if self.items is not None or self.shipping_amount is not None:
                raise ValueError(
                    "items/shipping_amount: with service 'creditmemo' put them in the creditmemo"
                )
        else:
            if self.creditmemo is not None:
                raise ValueError("creditmemo: only allowed when service is 'creditmemo'")
            if self.offline_requested:
                raise ValueError("offline_requested: only allowed when service is 'creditmemo'")
        if isinstance(self.return_to_stock, list):
            if not self.return_to_stock:
                raise ValueError("return_to_stock: give true, false or a non-empty list of ids")
            if self.items is not None:
                refunded = {item.order_item_id for item in self.items}
                strays = sorted(set(self.return_to_stock) - refunded)
                if strays:
                    raise ValueError(
                        f"return_to_stock: order items {strays} are not among the refunded items"
                    )
        return self

    def canonical_json(self) -> str:
        """The request as stable JSON: what is stored, and what the payload hash is taken of."""
        return self._canonical_json

    @functools.cached_property
    def _canonical_json(self) -> str:  # computed once: hashed, then stored
        document = self.model_dump(mode="json", exclude_none=True)
        if document.get("shop") == DEFAULT_SHOP:
            # The one shop of a single-shop deployment is left out: a key stored before there
            # were shops, sent again, is the same payload (not a conflict).
            del document["shop"]
        return json.dumps(document, sort_keys=True, separators=(",", ":"))

    def in_shop(self, shop: str) -> RefundRequest:
        """This request naming ``shop`` (a configured shop's name, checked by the caller)."""
        copied = self.model_copy(update={"shop": shop})
        copied.__dict__.pop("_canonical_json", None)  # the copy's JSON names its shop
        return copied

    def payload_hash(self) -> str:
        """SHA-256 of the canonical JSON: the same key with another hash is a conflict."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def chosen_service(self) -> Service | None:
        """The service the caller chose; None for ``auto`` (the worker chooses)."""
        return None if self.service == AUTO else Service(self.service)

    @property
    def is_partial(self) -> bool:
        """True when the request names the items to refund (not everything still refundable)."""
        return self.items is not None


class RefundReceipt(_Frozen):
    """What intake answers: the refund's id and status, and whether the key was seen before."""

    refund_id: str
    idempotency_key: str
    status: RefundStatus
    duplicate: bool = False


class MagentoCallView(_Frozen):
    """One audit row, as shown to people."""

    attempt: int
    operation: str
    http_status: int | None
    duration_ms: float
    error: str | None
    created_at: datetime


class RefundSummary(_Frozen):
    """A refund without its Magento calls: a row of a list."""

    id: str
    tenant: str
    idempotency_key: str
    shop: str = DEFAULT_SHOP
    order_id: int
    invoice_id: int | None
    status: RefundStatus
    service_requested: str
    service: str | None
    creditmemo_id: int | None
    attempts: int
    last_error: str | None
    outcome: str | None
    notification_status: NotificationStatus
    notification_error: str | None
    #: Why a person must look (status ``needs_attention``).
    attention: str | None = None
    created_by: str | None = None
    replayed_by: str | None = None
    created_at: datetime
    updated_at: datetime


class RefundView(RefundSummary):
    """A refund as ``refund-worker status --json`` and the HTTP API show it."""

    calls: list[MagentoCallView] = Field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The fields a table shows."""
        return self.model_dump(mode="json", exclude={"calls"})
