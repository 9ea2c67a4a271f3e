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
    field_validator,
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
SignedAmount = Annotated[
    Decimal,
    Field(ge=-MAX_AMOUNT, le=MAX_AMOUNT, allow_inf_nan=False),
    AfterValidator(_finite_with_four_places),
]
#: A currency rate; Magento stores 0 for the store rates it does not use.
Rate = Annotated[Decimal, Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
#: A text field of a caller-built credit memo: printable, at most 255 characters.
DocumentText = Annotated[
    str, StringConstraints(max_length=255, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")
]
#: Magento's order number (``sales_order.increment_id``, varchar(50)): an optional prefix and
#: digits, as a store's sequence makes them (``000000123``, ``EU-000000123``, ``000000118-1``
#: for an order edited in the admin).
MAX_INCREMENT_ID = 50
INCREMENT_ID_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,48}[A-Za-z0-9])?")
IncrementId = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=MAX_INCREMENT_ID, pattern=f"^{INCREMENT_ID_PATTERN.pattern}$"
    ),
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
    """An item of a caller-built credit memo (``service=creditmemo``): every field of Adobe's
    ``sales-data-creditmemo-item-interface``. ``entity_id`` and ``parent_id`` (the memo's own
    ids, assigned by Magento) are accepted and not sent."""

    order_item_id: EntityId
    qty: Quantity
    #: Assigned by Magento on a new credit memo: accepted (an exported memo has them), not sent.
    entity_id: Annotated[StrictInt, Field(ge=0, le=MAX_ENTITY_ID)] | None = None
    parent_id: Annotated[StrictInt, Field(ge=0, le=MAX_ENTITY_ID)] | None = None
    product_id: EntityId | None = None
    sku: DocumentText | None = None
    name: DocumentText | None = None
    description: DocumentText | None = None
    additional_data: DocumentText | None = None
    weee_tax_applied: DocumentText | None = None
    price: Amount | None = None
    base_price: Amount | None = None
    price_incl_tax: Amount | None = None
    base_price_incl_tax: Amount | None = None
    row_total: Amount | None = None
    base_row_total: Amount | None = None
    row_total_incl_tax: Amount | None = None
    base_row_total_incl_tax: Amount | None = None
    base_cost: Amount | None = None
    tax_amount: Amount | None = None
    base_tax_amount: Amount | None = None
    discount_amount: Amount | None = None
    base_discount_amount: Amount | None = None
    discount_tax_compensation_amount: Amount | None = None
    base_discount_tax_compensation_amount: Amount | None = None
    weee_tax_applied_amount: Amount | None = None
    base_weee_tax_applied_amount: Amount | None = None
    weee_tax_applied_row_amount: Amount | None = None
    base_weee_tax_applied_row_amnt: Amount | None = None
    weee_tax_disposition: Amount | None = None
    base_weee_tax_disposition: Amount | None = None
    weee_tax_row_disposition: Amount | None = None
    base_weee_tax_row_disposition: Amount | None = None
    extension_attributes: dict[str, Any] | None = Field(default=None, max_length=0)


class CreditmemoExtension(_Frozen):
    """``sales-data-creditmemo-extension-interface`` (Adobe Commerce: store credit, gift cards,
    gift wrapping); an Open Source shop refuses these keys itself."""

    base_customer_balance_amount: Amount | None = None
    customer_balance_amount: Amount | None = None
    base_gift_cards_amount: Amount | None = None
    gift_cards_amount: Amount | None = None
    gw_base_price: DocumentText | None = None
    gw_price: DocumentText | None = None
    gw_items_base_price: DocumentText | None = None
    gw_items_price: DocumentText | None = None
    gw_card_base_price: DocumentText | None = None
    gw_card_price: DocumentText | None = None
    gw_base_tax_amount: DocumentText | None = None
    gw_tax_amount: DocumentText | None = None
    gw_items_base_tax_amount: DocumentText | None = None
    gw_items_tax_amount: DocumentText | None = None
    gw_card_base_tax_amount: DocumentText | None = None
    gw_card_tax_amount: DocumentText | None = None


#: Fields of a credit memo that Magento assigns (or takes from the order) on a new one: accepted,
#: so a document exported from a shop can be sent back as it is, and never sent.
CREDITMEMO_ASSIGNED_FIELDS = frozenset(
    {
        "entity_id",
        "increment_id",
        "created_at",
        "updated_at",
        "state",
        "creditmemo_status",
        "email_sent",
        "transaction_id",
        "store_id",
        "billing_address_id",
        "shipping_address_id",
        "order_id",
    }
)
CREDITMEMO_ITEM_ASSIGNED_FIELDS = frozenset({"entity_id", "parent_id", "extension_attributes"})


class CreditmemoDocument(_Frozen):
    """A whole credit memo for ``POST /V1/creditmemo/refund``: every field of Adobe's
    ``sales-data-creditmemo-interface``; Magento does not recompute it. What Magento assigns
    (``CREDITMEMO_ASSIGNED_FIELDS``) is accepted and not sent; ``order_id``, when given, must be
    the request's order; ``comments`` are the worker's (the request's ``comment`` is the text)."""

    # Assigned by Magento (or taken from the order): accepted, never sent.
    entity_id: Annotated[StrictInt, Field(ge=0, le=MAX_ENTITY_ID)] | None = None
    increment_id: DocumentText | None = None
    created_at: DocumentText | None = None
    updated_at: DocumentText | None = None
    state: Annotated[StrictInt, Field(ge=0, le=3)] | None = None
    creditmemo_status: Annotated[StrictInt, Field(ge=0, le=3)] | None = None
    email_sent: Annotated[StrictInt, Field(ge=0, le=1)] | None = None
    transaction_id: DocumentText | None = None
    store_id: Annotated[StrictInt, Field(ge=0, le=MAX_ENTITY_ID)] | None = None
    billing_address_id: Annotated[StrictInt, Field(ge=0, le=MAX_ENTITY_ID)] | None = None
    shipping_address_id: Annotated[StrictInt, Field(ge=0, le=MAX_ENTITY_ID)] | None = None
    #: Checked against the request's order (by id, or once the increment id is resolved).
    order_id: EntityId | None = None

    invoice_id: EntityId | None = None
    items: Annotated[list[CreditmemoItem], Field(max_length=MAX_ITEMS)] = Field(
        default_factory=list
    )
    #: The worker writes the credit memo's one comment (the request's ``comment`` and its marker).
    comments: list[Any] | None = None
    base_currency_code: CurrencyCode | None = None
    global_currency_code: CurrencyCode | None = None
    order_currency_code: CurrencyCode | None = None
    store_currency_code: CurrencyCode | None = None
    base_to_global_rate: Rate | None = None
    base_to_order_rate: Rate | None = None
    store_to_base_rate: Rate | None = None
    store_to_order_rate: Rate | None = None
    subtotal: Amount | None = None
    base_subtotal: Amount | None = None
    subtotal_incl_tax: Amount | None = None
    base_subtotal_incl_tax: Amount | None = None
    tax_amount: Amount | None = None
    base_tax_amount: Amount | None = None
    shipping_amount: Amount | None = None
    base_shipping_amount: Amount | None = None
    shipping_incl_tax: Amount | None = None
    base_shipping_incl_tax: Amount | None = None
    shipping_tax_amount: Amount | None = None
    base_shipping_tax_amount: Amount | None = None
    shipping_discount_tax_compensation_amount: Amount | None = None
    base_shipping_discount_tax_compensation_amnt: Amount | None = None
    #: Negative on a credit memo, as on the order (a discount taken back).
    discount_amount: SignedAmount | None = None
    base_discount_amount: SignedAmount | None = None
    discount_description: DocumentText | None = None
    discount_tax_compensation_amount: Amount | None = None
    base_discount_tax_compensation_amount: Amount | None = None
    adjustment: SignedAmount | None = None
    base_adjustment: SignedAmount | None = None
    adjustment_positive: Amount | None = None
    base_adjustment_positive: Amount | None = None
    adjustment_negative: Amount | None = None
    base_adjustment_negative: Amount | None = None
    grand_total: Amount
    base_grand_total: Amount
    extension_attributes: CreditmemoExtension | None = None

    @field_validator("comments")
    @classmethod
    def _no_comments(cls, comments: list[Any] | None) -> list[Any] | None:
        if comments:
            raise ValueError(
                "the worker writes the credit memo's comment (with its marker): put the text in "
                "the request's comment field"
            )
        return comments

    def magento_fields(self) -> dict[str, Any]:
        """What is sent: the document without what Magento assigns (items likewise)."""
        document = self.model_dump(
            mode="python", exclude_none=True, exclude=set(CREDITMEMO_ASSIGNED_FIELDS)
        )
        document.pop("comments", None)
        document["items"] = [
            {
                key: value
                for key, value in item.items()
                if key not in CREDITMEMO_ITEM_ASSIGNED_FIELDS
            }
            for item in document.get("items", [])
        ]
        return document


class RefundRequest(_Frozen):
    """What an order system asks; unknown fields are refused, each rejection names its field."""

    idempotency_key: IdempotencyKey
    #: The Magento installation (a configured shop); optional while exactly one is configured,
    #: and stored resolved, so ``shop`` given or left out is one payload.
    shop: ShopName | None = None
    #: The order: its entity id, or its increment id (the order number people see), which the
    #: worker resolves in the refund's shop and stores (exactly one of the two).
    order_id: EntityId | None = None
    order_increment_id: IncrementId | None = None
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
        if self.order_id is None and self.order_increment_id is None:
            raise ValueError(
                "order_id: required: the order's entity id, or its order number as "
                "order_increment_id (e.g. '000000123')"
            )
        if self.order_id is not None and self.order_increment_id is not None:
            raise ValueError(
                "order_increment_id: give order_id or order_increment_id, not both"
            )
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
            document_order = self.creditmemo.order_id
            if self.order_id is not None and document_order not in (None, self.order_id):
                raise ValueError(
                    f"creditmemo.order_id: {document_order} is not the request's order_id "
                    f"{self.order_id}"
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

    def for_order(self, order_id: int) -> RefundRequest:
        """This request with its order resolved (``order_increment_id`` kept): what the worker
        acts on once Magento said which order the increment id is. Never stored or hashed."""
        copied = self.model_copy(update={"order_id": order_id})
        copied.__dict__.pop("_canonical_json", None)
        return copied

    @property
    def resolved_order_id(self) -> int:
        """The order's entity id; only once resolved (``for_order``)."""
        if self.order_id is None:
            raise ValueError(f"order {self.order_increment_id!r} is not resolved yet")
        return self.order_id

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
    #: None until the worker has resolved ``order_increment_id``.
    order_id: int | None
    order_increment_id: str | None = None
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
