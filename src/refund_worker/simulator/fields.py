"""The data interfaces and method signatures of the refund routes, from admin-schema-2.4.9.yaml.

Copied by hand from the official schema's definitions (``sales-data-creditmemo-*``) so the
simulator never has to load the 1.1 MB YAML at run time.
"""

from __future__ import annotations

from .inputs import BOOL, FLOAT, INT, STRING, ArrayOf, FieldType, ObjectOf, Param

_NS = "\\Magento\\Sales\\Api\\Data\\"


def _typed(names: str, type_: str) -> dict[str, FieldType]:
    return dict.fromkeys(names.split(), type_)


ITEM_CREATION = ObjectOf(
    _NS + "CreditmemoItemCreationInterface",
    {
        "order_item_id": INT,
        "qty": FLOAT,
        "extension_attributes": ObjectOf(_NS + "CreditmemoItemCreationExtensionInterface"),
    },
)

COMMENT_CREATION = ObjectOf(
    _NS + "CreditmemoCommentCreationInterface",
    {
        "comment": STRING,
        "is_visible_on_front": INT,
        "extension_attributes": ObjectOf(_NS + "CreditmemoCommentCreationExtensionInterface"),
    },
)

CREATION_ARGUMENTS = ObjectOf(
    _NS + "CreditmemoCreationArgumentsInterface",
    {
        "shipping_amount": FLOAT,
        "adjustment_positive": FLOAT,
        "adjustment_negative": FLOAT,
        "extension_attributes": ObjectOf(
            _NS + "CreditmemoCreationArgumentsExtensionInterface",
            {"return_to_stock_items": ArrayOf(INT)},
        ),
    },
)

CREDITMEMO_ITEM = ObjectOf(
    _NS + "CreditmemoItemInterface",
    {
        **_typed("additional_data description name sku weee_tax_applied", STRING),
        **_typed("entity_id order_item_id parent_id product_id", INT),
        **_typed(
            "base_cost base_discount_amount base_discount_tax_compensation_amount base_price "
            "base_price_incl_tax base_row_total base_row_total_incl_tax base_tax_amount "
            "base_weee_tax_applied_amount base_weee_tax_applied_row_amnt "
            "base_weee_tax_disposition base_weee_tax_row_disposition discount_amount "
            "discount_tax_compensation_amount price price_incl_tax qty row_total "
            "row_total_incl_tax tax_amount weee_tax_applied_amount weee_tax_applied_row_amount "
            "weee_tax_disposition weee_tax_row_disposition",
            FLOAT,
        ),
        "extension_attributes": ObjectOf(_NS + "CreditmemoItemExtensionInterface"),
    },
)

CREDITMEMO_COMMENT = ObjectOf(
    _NS + "CreditmemoCommentInterface",
    {
        "comment": STRING,
        "created_at": STRING,
        "entity_id": INT,
        "is_customer_notified": INT,
        "is_visible_on_front": INT,
        "parent_id": INT,
        "extension_attributes": ObjectOf(_NS + "CreditmemoCommentExtensionInterface"),
    },
)

CREDITMEMO_FLOAT_COLUMNS = [
    "adjustment",
    "adjustment_negative",
    "adjustment_positive",
    "base_adjustment",
    "base_adjustment_negative",
    "base_adjustment_positive",
    "base_discount_amount",
    "base_grand_total",
    "base_discount_tax_compensation_amount",
    "base_shipping_amount",
    "base_shipping_discount_tax_compensation_amnt",
    "base_shipping_incl_tax",
    "base_shipping_tax_amount",
    "base_subtotal",
    "base_subtotal_incl_tax",
    "base_tax_amount",
    "base_to_global_rate",
    "base_to_order_rate",
    "discount_amount",
    "grand_total",
    "discount_tax_compensation_amount",
    "shipping_amount",
    "shipping_discount_tax_compensation_amount",
    "shipping_incl_tax",
    "shipping_tax_amount",
    "store_to_base_rate",
    "store_to_order_rate",
    "subtotal",
    "subtotal_incl_tax",
    "tax_amount",
]
CREDITMEMO_INT_COLUMNS = [
    "billing_address_id",
    "creditmemo_status",
    "email_sent",
    "entity_id",
    "invoice_id",
    "order_id",
    "shipping_address_id",
    "state",
    "store_id",
]
CREDITMEMO_STRING_COLUMNS = [
    "base_currency_code",
    "created_at",
    "discount_description",
    "global_currency_code",
    "increment_id",
    "order_currency_code",
    "store_currency_code",
    "transaction_id",
    "updated_at",
]
CREDITMEMO_COLUMNS = frozenset(
    CREDITMEMO_FLOAT_COLUMNS + CREDITMEMO_INT_COLUMNS + CREDITMEMO_STRING_COLUMNS
)

CREDITMEMO = ObjectOf(
    _NS + "CreditmemoInterface",
    {
        **_typed(" ".join(CREDITMEMO_FLOAT_COLUMNS), FLOAT),
        **_typed(" ".join(CREDITMEMO_INT_COLUMNS), INT),
        **_typed(" ".join(CREDITMEMO_STRING_COLUMNS), STRING),
        "items": ArrayOf(CREDITMEMO_ITEM),
        "comments": ArrayOf(CREDITMEMO_COMMENT),
        "extension_attributes": ObjectOf(
            _NS + "CreditmemoExtensionInterface",
            {
                **_typed(
                    "base_customer_balance_amount customer_balance_amount "
                    "base_gift_cards_amount gift_cards_amount",
                    FLOAT,
                ),
                **_typed(
                    "gw_base_price gw_price gw_items_base_price gw_items_price "
                    "gw_card_base_price gw_card_price gw_base_tax_amount gw_tax_amount "
                    "gw_items_base_tax_amount gw_items_tax_amount gw_card_base_tax_amount "
                    "gw_card_tax_amount",
                    STRING,
                ),
            },
        ),
    },
)

INVOICE_COLUMNS = frozenset(
    [
        "entity_id",
        "order_id",
        "state",
        "increment_id",
        "transaction_id",
        "created_at",
        "updated_at",
        "store_id",
        "grand_total",
        "base_grand_total",
        "subtotal",
        "base_subtotal",
        "tax_amount",
        "base_tax_amount",
        "shipping_amount",
        "base_shipping_amount",
        "base_total_refunded",
        "total_qty",
        "is_used_for_refund",
        "can_void_flag",
        "email_sent",
        "base_currency_code",
        "order_currency_code",
    ]
)

# Method signatures, in PHP parameter order (path parameters are converted separately).
REFUND_ORDER = (
    Param("items", ArrayOf(ITEM_CREATION)),
    Param("notify", BOOL),
    Param("appendComment", BOOL),
    Param("comment", COMMENT_CREATION),
    Param("arguments", CREATION_ARGUMENTS),
)
REFUND_INVOICE = (
    Param("items", ArrayOf(ITEM_CREATION)),
    Param("isOnline", BOOL),
    Param("notify", BOOL),
    Param("appendComment", BOOL),
    Param("comment", COMMENT_CREATION),
    Param("arguments", CREATION_ARGUMENTS),
)
CREDITMEMO_REFUND = (
    Param("creditmemo", CREDITMEMO, required=True),
    Param("offlineRequested", BOOL),
)
CREDITMEMO_SAVE = (Param("entity", CREDITMEMO, required=True),)
COMMENT_SAVE = (Param("entity", CREDITMEMO_COMMENT, required=True),)
ADMIN_TOKEN = (Param("username", STRING, required=True), Param("password", STRING, required=True))
