"""POST /v1/refunds: every status code, and nothing stored or published for a rejected request."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from refund_worker.schemas import RefundRequest
from tests.api.support import Api, refund

MIB = 1024 * 1024


def test_new_refund_is_accepted_with_202_and_published(api: Api) -> None:
    response = api.producer.post("/v1/refunds", json=refund("rma-1", items=[
        {"order_item_id": 7, "qty": "1.5"}
    ]))

    assert response.status_code == 202
    receipt = response.json()
    assert receipt["idempotency_key"] == "rma-1"
    assert receipt["status"] == "queued"
    assert receipt["duplicate"] is False
    assert response.headers["location"] == f"/v1/refunds/{receipt['refund_id']}"
    assert api.publisher.refunds == [receipt["refund_id"]]
    assert api.row("rma-1").request_json == RefundRequest.model_validate(
        refund("rma-1", items=[{"order_item_id": 7, "qty": "1.5"}])
    ).canonical_json()


def test_same_key_and_payload_again_is_200_with_the_existing_refund(api: Api) -> None:
    first = api.producer.post("/v1/refunds", json=refund("rma-2"))
    again = api.producer.post("/v1/refunds", json=refund("rma-2"))

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["refund_id"] == first.json()["refund_id"]
    assert again.json()["duplicate"] is True
    assert api.stored() == 1
    assert len(api.publisher.refunds) == 1


def test_same_key_with_another_payload_is_409_and_changes_nothing(api: Api) -> None:
    first = api.producer.post("/v1/refunds", json=refund("rma-3", order_id=1))
    response = api.producer.post("/v1/refunds", json=refund("rma-3", order_id=2))

    assert response.status_code == 409
    body = response.json()
    assert body["refund_id"] == first.json()["refund_id"]
    assert [error["field"] for error in body["detail"]] == ["idempotency_key"]
    assert api.stored() == 1
    assert api.row("rma-3").order_id == 1
    assert len(api.publisher.refunds) == 1


def test_money_keeps_every_digit_of_a_json_number(api: Api) -> None:
    response = api.producer.post(
        "/v1/refunds",
        content=b'{"idempotency_key": "rma-4", "order_id": 1, "shipping_amount": 12345678.1234}',
    )

    assert response.status_code == 202
    assert json.loads(api.row("rma-4").request_json)["shipping_amount"] == "12345678.1234"


def test_422_lists_every_field_error_and_stores_nothing(api: Api) -> None:
    response = api.producer.post("/v1/refunds", json={
        "idempotency_key": "has space",
        "order_id": "42",
        "items": [{"order_item_id": 1, "qty": 0}, {"order_item_id": -3, "qty": "1.00001"}],
        "shipping_amount": -1,
        "notify_customer": "yes",
        "surprise": True,
    })

    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["detail"]}
    assert fields == {
        "idempotency_key",
        "order_id",
        "items.0.qty",
        "items.1.order_item_id",
        "items.1.qty",
        "shipping_amount",
        "notify_customer",
        "surprise",
    }
    assert all(error["message"] for error in response.json()["detail"])
    assert api.stored() == 0
    assert api.publisher.refunds == []


def test_an_unknown_field_is_named_but_not_echoed_whole(api: Api) -> None:
    response = api.producer.post("/v1/refunds", json=refund("long", **{"x" * 5000: 1}))

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"field": "x" * 64 + "...", "message": "Extra inputs are not permitted"}
    ]


def test_a_rule_across_fields_names_its_field(api: Api) -> None:
    response = api.producer.post("/v1/refunds", json=refund(
        "rma-5", items=[{"order_item_id": 1, "qty": 1}, {"order_item_id": 1, "qty": 2}]
    ))

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"field": "items", "message": "each order_item_id may appear only once"}
    ]


@pytest.mark.parametrize("body", [b"[]", b'"a string"', b"7", b"null"])
def test_a_body_that_is_not_an_object_is_422(api: Api, body: bytes) -> None:
    response = api.producer.post("/v1/refunds", content=body)

    assert response.status_code == 422
    assert api.stored() == 0


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b'{"idempotency_key": "k", "order_id": 1,}', b'{"order_id": NaN}', b"\xff\xfe{",
     b"[" * 100_000],
)
def test_malformed_json_is_400(api: Api, content: bytes) -> None:
    response = api.producer.post(
        "/v1/refunds", content=content, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["detail"][0]["message"].startswith("malformed JSON")
    assert api.stored() == 0


def test_key_from_the_idempotency_key_header(api: Api) -> None:
    response = api.producer.post(
        "/v1/refunds", json={"order_id": 9}, headers={"Idempotency-Key": "hdr-1"}
    )

    assert response.status_code == 202
    assert response.json()["idempotency_key"] == "hdr-1"
    again = api.producer.post(
        "/v1/refunds", json={"order_id": 9, "idempotency_key": "hdr-1"},
        headers={"Idempotency-Key": "hdr-1"},
    )
    assert again.status_code == 200


def test_header_and_body_keys_that_differ_are_422_with_the_other_errors(api: Api) -> None:
    response = api.producer.post(
        "/v1/refunds", json={"idempotency_key": "body-key", "order_id": 0},
        headers={"Idempotency-Key": "header-key"},
    )

    assert response.status_code == 422
    fields = [error["field"] for error in response.json()["detail"]]
    assert fields == ["idempotency_key", "order_id"]
    assert api.stored() == 0


def test_no_key_anywhere_is_422_naming_idempotency_key(api: Api) -> None:
    response = api.producer.post("/v1/refunds", json={"order_id": 9})

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["detail"]] == ["idempotency_key"]


def test_body_over_the_limit_by_content_length_is_413(api: Api) -> None:
    padding = "x" * MIB
    response = api.producer.post("/v1/refunds", json=refund("big-1", comment=padding))

    assert response.status_code == 413
    assert api.stored() == 0


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"idempotency_key": "big-2", "order_id": 1, "comment": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


def test_chunked_body_over_the_limit_is_413_while_reading(api: Api) -> None:
    response = api.producer.post(
        "/v1/refunds", content=_chunks(MIB + 1), headers={"Content-Type": "application/json"}
    )

    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert api.stored() == 0


def test_413_comes_before_the_whole_body_is_sent(api: Api) -> None:
    """A chunked upload that never ends is answered once the limit is passed."""
    parts = urlsplit(api.url)
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/refunds HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + api.keys.producer.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 65536
        for _ in range(17):  # 1.06 MiB, then stop sending without the final chunk
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert api.stored() == 0


def test_a_small_chunked_body_is_accepted(api: Api) -> None:
    body = json.dumps(refund("chunked-ok")).encode()

    def pieces() -> Iterator[bytes]:
        yield body[:10]
        yield body[10:]

    response = api.producer.post(
        "/v1/refunds", content=pieces(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 202


def test_the_limit_is_the_setting(start_api: object) -> None:
    api = start_api(api_max_body_bytes=100)  # type: ignore[operator]
    ok = api.producer.post("/v1/refunds", json=refund("small"))
    too_big = api.producer.post("/v1/refunds", json=refund("small-2", comment="y" * 100))

    assert (ok.status_code, too_big.status_code) == (202, 413)


def test_created_by_is_the_key_name(api: Api) -> None:
    api.producer.post("/v1/refunds", json=refund("by-erp"))
    api.operator.post("/v1/refunds", json=refund("by-alice"))

    assert api.row("by-erp").created_by == "erp"
    assert api.row("by-alice").created_by == "alice"


def test_broker_down_is_503_and_the_refund_waits_for_the_sweeper(api: Api) -> None:
    api.publisher.failing = True
    response = api.producer.post("/v1/refunds", json=refund("stranded"))

    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "hunter2" not in response.text
    assert api.row("stranded").status == "received"  # the sweeper publishes it

    api.publisher.failing = False
    again = api.producer.post("/v1/refunds", json=refund("stranded"))
    assert again.status_code == 200
    assert again.json()["status"] == "received"


@pytest.mark.parametrize(
    "content",
    [
        b'{"idempotency_key": "dup-1", "order_id": 999, "order_id": 1}',
        b'{"idempotency_key": "dup-2", "order_id": 1, '
        b'"items": [{"order_item_id": 1, "qty": 1, "qty": 5}]}',
    ],
)
def test_a_key_given_twice_is_malformed_not_last_wins(api: Api, content: bytes) -> None:
    response = api.producer.post(
        "/v1/refunds", content=content, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    message = response.json()["detail"][0]["message"]
    assert message.startswith("malformed JSON")
    assert "appears more than once" in message
    assert api.stored() == 0


def test_negative_zero_is_stored_as_zero(api: Api) -> None:
    response = api.producer.post(
        "/v1/refunds",
        content=b'{"idempotency_key": "z-1", "order_id": 1, "shipping_amount": -0.0}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 202
    assert '"shipping_amount":"0.0000"' in api.row("z-1").request_json


def test_an_order_named_by_its_increment_id(api: Api) -> None:
    body = {"idempotency_key": "rma-inc", "order_increment_id": "000000123"}
    response = api.producer.post("/v1/refunds", json=body)

    assert response.status_code == 202
    refund_id = response.json()["refund_id"]
    row = api.row("rma-inc")
    assert (row.order_id, row.order_increment_id) == (None, "000000123")  # resolved by the worker
    shown = api.producer.get(f"/v1/refunds/{refund_id}").json()
    assert (shown["order_id"], shown["order_increment_id"]) == (None, "000000123")
    listed = api.producer.get("/v1/refunds", params={"order_increment_id": "000000123"}).json()
    assert [r["id"] for r in listed["refunds"]] == [refund_id]
    assert api.producer.get("/v1/refunds", params={"order_increment_id": "000000124"}).json()[
        "refunds"] == []
    assert api.producer.post("/v1/refunds", json=body).status_code == 200  # the same: duplicate


@pytest.mark.parametrize("value", ["", "1" * 51, "000 123", "-000123", "000123-", "12/3",
                                   "\uff10\uff10\uff11", "000\n123", 123, None])
def test_a_bad_increment_id_is_422_naming_it(api: Api, value: object) -> None:
    response = api.producer.post("/v1/refunds", json={"idempotency_key": "rma-bad",
                                                      "order_increment_id": value})

    assert response.status_code == 422
    assert {error["field"] for error in response.json()["detail"]} <= {
        "order_increment_id", "order_id"}
    assert response.json()["detail"][0]["field"] == (
        "order_id" if value is None else "order_increment_id")
    assert api.stored() == 0


def test_exactly_one_of_order_id_and_increment_id(api: Api) -> None:
    neither = api.producer.post("/v1/refunds", json={"idempotency_key": "rma-0"})
    both = api.producer.post("/v1/refunds", json={"idempotency_key": "rma-2",
                                                  "order_id": 5, "order_increment_id": "5"})

    assert neither.status_code == both.status_code == 422
    assert neither.json()["detail"] == [{"field": "order_id", "message": (
        "required: the order's entity id, or its order number as order_increment_id "
        "(e.g. '000000123')")}]
    assert both.json()["detail"] == [{"field": "order_increment_id",
                                      "message": "give order_id or order_increment_id, not both"}]


def test_a_credit_memo_of_another_order_is_422_by_its_path(api: Api) -> None:
    response = api.producer.post("/v1/refunds", json=refund(
        "rma-cm", order_id=42, service="creditmemo",
        creditmemo={"order_id": 43, "entity_id": 9, "increment_id": "000000009", "state": 2,
                    "items": [{"order_item_id": 1, "qty": 1, "entity_id": 3, "parent_id": 9}],
                    "grand_total": 5, "base_grand_total": 5},
    ))

    assert response.status_code == 422
    assert response.json()["detail"] == [{"field": "creditmemo.order_id", "message": (
        "43 is not the request's order_id 42")}]
