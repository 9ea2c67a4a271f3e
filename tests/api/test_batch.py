"""POST /v1/refunds:batch: one result per element, in order, through one intake call."""

from __future__ import annotations

from typing import Any

import pytest

from refund_worker import intake
from tests.api.support import Api, refund


def test_mixed_batch_answers_each_element_in_order(api: Api) -> None:
    existing = api.producer.post("/v1/refunds", json=refund("old", order_id=1)).json()
    batch: list[Any] = [
        refund("new-1"),
        refund("old", order_id=1),  # duplicate
        refund("old", order_id=2),  # conflict
        {"order_id": "x"},  # invalid
        "not an object",
        refund("new-2", items=[{"order_item_id": 3, "qty": 2}]),
        refund("new-1"),  # the same key again inside the batch: duplicate
    ]

    response = api.producer.post("/v1/refunds:batch", json=batch)

    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    assert [result["index"] for result in results] == list(range(len(batch)))
    assert [result["result"] for result in results] == [
        "accepted", "duplicate", "conflict", "invalid", "invalid", "accepted", "duplicate",
    ]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 2, 3)
    assert results[1]["receipt"]["refund_id"] == existing["refund_id"]
    assert results[6]["receipt"]["refund_id"] == results[0]["receipt"]["refund_id"]
    assert results[2]["errors"][0]["field"] == "idempotency_key"
    assert {error["field"] for error in results[3]["errors"]} == {"idempotency_key", "order_id"}
    assert results[4]["errors"][0]["field"] is None
    assert api.stored() == 3
    assert sorted(api.publisher.refunds) == sorted(
        [existing["refund_id"], results[0]["receipt"]["refund_id"],
         results[5]["receipt"]["refund_id"]]
    )
    assert api.row("new-2").created_by == "erp"


def test_a_batch_is_one_intake_call(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = intake.enqueue_refunds

    def counting(requests: Any, **kwargs: Any) -> Any:
        requests = list(requests)
        calls.append(len(requests))
        return original(requests, **kwargs)

    monkeypatch.setattr(intake, "enqueue_refunds", counting)
    response = api.producer.post(
        "/v1/refunds:batch", json=[refund(f"many-{n}", order_id=n + 1) for n in range(1000)]
    )

    assert response.status_code == 200
    assert response.json()["accepted"] == 1000
    assert calls == [1000]
    assert api.stored() == 1000


@pytest.mark.parametrize(
    ("body", "message"),
    [([], "1 to 1000"), ({"idempotency_key": "k", "order_id": 1}, "JSON array")],
)
def test_empty_or_not_an_array_is_422(api: Api, body: Any, message: str) -> None:
    response = api.producer.post("/v1/refunds:batch", json=body)

    assert response.status_code == 422
    assert message in response.json()["detail"][0]["message"]
    assert api.stored() == 0


def test_more_than_1000_is_422_and_stores_nothing(api: Api) -> None:
    response = api.producer.post(
        "/v1/refunds:batch", json=[refund(f"k{n}") for n in range(1001)]
    )

    assert response.status_code == 422
    assert api.stored() == 0
    assert api.publisher.refunds == []


def test_malformed_batch_is_400(api: Api) -> None:
    response = api.producer.post("/v1/refunds:batch", content=b"[{]")

    assert response.status_code == 400


def test_batch_needs_a_key(api: Api) -> None:
    response = api.anonymous.post("/v1/refunds:batch", json=[refund("k")])

    assert response.status_code == 401
    assert api.stored() == 0
