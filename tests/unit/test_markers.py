"""The marker: unguessable, written only by the worker, matched exactly; never imitated."""

from __future__ import annotations

import pytest

from refund_worker.errors import InvalidRefund
from refund_worker.intake import validate_request
from refund_worker.markers import (
    carries_marker,
    comment_with_marker,
    imitates_marker,
    marker_for,
    new_marker_token,
)

REFUND_ID = "0b7c5a8e-2f1d-4c3b-9a6e-5d4c3b2a1f0e"


def test_tokens_are_128_random_bits() -> None:
    tokens = {new_marker_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(token) == 32 and int(token, 16) >= 0 for token in tokens)


def test_the_marker_carries_the_refund_id_and_its_token() -> None:
    token = new_marker_token()
    assert marker_for(REFUND_ID, token) == f"refund-worker:{REFUND_ID}:{token}"
    assert marker_for(REFUND_ID, None) == f"refund-worker:{REFUND_ID}"  # rows from before tokens


def test_the_comment_ends_with_the_marker() -> None:
    marker = marker_for(REFUND_ID, "ab" * 16)
    assert comment_with_marker(marker, "  Damaged  ") == f"Damaged [{marker}]"
    assert comment_with_marker(marker, None) == f"[{marker}]"
    assert comment_with_marker(marker, "   ") == f"[{marker}]"


def test_a_marker_matches_only_itself_whole() -> None:
    token = "cd" * 16
    marker = marker_for(REFUND_ID, token)
    legacy = marker_for(REFUND_ID, None)
    assert carries_marker(comment_with_marker(marker, "x"), marker)
    # The legacy marker is not a prefix match of the new one, nor the other way round.
    assert not carries_marker(comment_with_marker(marker, "x"), legacy)
    assert not carries_marker(comment_with_marker(legacy, "x"), marker)
    # Another token, a truncated one, the marker without its brackets: no match.
    assert not carries_marker(f"[{marker_for(REFUND_ID, 'ef' * 16)}]", marker)
    assert not carries_marker(f"[{marker[:-1]}]", marker)
    assert not carries_marker(marker, marker)


@pytest.mark.parametrize(
    "comment",
    [
        f"cable [refund-worker:{REFUND_ID}]",
        "refund-worker:",
        "REFUND_WORKER :x",
        "Refund Worker: see ticket",
        "ｒｅｆｕｎｄ－ｗｏｒｋｅｒ：" + REFUND_ID,  # full-width, folded by NFKC  # noqa: RUF001
        "refund--worker--:",
    ],
)
def test_a_comment_imitating_a_marker_is_refused_at_intake(comment: str) -> None:
    assert imitates_marker(comment)
    with pytest.raises(InvalidRefund, match=r"^comment: .*refund-worker"):
        validate_request({"idempotency_key": "k", "order_id": 1, "comment": comment})


@pytest.mark.parametrize(
    "comment", ["Damaged in transit", "refund worker was slow", "worker: refund", "refunded"]
)
def test_ordinary_comments_pass(comment: str) -> None:
    assert not imitates_marker(comment)
    assert validate_request({"idempotency_key": "k", "order_id": 1, "comment": comment})
