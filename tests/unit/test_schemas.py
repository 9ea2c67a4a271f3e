"""The refund request: every rejection names its field; amounts are Decimal, bounded, exact."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from refund_worker.errors import InvalidRefund
from refund_worker.intake import validate_request
from refund_worker.schemas import RefundRequest

BASE = {"idempotency_key": "rma-1", "order_id": 42}


def rejected_fields(payload: object) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        RefundRequest.model_validate(payload)
    return {".".join(str(p) for p in error["loc"]) for error in caught.value.errors()}


def test_minimal_request_refunds_everything() -> None:
    request = RefundRequest.model_validate(BASE)
    assert request.items is None
    assert request.service == "auto"
    assert not request.is_partial


def test_amounts_are_decimal_and_quantized_once() -> None:
    request = RefundRequest.model_validate({**BASE, "shipping_amount": 0.1,
                                            "adjustment_positive": "2.5"})
    assert request.shipping_amount == Decimal("0.1")
    assert isinstance(request.shipping_amount, Decimal)
    assert request.adjustment_positive == Decimal("2.5000")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**BASE, "order_id": "42"}, "order_id"),
        ({**BASE, "order_id": 0}, "order_id"),
        ({**BASE, "order_id": True}, "order_id"),
        ({"order_id": 42}, "idempotency_key"),
        ({**BASE, "idempotency_key": ""}, "idempotency_key"),
        ({**BASE, "idempotency_key": "x" * 256}, "idempotency_key"),
        ({**BASE, "idempotency_key": "has space"}, "idempotency_key"),
        ({**BASE, "idempotency_key": "bell\x07"}, "idempotency_key"),
        ({**BASE, "shipping_amount": -1}, "shipping_amount"),
        ({**BASE, "shipping_amount": "NaN"}, "shipping_amount"),
        ({**BASE, "shipping_amount": "Infinity"}, "shipping_amount"),
        ({**BASE, "adjustment_negative": "1.23456"}, "adjustment_negative"),
        ({**BASE, "adjustment_positive": "1e12"}, "adjustment_positive"),
        ({**BASE, "items": []}, "items"),
        ({**BASE, "items": [{"order_item_id": 1, "qty": 0}]}, "items.0.qty"),
        ({**BASE, "items": [{"order_item_id": 1, "qty": -2}]}, "items.0.qty"),
        ({**BASE, "items": [{"order_item_id": 1, "qty": 1, "sku": "x"}]}, "items.0.sku"),
        ({**BASE, "unknown_field": 1}, "unknown_field"),
        ({**BASE, "service": "paypal"}, "service"),
        ({**BASE, "notify_customer": "yes"}, "notify_customer"),
        ({**BASE, "store_code": "Default Store"}, "store_code"),
        ({**BASE, "comment": "nul\x00byte"}, "comment"),
        ({**BASE, "comment": "c" * 2001}, "comment"),
    ],
)
def test_bad_fields_are_named(payload: dict[str, object], field: str) -> None:
    assert field in rejected_fields(payload)


def test_cross_field_rules_name_their_field() -> None:
    cases = [
        ({**BASE, "items": [{"order_item_id": 1, "qty": 1}, {"order_item_id": 1, "qty": 2}]},
         "items"),
        ({**BASE, "service": "creditmemo"}, "creditmemo"),
        ({**BASE, "offline_requested": True}, "offline_requested"),
        ({**BASE, "items": [{"order_item_id": 1, "qty": 1}], "return_to_stock": [2]},
         "return_to_stock"),
    ]
    for payload, field in cases:
        with pytest.raises(InvalidRefund, match=field):
            validate_request(payload)


def test_malformed_json_is_named() -> None:
    with pytest.raises(InvalidRefund, match="malformed JSON"):
        validate_request('{"idempotency_key": "k", "order_id": ')


def test_payload_hash_ignores_formatting_but_not_content() -> None:
    one = validate_request({**BASE, "shipping_amount": "5"})
    same = validate_request(json.dumps({"order_id": 42, "shipping_amount": 5.0,
                                        "idempotency_key": "rma-1"}))
    other = validate_request({**BASE, "shipping_amount": "6"})
    assert one.payload_hash() == same.payload_hash()
    assert one.payload_hash() != other.payload_hash()


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.decimals(allow_nan=True),
                 st.integers(), st.text(max_size=20), st.none(), st.booleans()))
def test_any_amount_is_accepted_only_when_valid(value: object) -> None:
    try:
        request = RefundRequest.model_validate({**BASE, "shipping_amount": value})
    except ValidationError as exc:
        assert all(error["loc"][0] == "shipping_amount" for error in exc.errors())
        return
    amount = request.shipping_amount
    if amount is not None:
        assert amount.is_finite()
        assert Decimal(0) <= amount <= Decimal("1000000000")
        assert amount == amount.quantize(Decimal("0.0001"))


@given(st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=5), max_size=5))
def test_arbitrary_objects_never_crash_validation(extra: dict[str, object]) -> None:
    payload = {**BASE, **extra}
    try:
        validate_request(payload)
    except InvalidRefund as exc:
        assert str(exc)


def test_the_requested_services_are_auto_and_the_magento_services() -> None:
    from typing import get_args

    from refund_worker.schemas import AUTO, RefundRequest, Service

    allowed = set(get_args(RefundRequest.model_fields["service"].annotation))
    assert allowed == {AUTO, *(service.value for service in Service)}
