"""Reconciliation accepts a credit memo only when it carries the marker and fits the refund."""

from __future__ import annotations

from typing import Any

import pytest

from refund_worker.errors import AttentionRequired
from refund_worker.markers import comment_with_marker, marker_for
from refund_worker.reconcile import choose, fit_problems, with_marker
from refund_worker.schemas import RefundRequest

MARKER = marker_for("0b7c5a8e-2f1d-4c3b-9a6e-5d4c3b2a1f0e", "ab" * 16)


def request(**fields: Any) -> RefundRequest:
    return RefundRequest.model_validate({"idempotency_key": "k", "order_id": 42, **fields})


def memo(entity_id: int = 7, *, comment: str | None = MARKER, **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "entity_id": entity_id,
        "order_id": 42,
        "invoice_id": None,
        "items": [{"order_item_id": 1, "qty": 1}],
        "shipping_amount": 0,
        "base_shipping_amount": 0,
        "adjustment_positive": 0,
        "adjustment_negative": 0,
        "comments": [] if comment is None else [{"comment": comment_with_marker(comment, "x")}],
    }
    return {**document, **fields}


def test_only_credit_memos_carrying_the_marker_match() -> None:
    other = marker_for("0b7c5a8e-2f1d-4c3b-9a6e-5d4c3b2a1f0e", "cd" * 16)
    found = with_marker([memo(9), memo(8, comment=other), memo(3), memo(4, comment=None)], MARKER)
    assert [m["entity_id"] for m in found] == [3, 9]


def test_a_fitting_credit_memo_is_chosen() -> None:
    wanted = request(items=[{"order_item_id": 1, "qty": 1}])
    match = choose(wanted, [memo()])
    assert match is not None
    assert match.creditmemo_id == 7
    assert choose(wanted, []) is None


def test_two_credit_memos_with_the_marker_need_attention() -> None:
    with pytest.raises(AttentionRequired, match="credit memos 7, 8 all carry"):
        choose(request(), [memo(7), memo(8)])


@pytest.mark.parametrize(
    ("fields", "changes", "problem"),
    [
        ({}, {"order_id": 43}, "belongs to order 43, not 42"),
        ({"invoice_id": 5}, {"invoice_id": 6}, "refunds invoice 6, not 5"),
        (
            {"items": [{"order_item_id": 1, "qty": 2}]},
            {},
            "refunds 1 of order item 1, not 2",
        ),
        (
            {"items": [{"order_item_id": 2, "qty": 1}]},
            {"items": [{"order_item_id": 2, "qty": 1}, {"order_item_id": 3, "qty": 1}]},
            "also refunds order item 3",
        ),
        ({"items": [{"order_item_id": 5, "qty": 1}]}, {}, "does not refund order item 5"),
        ({"shipping_amount": "5"}, {}, "its shipping_amount is 0, not 5"),
        ({"adjustment_positive": "2.5"}, {}, "adjustment_positive is 0, not 2.5"),
        ({}, {"adjustment_negative": 3}, "adjustment_negative is 3, not 0"),
        (
            {"items": [{"order_item_id": 1, "qty": 1}]},
            {"shipping_amount": 4, "base_shipping_amount": 4},
            "shipping_amount is 4, not 0",  # a partial refund sends shipping 0
        ),
    ],
)
def test_a_credit_memo_that_does_not_fit_needs_attention(
    fields: dict[str, Any], changes: dict[str, Any], problem: str
) -> None:
    wanted = request(**fields)
    assert any(problem in text for text in fit_problems(wanted, memo(**changes)))
    with pytest.raises(AttentionRequired, match="carries this refund's marker but does not fit"):
        choose(wanted, [memo(**changes)])


def test_the_forged_one_unit_credit_memo_of_the_issue_does_not_fit_the_victim() -> None:
    victim = request(items=[{"order_item_id": 1, "qty": 1}], invoice_id=11)
    forged = memo(invoice_id=11, items=[{"order_item_id": 2, "qty": 1}])
    problems = fit_problems(victim, forged)
    assert "it does not refund order item 1" in problems
    assert "it also refunds order item 2, which was not asked for" in problems


def test_child_rows_of_a_requested_parent_fit_when_the_order_says_so() -> None:
    wanted = request(items=[{"order_item_id": 1, "qty": 1}])
    with_child = memo(items=[{"order_item_id": 1, "qty": 1}, {"order_item_id": 2, "qty": 1}])
    assert fit_problems(wanted, with_child)  # without the order, the child is unexplained
    order_items = {1: {"item_id": 1}, 2: {"item_id": 2, "parent_item_id": 1}}
    assert fit_problems(wanted, with_child, order_items) == []


def test_amounts_may_match_in_base_currency_and_within_rounding() -> None:
    wanted = request(shipping_amount="5.004")
    assert fit_problems(wanted, memo(shipping_amount=5.5, base_shipping_amount=5.0)) == []
    assert fit_problems(wanted, memo(shipping_amount="5.00", base_shipping_amount=None)) == []


def test_a_named_invoice_fits_its_own_memo_or_an_offline_one_without_invoice() -> None:
    wanted = request(invoice_id=5)
    assert fit_problems(wanted, memo(invoice_id=5)) == []
    assert fit_problems(wanted, memo(invoice_id=None)) == []  # routed to RefundOrder (offline)
    assert fit_problems(wanted, memo(invoice_id=6)) == ["it refunds invoice 6, not 5"]


def test_a_full_refund_checks_order_and_adjustments_only() -> None:
    anything = memo(items=[{"order_item_id": 9, "qty": 3}], shipping_amount=12)
    assert fit_problems(request(), anything) == []


def test_a_caller_built_credit_memo_must_match_its_totals() -> None:
    wanted = request(
        service="creditmemo",
        creditmemo={
            "items": [{"order_item_id": 1, "qty": 1}],
            "grand_total": "10",
            "base_grand_total": "10",
        },
    )
    assert fit_problems(wanted, memo(grand_total=10, base_grand_total=10)) == []
    assert "its grand_total is 12, not 10" in fit_problems(
        wanted, memo(grand_total=12, base_grand_total=12)
    )
