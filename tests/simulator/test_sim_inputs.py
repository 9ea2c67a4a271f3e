"""Request parsing as Magento's REST layer does it; routing; the order of checks."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from refund_worker.simulator.inputs import (
    BOOL,
    FLOAT,
    INT,
    STRING,
    convert_scalar,
    snake,
    upper_camel,
)
from tests.simulator.sim_support import order

NOT_SUPPORTED = '"%fieldName" is not supported. Correct the field name and try again.'
ROUTE_404 = {"message": "Request does not match any route."}


def type_error(field: str, value: str, type_: str) -> dict[str, str]:
    return {
        "message": f'Error occurred during "{field}" processing. The "{value}" value\'s type is '
        f'invalid. The "{type_}" type was expected. Verify and try again.'
    }


@pytest.mark.parametrize(
    "path",
    [
        "/V1/order/2/refund",
        "/V1/invoice/1/refund",
        "/V1/creditmemo/refund",
        "/V1/creditmemo",
        "/V1/creditmemo/1/comments",
        "/V1/creditmemo/1/emails",
        "/V1/integration/admin/token",
    ],
)
def test_undecodable_body(client: httpx.Client, path: str) -> None:
    response = client.post(
        path, content=b'{"items": [', headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, response.json()) == (400, {"message": "Decoding error."})


def test_empty_body_is_no_parameters(client: httpx.Client) -> None:
    response = client.post("/V1/order/2/refund", content=b"")
    assert response.status_code == 200
    assert order(client, 2)["state"] == "closed"


def test_a_body_that_is_not_an_object_has_no_named_parameters(client: httpx.Client) -> None:
    # PHP casts a JSON list to an array with numeric keys: nothing named, a full refund.
    assert client.post("/V1/order/2/refund", json=[{"items": []}]).status_code == 200
    assert order(client, 2)["total_refunded"] == 60.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"items": [{"order_item_id": 3, "qty": "abc"}]}, type_error("qty", "abc", "float")),
        ({"items": [{"order_item_id": "x", "qty": 1}]}, type_error("order_item_id", "x", "int")),
        ({"items": [{"order_item_id": 3, "qty": [1]}]}, type_error("qty", "array", "float")),
        (
            {"comment": {"comment": "x", "is_visible_on_front": "yes"}},
            type_error("is_visible_on_front", "yes", "int"),
        ),
        (
            {"arguments": {"shipping_amount": "free"}},
            type_error("shipping_amount", "free", "float"),
        ),
    ],
)
def test_wrong_scalar_types(client: httpx.Client, body: dict[str, Any], expected: Any) -> None:
    response = client.post("/V1/order/2/refund", json=body)
    assert (response.status_code, response.json()) == (400, expected)


def test_wrong_top_level_type(client: httpx.Client) -> None:
    response = client.post("/V1/order/2/refund", json={"items": "all"})
    assert response.status_code == 400
    assert response.json()["message"].startswith('The "string" value\'s type is invalid.')


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [{"order_item_id": 3, "qty": 1, "sku": "BAG-01"}]}, "Sku"),
        ({"comment": {"comment": "x", "is_visible": 1}}, "IsVisible"),
        ({"arguments": {"shipping": 1}}, "Shipping"),
        ({"arguments": {"extension_attributes": {"foo_bar": 1}}}, "FooBar"),
        ({"items": [{"order_item_id": 3, "qty": 1, "extension_attributes": {"x": 1}}]}, "X"),
    ],
)
def test_unknown_nested_fields(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    response = client.post("/V1/order/2/refund", json=body)
    assert (response.status_code, response.json()) == (
        400,
        {"message": NOT_SUPPORTED, "parameters": {"fieldName": field}},
    )


def test_unknown_nested_field_in_a_creditmemo_document(client: httpx.Client) -> None:
    response = client.post(
        "/V1/creditmemo/refund", json={"creditmemo": {"order_id": 2, "marker": "x"}}
    )
    assert response.json() == {"message": NOT_SUPPORTED, "parameters": {"fieldName": "Marker"}}


def test_unknown_top_level_keys_are_ignored(client: httpx.Client) -> None:
    body = {"idempotency_key": "abc", "items": [{"order_item_id": 3, "qty": 1}]}
    assert client.post("/V1/order/2/refund", json=body).status_code == 200


def test_snake_case_top_level_and_camel_case_nested_keys(client: httpx.Client) -> None:
    body = {
        "items": [{"orderItemId": 3, "qty": "1"}],
        "append_comment": True,
        "notify": "true",
        "comment": {"comment": "hello", "isVisibleOnFront": 1},
        "arguments": {"shippingAmount": 0},
    }
    memo_id = client.post("/V1/order/2/refund", json=body).json()
    memo = client.get(f"/V1/creditmemo/{memo_id}").json()
    assert memo["grand_total"] == 34.0
    assert memo["comments"][0]["is_customer_notified"] == 1
    assert memo["comments"][0]["is_visible_on_front"] == 1


def test_path_parameter_type(client: httpx.Client) -> None:
    response = client.post("/V1/order/abc/refund", json={})
    assert (response.status_code, response.json()) == (
        400,
        {
            "message": 'The "abc" value\'s type is invalid. The "int" type was expected. '
            "Verify and try again."
        },
    )


def test_order_of_checks(client: httpx.Client, anon: httpx.Client) -> None:
    bad_json = {"content": b"{", "headers": {"Content-Type": "application/json"}}
    # Route first: an unknown route is a 404 even without credentials.
    assert anon.post("/V1/order/2/refunds", **bad_json).json() == ROUTE_404  # type: ignore[arg-type]
    # Then auth: no credentials beats a broken body.
    assert anon.post("/V1/order/2/refund", **bad_json).status_code == 401  # type: ignore[arg-type]
    # Then the body: decoding beats the path parameter type.
    assert client.post("/V1/order/abc/refund", **bad_json).json() == {  # type: ignore[arg-type]
        "message": "Decoding error."
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/V1/order/2/refund"),
        ("DELETE", "/V1/creditmemo/1"),
        ("GET", "/V1/orders//1"),  # an empty segment (trailing slashes are trimmed)
        ("POST", "/V1/orders/items"),
        ("POST", "/V2/order/2/refund"),
        ("GET", "/V1/unknown"),
        ("GET", "/xx/V1/orders/1"),
    ],
)
def test_unknown_routes(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path)
    assert (response.status_code, response.json()) == (404, ROUTE_404)


def test_outside_rest(sim: Any) -> None:
    response = httpx.get(f"{sim.url}/V1/orders/1")
    assert (response.status_code, response.json()) == (404, ROUTE_404)


@pytest.mark.parametrize("store", ["default", "all", "us"])
def test_store_codes(client: httpx.Client, store: str) -> None:
    assert client.get(f"/{store}/V1/orders/1").status_code == 200
    assert client.post(f"/{store}/V1/order/2/refund", json={}).status_code == 200


def test_several_missing_required_fields(anon: httpx.Client) -> None:
    response = anon.post("/V1/integration/admin/token", json={})
    assert response.status_code == 400
    assert response.json() == {
        "message": "One or more input exceptions have occurred.",
        "errors": [
            {
                "message": '"%fieldName" is required. Enter and try again.',
                "parameters": {"fieldName": "username"},
            },
            {
                "message": '"%fieldName" is required. Enter and try again.',
                "parameters": {"fieldName": "password"},
            },
        ],
    }


@pytest.mark.parametrize(
    ("value", "type_", "expected"),
    [
        ("12", INT, 12),
        (12.0, INT, 12),
        (" 7 ", INT, 7),
        ("1e2", FLOAT, 100.0),
        (".5", FLOAT, 0.5),
        ("true", BOOL, True),
        ("FALSE", BOOL, False),
        ("0", BOOL, False),
        ("yes", BOOL, True),
        (0, BOOL, False),
        (5, STRING, "5"),
        (2.5, STRING, "2.5"),
        (True, STRING, "1"),
    ],
)
def test_php_scalar_conversion(value: Any, type_: str, expected: Any) -> None:
    assert convert_scalar(value, type_) == expected


@pytest.mark.parametrize(
    ("value", "type_"),
    [("abc", INT), ("", FLOAT), (True, INT), ("inf", FLOAT), ("0x1A", INT), ([1], STRING)],
)
def test_php_scalar_conversion_errors(value: Any, type_: str) -> None:
    with pytest.raises(ValueError, match="value's type is invalid"):
        convert_scalar(value, type_)


def test_name_mapping() -> None:
    assert upper_camel("order_item_id") == "OrderItemId"
    assert upper_camel("orderItemId") == "OrderItemId"
    assert upper_camel("foo") == "Foo"
    assert snake("appendComment") == "append_comment"
    assert snake("isOnline") == "is_online"
