"""Every field of the sales entities in Adobe's schema, with the right JSON type.

Magento leaves a null field out of its JSON, so no single order carries them all: the fields are
counted over everything the simulator serves once the demo seed and the order library are loaded
and refunded (tests/simulator/test_sim_order_library.py's cases). Every property of each schema
definition must appear somewhere, except those in EXCEPTIONS, each with the reason it never
does; an exception that does appear fails the test, so the list stays true. Then each response
validates against the operation's response schema, and the entities the simulator builds itself
(compact orders, credit memos of RefundOrder/RefundInvoice) carry every field the exported ones
do.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from refund_worker.simulator import SimulatorState
from tests.magento_schema import SCHEMA_PATH
from tests.simulator.test_sim_order_library import CASES, FILES, load

COMMERCE = "Adobe Commerce only (gift wrapping, store credit, gift cards, reward points, B2B)"
EMPTY = "the schema's extension interface has no field"
LEGACY = "a legacy column no 2.4 payment method writes (Authorize.net, eCheck, Switch/Solo cards)"


def excepted(names: str, reason: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), reason)


EXCEPTIONS: dict[str, dict[str, str]] = {
    "sales-data-order-item-interface": excepted(
        "gw_base_price gw_base_price_invoiced gw_base_price_refunded gw_base_tax_amount "
        "gw_base_tax_amount_invoiced gw_base_tax_amount_refunded gw_id gw_price gw_price_invoiced "
        "gw_price_refunded gw_tax_amount gw_tax_amount_invoiced gw_tax_amount_refunded",
        COMMERCE,
    ),
    "sales-data-order-address-interface": {"extension_attributes": EMPTY},
    "sales-data-order-payment-interface": {
        **excepted(
            "anet_trans_method cc_secure_verify cc_ss_issue cc_ss_start_month cc_ss_start_year "
            "echeck_account_name echeck_account_type echeck_bank_name echeck_routing_number "
            "echeck_type",
            LEGACY,
        ),
        **excepted(
            "cc_debug_request_body cc_debug_response_body cc_debug_response_serialized",
            "only written by legacy gateways with payment debugging on",
        ),
        "cc_number_enc": "2.x never stores a card number, encrypted or not",
    },
    "sales-data-order-status-history-interface": {"extension_attributes": EMPTY},
    "sales-data-shipping-assignment-interface": {"extension_attributes": EMPTY},
    "sales-data-shipping-interface": {"extension_attributes": EMPTY},
    "sales-data-total-interface": {"extension_attributes": EMPTY},
    "sales-data-order-extension-interface": {
        **excepted(
            "base_customer_balance_amount base_customer_balance_invoiced "
            "base_customer_balance_refunded base_customer_balance_total_refunded "
            "base_gift_cards_amount base_gift_cards_invoiced base_gift_cards_refunded "
            "base_reward_currency_amount company_order_attributes customer_balance_amount "
            "customer_balance_invoiced customer_balance_refunded customer_balance_total_refunded "
            "gift_cards gift_cards_amount gift_cards_invoiced gift_cards_refunded "
            "reward_currency_amount reward_points_balance coupon_codes coupon_discounts "
            "custom_fees",
            COMMERCE,
        ),
        **excepted(
            "gw_add_card gw_allow_gift_receipt gw_base_price gw_base_price_incl_tax "
            "gw_base_price_invoiced gw_base_price_refunded gw_base_tax_amount "
            "gw_base_tax_amount_invoiced gw_base_tax_amount_refunded gw_card_base_price "
            "gw_card_base_price_incl_tax gw_card_base_price_invoiced "
            "gw_card_base_price_refunded gw_card_base_tax_amount gw_card_base_tax_invoiced "
            "gw_card_base_tax_refunded gw_card_price gw_card_price_incl_tax "
            "gw_card_price_invoiced gw_card_price_refunded gw_card_tax_amount "
            "gw_card_tax_invoiced gw_card_tax_refunded gw_id gw_items_base_price "
            "gw_items_base_price_incl_tax gw_items_base_price_invoiced "
            "gw_items_base_price_refunded gw_items_base_tax_amount gw_items_base_tax_invoiced "
            "gw_items_base_tax_refunded gw_items_price gw_items_price_incl_tax "
            "gw_items_price_invoiced gw_items_price_refunded gw_items_tax_amount "
            "gw_items_tax_invoiced gw_items_tax_refunded gw_price gw_price_incl_tax "
            "gw_price_invoiced gw_price_refunded gw_tax_amount gw_tax_amount_invoiced "
            "gw_tax_amount_refunded",
            COMMERCE,
        ),
        **excepted(
            "pickup_location_code notification_sent send_notification",
            "in-store pickup orders only (Magento_InventoryInStorePickup)",
        ),
        **excepted(
            "taxes additional_itemized_taxes",
            "not among what the order repository fills for a refund (applied_taxes and "
            "item_applied_taxes are); an import that carries them keeps them",
        ),
    },
    "sales-data-invoice-interface": {"extension_attributes": COMMERCE},
    "sales-data-invoice-item-interface": {"extension_attributes": EMPTY},
    "sales-data-invoice-comment-interface": {"extension_attributes": EMPTY},
    "sales-data-creditmemo-interface": {
        "extension_attributes": COMMERCE,
        "creditmemo_status": "a legacy column no 2.4 code path writes",
    },
    "sales-data-creditmemo-item-interface": {"extension_attributes": EMPTY},
    "sales-data-creditmemo-comment-interface": {"extension_attributes": EMPTY},
}


@functools.cache
def definitions() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SCHEMA_PATH.open() as handle:
        document = yaml.load(handle, Loader=loader)
    return {"definitions": document["definitions"], "paths": document["paths"]}


def errors(body: Any, definition: str) -> list[str]:
    schema = {"$ref": f"#/definitions/{definition}", "definitions": definitions()["definitions"]}
    found = jsonschema.Draft4Validator(schema).iter_errors(body)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]


def response_errors(operation_id: str, body: Any) -> list[str]:
    for methods in definitions()["paths"].values():
        for operation in methods.values():
            if operation.get("operationId") == operation_id:
                schema = {**operation["responses"]["200"]["schema"], **definitions()}
                found = jsonschema.Draft4Validator(schema).iter_errors(body)
                return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]
    raise KeyError(operation_id)


# Magento sends null for these two payment getters, whose interface types them as strings.
NULLABLE = ("account_status: None is not of type 'string'", "cc_last4: None is not of type")


def real_errors(found: Iterable[str]) -> list[str]:
    return [error for error in found if not any(allowed in error for allowed in NULLABLE)]


@pytest.fixture
def loaded(state: SimulatorState, client: httpx.Client) -> SimulatorState:
    """Demo seed + the library, every library refund case run (failures are expected too)."""
    for name in FILES:
        state.add_order(load(name))
    for name in FILES:
        for _, path, body, _ in CASES[name]["calls"]:
            client.post(path, json=body)
    return state


def served(state: SimulatorState) -> dict[str, list[dict[str, Any]]]:
    """Everything the simulator serves, by schema definition."""
    orders = [state.order(order_id) for order_id in sorted(state._orders)]
    invoices = [state.invoice(invoice_id) for invoice_id in sorted(state._invoices)]
    memos = state.creditmemos()
    assignments = [a for o in orders for a in o["extension_attributes"]["shipping_assignments"]]
    return {
        "sales-data-order-interface": orders,
        "sales-data-order-item-interface": [i for o in orders for i in o["items"]],
        "sales-data-order-address-interface": [o["billing_address"] for o in orders]
        + [a["shipping"]["address"] for a in assignments if "address" in a["shipping"]],
        "sales-data-order-payment-interface": [o["payment"] for o in orders],
        "sales-data-order-status-history-interface": [
            h for o in orders for h in o["status_histories"]
        ],
        "sales-data-order-extension-interface": [o["extension_attributes"] for o in orders],
        "sales-data-shipping-assignment-interface": assignments,
        "sales-data-shipping-interface": [a["shipping"] for a in assignments],
        "sales-data-total-interface": [a["shipping"]["total"] for a in assignments],
        "sales-data-invoice-interface": invoices,
        "sales-data-invoice-item-interface": [i for v in invoices for i in v["items"]],
        "sales-data-invoice-comment-interface": [c for v in invoices for c in v["comments"]],
        "sales-data-creditmemo-interface": memos,
        "sales-data-creditmemo-item-interface": [i for m in memos for i in m["items"]],
        "sales-data-creditmemo-comment-interface": [c for m in memos for c in m["comments"]],
    }


def properties(definition: str) -> set[str]:
    return set(definitions()["definitions"][definition]["properties"])


@pytest.mark.parametrize("definition", sorted(EXCEPTIONS))
def test_every_schema_field_is_served(loaded: SimulatorState, definition: str) -> None:
    entities = served(loaded)[definition]
    present = set().union(*(set(entity) for entity in entities))
    excepted = set(EXCEPTIONS[definition])
    assert properties(definition) - present - excepted == set()
    assert present & excepted == set()  # an exception that appears is no exception
    assert present - properties(definition) == set()  # and nothing the schema does not know


def test_every_entity_validates(loaded: SimulatorState) -> None:
    failures = {}
    for definition, entities in served(loaded).items():
        for entity in entities:
            found = real_errors(errors(entity, definition))
            if found:
                failures.setdefault(definition, found)
    assert failures == {}


def test_responses_validate(loaded: SimulatorState, client: httpx.Client) -> None:
    everything = {"searchCriteria[pageSize]": "200"}
    checks = {
        "GetV1Orders": client.get("/V1/orders", params=everything),
        "GetV1OrdersId": client.get("/V1/orders/103"),
        "GetV1OrdersItems": client.get("/V1/orders/items", params=everything),
        "GetV1OrdersItemsId": client.get("/V1/orders/items/1005"),
        "GetV1InvoicesId": client.get("/V1/invoices/307"),
        "GetV1Invoices": client.get("/V1/invoices", params=everything),
        "GetV1Creditmemos": client.get("/V1/creditmemos", params=everything),
        "GetV1StoreWebsites": client.get("/V1/store/websites"),
        "GetV1StoreStoreGroups": client.get("/V1/store/storeGroups"),
        "GetV1StoreStoreViews": client.get("/V1/store/storeViews"),
        "GetV1StoreStoreConfigs": client.get("/V1/store/storeConfigs"),
    }
    failures = {
        operation: real_errors(response_errors(operation, response.json()))
        for operation, response in checks.items()
    }
    assert {operation: found for operation, found in failures.items() if found} == {}
    assert all(response.status_code == 200 for response in checks.values())


def test_compact_orders_carry_what_an_exported_order_carries(state: SimulatorState) -> None:
    # simple-checkmo is shaped like a 2.4 export of a plain invoiced order; demo order 2 is the
    # simulator's own compact order of the same kind.
    exported = load("simple-checkmo")
    built = state.order(2)
    assert set(exported["order"]) - set(built) == set()
    assert set(exported["order"]["items"][0]) - set(built["items"][0]) == set()
    assert set(exported["order"]["payment"]) - set(built["payment"]) == set()
    assert set(exported["order"]["billing_address"]) - set(built["billing_address"]) == set()
    ext, built_ext = exported["order"]["extension_attributes"], built["extension_attributes"]
    assert set(ext) - set(built_ext) == set()
    assert set(ext["shipping_assignments"][0]) - set(built_ext["shipping_assignments"][0]) == set()
    invoice = state.invoice(2)
    # The demo's invoice e-mail was never sent, so its email_sent is null (left out).
    assert set(exported["invoices"][0]) - set(invoice) == {"email_sent"}
    assert set(exported["invoices"][0]["items"][0]) - set(invoice["items"][0]) == set()


def test_credit_memos_the_simulator_builds_carry_every_field(loaded: SimulatorState) -> None:
    imported = {m["entity_id"] for name in FILES for m in load(name).get("creditmemos", [])}
    built = [m for m in loaded.creditmemos() if m["entity_id"] not in imported]
    present = set().union(*(set(m) for m in built))
    excepted = set(EXCEPTIONS["sales-data-creditmemo-interface"])
    assert properties("sales-data-creditmemo-interface") - present - excepted == set()
    lines = set().union(*(set(i) for m in built for i in m["items"]))
    excepted = set(EXCEPTIONS["sales-data-creditmemo-item-interface"])
    assert properties("sales-data-creditmemo-item-interface") - lines - excepted == set()
    # Types: a number stays a number through the collectors (no string amounts, no NaN).
    assert json.loads(json.dumps(built, allow_nan=False)) == built
