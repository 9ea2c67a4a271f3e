"""Requests we send and responses the simulator gives, against Adobe's official admin schema.

The schema (Swagger 2.0, 1.1 MB) is loaded once per session. Request bodies are checked twice:
as published, and "strict" (no unknown keys in nested objects, which Magento rejects).
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from tests.magento_schema import SCHEMA_PATH


class Schema:
    def __init__(self, document: dict[str, Any]) -> None:
        self.definitions: dict[str, Any] = document["definitions"]
        self.strict_definitions = copy.deepcopy(self.definitions)
        for definition in self.strict_definitions.values():
            if definition.get("type") == "object":
                definition["additionalProperties"] = False
        self.operations = {
            operation["operationId"]: operation
            for methods in document["paths"].values()
            for operation in methods.values()
        }

    def request_errors(self, operation_id: str, body: Any, *, strict: bool = False) -> list[str]:
        parameters = self.operations[operation_id]["parameters"]
        [schema] = [p["schema"] for p in parameters if p.get("in") == "body"]
        definitions = self.strict_definitions if strict else self.definitions
        return self._errors({**schema, "definitions": definitions}, body)

    def response_errors(self, operation_id: str, body: Any, status: str = "200") -> list[str]:
        responses = self.operations[operation_id]["responses"]
        schema = responses.get(status, responses["default"])["schema"]
        return self._errors({**schema, "definitions": self.definitions}, body)

    @staticmethod
    def _errors(schema: dict[str, Any], body: Any) -> list[str]:
        validator = jsonschema.Draft4Validator(schema)
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(body)
        ]


@pytest.fixture(scope="session")
def schema() -> Schema:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SCHEMA_PATH.open() as handle:
        return Schema(yaml.load(handle, Loader=loader))


def send(
    schema: Schema, client: httpx.Client, operation_id: str, path: str, body: Any
) -> httpx.Response:
    """Validate the body (published and strict), send it, validate a 200 response."""
    assert schema.request_errors(operation_id, body) == []
    assert schema.request_errors(operation_id, body, strict=True) == []
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert schema.response_errors(operation_id, response.json()) == []
    return response


REFUND_BODY = {
    "items": [{"order_item_id": 3, "qty": 1, "extension_attributes": {}}],
    "notify": True,
    "appendComment": True,
    "comment": {"comment": "refund-worker:r1", "is_visible_on_front": 0},
    "arguments": {
        "shipping_amount": 5,
        "adjustment_positive": 1,
        "adjustment_negative": 0.5,
        "extension_attributes": {"return_to_stock_items": [3]},
    },
}


def test_refund_order(schema: Schema, client: httpx.Client) -> None:
    response = send(schema, client, "PostV1OrderOrderIdRefund", "/V1/order/2/refund", REFUND_BODY)
    assert isinstance(response.json(), int)
    memo = client.get(f"/V1/creditmemo/{response.json()}").json()
    assert schema.response_errors("GetV1CreditmemoId", memo) == []


def test_refund_invoice(schema: Schema, client: httpx.Client) -> None:
    body = {**REFUND_BODY, "isOnline": True, "items": [{"order_item_id": 1, "qty": 1}]}
    body["arguments"] = {"shipping_amount": 0}
    response = send(schema, client, "PostV1InvoiceInvoiceIdRefund", "/V1/invoice/1/refund", body)
    assert isinstance(response.json(), int)


CREDITMEMO = {
    "order_id": 7,
    "items": [
        {
            "order_item_id": 10,
            "qty": 1,
            "price": 18,
            "base_price": 18,
            "row_total": 18,
            "base_row_total": 18,
            "base_cost": 0,
            "entity_id": 0,
        },
    ],
    "subtotal": 18,
    "base_subtotal": 18,
    "grand_total": 18,
    "base_grand_total": 18,
    "comments": [
        {
            "comment": "refund-worker:r2",
            "is_customer_notified": 0,
            "is_visible_on_front": 0,
            "parent_id": 0,
        },
    ],
}


def test_low_level_refund(schema: Schema, client: httpx.Client) -> None:
    body = {"creditmemo": CREDITMEMO, "offlineRequested": True}
    memo = send(schema, client, "PostV1CreditmemoRefund", "/V1/creditmemo/refund", body).json()
    assert memo["comments"][0]["parent_id"] == memo["entity_id"]


def test_repository_save(schema: Schema, client: httpx.Client) -> None:
    send(schema, client, "PostV1Creditmemo", "/V1/creditmemo", {"entity": CREDITMEMO})


def test_reads_and_side_routes(schema: Schema, client: httpx.Client, anon: httpx.Client) -> None:
    client.post("/V1/order/2/refund", json=REFUND_BODY)
    assert schema.response_errors("GetV1CreditmemoId", client.get("/V1/creditmemo/1").json()) == []
    found = client.get("/V1/creditmemos", params={"searchCriteria[pageSize]": "10"}).json()
    assert found["total_count"] == 3
    assert schema.response_errors("GetV1Creditmemos", found) == []
    comments = client.get("/V1/creditmemo/1/comments").json()
    assert schema.response_errors("GetV1CreditmemoIdComments", comments) == []
    emails = client.post("/V1/creditmemo/1/emails").json()
    assert schema.response_errors("PostV1CreditmemoIdEmails", emails) == []
    comment = {
        "entity": {
            "parent_id": 1,
            "comment": "note",
            "is_customer_notified": 0,
            "is_visible_on_front": 0,
        }
    }
    send(schema, client, "PostV1CreditmemoIdComments", "/V1/creditmemo/1/comments", comment)
    invoice = client.get("/V1/invoices/1").json()
    assert schema.response_errors("GetV1InvoicesId", invoice) == []
    invoices = client.get("/V1/invoices", params={"searchCriteria": ""}).json()
    assert schema.response_errors("GetV1Invoices", invoices) == []
    credentials = {"username": "admin", "password": "admin123"}
    send(schema, anon, "PostV1IntegrationAdminToken", "/V1/integration/admin/token", credentials)


def test_orders(schema: Schema, client: httpx.Client) -> None:
    data = client.get("/V1/orders/1").json()
    # Magento sends null for these two payment fields; the schema types them as strings.
    nullable = {
        "payment/account_status: None is not of type 'string'",
        "payment/cc_last4: None is not of type 'string'",
    }
    assert set(schema.response_errors("GetV1OrdersId", data)) <= nullable


def test_error_bodies(schema: Schema, client: httpx.Client) -> None:
    rejected = client.post("/V1/order/5/refund", json={})
    assert schema.response_errors("PostV1OrderOrderIdRefund", rejected.json(), "default") == []
    over = client.post(
        "/V1/creditmemo/refund", json={"creditmemo": {**CREDITMEMO, "base_grand_total": 999}}
    )
    assert over.json()["parameters"] == ["$67.00"]
    # The published error-response types parameters as objects; Magento sends a list of
    # strings for positional placeholders (docs/magento.md §9.2). That is the only difference.
    assert schema.response_errors("PostV1CreditmemoRefund", over.json(), "default") == [
        "parameters/0: '$67.00' is not of type 'object'"
    ]


def test_strict_schema_and_simulator_agree_on_unknown_nested_keys(
    schema: Schema, client: httpx.Client
) -> None:
    body = {"items": [{"order_item_id": 3, "qty": 1, "sku": "BAG-01"}]}
    assert schema.request_errors("PostV1OrderOrderIdRefund", body) == []
    assert schema.request_errors("PostV1OrderOrderIdRefund", body, strict=True) != []
    assert client.post("/V1/order/2/refund", json=body).status_code == 400
