"""Credit memo routes: low-level refund, repository save, get, cancel, emails, comments."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from refund_worker.simulator import SimulatorState
from tests.simulator.sim_support import order


def document(**overrides: Any) -> dict[str, Any]:
    """Magento's own API-test shape: a full refund of demo order 2 (paid 60)."""
    memo: dict[str, Any] = {
        "order_id": 2,
        "items": [
            {
                "order_item_id": 3,
                "qty": 1,
                "price": 34,
                "row_total": 34,
                "base_price": 34,
                "base_cost": 0,
                "entity_id": 0,
            },
            {
                "order_item_id": 4,
                "qty": 3,
                "price": 7,
                "row_total": 21,
                "base_price": 7,
                "base_cost": 0,
                "entity_id": 0,
            },
        ],
        "subtotal": 55,
        "base_subtotal": 55,
        "shipping_amount": 5,
        "base_shipping_amount": 5,
        "grand_total": 60,
        "base_grand_total": 60,
    }
    memo.update(overrides)
    return memo


def test_low_level_refund_of_a_whole_document(client: httpx.Client) -> None:
    response = client.post(
        "/V1/creditmemo/refund", json={"creditmemo": document(), "offlineRequested": True}
    )
    assert response.status_code == 200, response.text
    memo = response.json()
    assert (memo["entity_id"], memo["state"], memo["order_id"], memo["grand_total"]) == (
        3,
        2,
        2,
        60,
    )
    assert [(i["order_item_id"], i["qty"], i["parent_id"]) for i in memo["items"]] == [
        (3, 1, 3),
        (4, 3, 3),
    ]
    assert all(i["entity_id"] > 0 for i in memo["items"])
    after = order(client, 2)
    assert (after["state"], after["status"], after["total_refunded"]) == ("closed", "closed", 60.0)
    assert [i["qty_refunded"] for i in after["items"]] == [1.0, 3.0]
    assert client.get("/V1/creditmemo/3").json() == memo


def test_low_level_refund_trusts_the_document(client: httpx.Client) -> None:
    # No collectTotals: a 10.00 credit memo for one bottle is taken as given.
    body = {
        "creditmemo": {
            "order_id": 2,
            "items": [{"order_item_id": 4, "qty": 1, "row_total": 7}],
            "base_grand_total": 10,
            "transaction_id": "refund-worker:abc",
            "comments": [{"comment": "refund-worker:abc", "is_visible_on_front": 0}],
        },
        "offline_requested": True,
    }
    memo = client.post("/V1/creditmemo/refund", json=body).json()
    assert memo["transaction_id"] == "refund-worker:abc"
    assert [c["comment"] for c in memo["comments"]] == ["refund-worker:abc"]
    after = order(client, 2)
    assert (after["total_refunded"], after["state"]) == (10.0, "complete")


def test_low_level_over_refund_formats_the_amount_as_currency(client: httpx.Client) -> None:
    response = client.post(
        "/V1/creditmemo/refund", json={"creditmemo": document(base_grand_total=61)}
    )
    assert response.status_code == 400
    assert response.json() == {
        "message": "The most money available to refund is %1.",
        "parameters": ["$60.00"],
    }


def test_low_level_refund_needs_a_creditmemo_and_an_order(client: httpx.Client) -> None:
    missing = client.post("/V1/creditmemo/refund", json={"offlineRequested": True})
    assert (missing.status_code, missing.json()) == (
        400,
        {
            "message": '"%fieldName" is required. Enter and try again.',
            "parameters": {"fieldName": "creditmemo"},
        },
    )
    no_order = client.post("/V1/creditmemo/refund", json={"creditmemo": {"items": []}})
    assert (no_order.status_code, no_order.json()) == (
        404,
        {"message": "We found an invalid order to refund."},
    )


def test_low_level_refund_of_an_existing_refunded_memo(client: httpx.Client) -> None:
    response = client.post(
        "/V1/creditmemo/refund", json={"creditmemo": document(entity_id=1, order_id=4)}
    )
    assert (response.status_code, response.json()) == (
        400,
        {"message": "We cannot register an existing credit memo."},
    )


def test_low_level_refund_of_an_open_memo_saved_before(client: httpx.Client) -> None:
    saved = client.post("/V1/creditmemo", json={"entity": document(state=1)}).json()
    assert saved["state"] == 1
    assert order(client, 2).get("total_refunded") is None  # null until a refund
    refunded = client.post(
        "/V1/creditmemo/refund",
        json={
            "creditmemo": {**document(), "entity_id": saved["entity_id"]},
            "offlineRequested": True,
        },
    ).json()
    assert (refunded["entity_id"], refunded["state"]) == (saved["entity_id"], 2)
    assert order(client, 2)["total_refunded"] == 60.0


def test_low_level_online_refund(client: httpx.Client) -> None:
    zero = client.post(
        "/V1/creditmemo/refund",
        json={"creditmemo": {"order_id": 1, "invoice_id": 1, "items": [], "base_grand_total": 0}},
    )
    assert (zero.status_code, zero.json()) == (
        400,
        {"message": "Online refund amount must be greater than zero."},
    )
    memo = client.post(
        "/V1/creditmemo/refund",
        json={"creditmemo": {"order_id": 1, "invoice_id": 1, "items": [], "base_grand_total": 10}},
    ).json()
    assert memo["transaction_id"] == "txn-000001-0001-refund"
    assert order(client, 1)["total_online_refunded"] == 10.0


def test_repository_save_records_without_refunding(client: httpx.Client) -> None:
    before = order(client, 2)
    response = client.post("/V1/creditmemo", json={"entity": document()})
    assert response.status_code == 200
    memo = response.json()
    assert memo["order_id"] == 2
    assert "state" not in memo
    assert order(client, 2) == before
    assert client.get(f"/V1/creditmemo/{memo['entity_id']}").json() == memo


def test_repository_save_errors(client: httpx.Client) -> None:
    no_order = client.post("/V1/creditmemo", json={"entity": {"items": []}})
    assert (no_order.status_code, no_order.json()) == (
        400,
        {"message": "The credit memo couldn't be saved."},
    )
    missing = client.post("/V1/creditmemo", json={})
    assert missing.json()["parameters"] == {"fieldName": "entity"}


def test_get_creditmemo(client: httpx.Client) -> None:
    memo = client.get("/V1/creditmemo/1").json()
    assert (memo["entity_id"], memo["order_id"], memo["state"], memo["grand_total"]) == (
        1,
        4,
        2,
        50.0,
    )
    assert memo["comments"][0]["comment"] == "demo: refunded in full"
    assert memo["items"][0]["sku"] == "YOGA-MAT"
    assert client.get("/V1/creditmemo/999").status_code == 404
    assert client.get("/V1/creditmemo/0").json() == {
        "message": "An ID is needed. Set the ID and try again."
    }
    wrong = client.get("/V1/creditmemo/abc")
    assert (wrong.status_code, wrong.json()) == (
        400,
        {
            "message": 'The "abc" value\'s type is invalid. The "int" type was expected. '
            "Verify and try again."
        },
    )


@pytest.mark.parametrize("memo_id", [1, 999])
def test_cancel_always_fails(client: httpx.Client, memo_id: int) -> None:
    response = client.put(f"/V1/creditmemo/{memo_id}")
    assert (response.status_code, response.json()) == (
        400,
        {"message": "You can not cancel Credit Memo"},
    )


def test_emails(client: httpx.Client, state: SimulatorState) -> None:
    sent = client.post("/V1/creditmemo/1/emails")
    assert (sent.status_code, sent.content) == (200, b"true")
    assert client.post("/V1/creditmemo/1/emails").json() is True  # not idempotent
    emails = state.emails()
    assert [(e["creditmemo_id"], e["order_id"], e["to"], e["type"]) for e in emails] == [
        (1, 4, "customer@example.com", "creditmemo")
    ] * 2
    assert client.get("/V1/creditmemo/1").json()["email_sent"] == 1
    state.configure({"emails_enabled": False})
    assert client.post("/V1/creditmemo/2/emails").json() is False
    assert len(state.emails()) == 2
    assert "email_sent" not in client.get("/V1/creditmemo/2").json()
    assert client.post("/V1/creditmemo/999/emails").status_code == 404


def test_comments(client: httpx.Client, state: SimulatorState) -> None:
    listed = client.get("/V1/creditmemo/1/comments").json()
    assert listed["total_count"] == 1
    assert listed["items"][0]["comment"] == "demo: refunded in full"
    assert listed["search_criteria"]["filter_groups"][0]["filters"][0] == {
        "field": "parent_id",
        "value": "1",
        "condition_type": "eq",
    }
    assert client.get("/V1/creditmemo/999/comments").json()["total_count"] == 0
    # The path id is not used: parent_id in the body decides.
    saved = client.post(
        "/V1/creditmemo/999/comments",
        json={
            "entity": {
                "parent_id": 1,
                "comment": "second",
                "is_customer_notified": 1,
                "is_visible_on_front": 0,
            }
        },
    )
    assert saved.status_code == 200
    comment = saved.json()
    assert (comment["parent_id"], comment["comment"], comment["is_customer_notified"]) == (
        1,
        "second",
        1,
    )
    assert comment["entity_id"] > 0
    assert comment["created_at"]
    assert [c["comment"] for c in client.get("/V1/creditmemo/1/comments").json()["items"]] == [
        "demo: refunded in full",
        "second",
    ]
    assert [e["type"] for e in state.emails()] == ["creditmemo_comment"]


@pytest.mark.parametrize(
    "entity",
    [
        {"parent_id": 1, "comment": ""},
        {"parent_id": 1},
        {"comment": "orphan"},
        {"parent_id": 999, "comment": "orphan"},
    ],
)
def test_comment_errors(client: httpx.Client, entity: dict[str, Any]) -> None:
    response = client.post("/V1/creditmemo/1/comments", json={"entity": entity})
    assert (response.status_code, response.json()) == (
        400,
        {"message": "Could not save the creditmemo comment."},
    )
