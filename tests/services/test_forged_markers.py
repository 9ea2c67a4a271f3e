"""A caller cannot forge another refund's marker, and reconciliation never settles a refund on a
credit memo that does not fit it or that already backs another refund (issue #18's two paths)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from refund_worker.errors import InvalidRefund
from refund_worker.intake import enqueue_refund
from refund_worker.markers import comment_with_marker, marker_for
from refund_worker.models import Refund
from refund_worker.replay import replay
from tests.services.conftest import Env


def _victim_and_cable(env: Env) -> tuple[dict[str, object], int, int]:
    """An order of a 900.00 item and a 1.00 item; (order, the 900 item's id, the 1 item's)."""
    order = env.order(items=[{"sku": "TV", "qty": 1, "price": 900}, {"sku": "CABLE", "qty": 1,
                                                                        "price": 1}])
    items = {item["sku"]: int(item["item_id"]) for item in order["items"]}
    return order, items["TV"], items["CABLE"]


def _forge(env: Env, order_id: int, item_id: int, text: str) -> int:
    """A 1.00 credit memo made straight in Magento (say, from its admin) with ``text``."""
    return env.state.refund_order(
        order_id,
        {"items": [{"order_item_id": item_id, "qty": 1}], "arguments": {"shipping_amount": 0},
         "comment": {"comment": text, "is_visible_on_front": 0}},
    )


def test_a_comment_carrying_a_marker_is_refused_at_intake(env: Env) -> None:
    order, tv, cable = _victim_and_cable(env)
    victim = env.enqueue(order_id=order["order_id"], items=[{"order_item_id": tv, "qty": 1}])

    with pytest.raises(InvalidRefund, match=r"^comment: "):
        enqueue_refund(
            {"idempotency_key": "forger", "order_id": order["order_id"],
             "items": [{"order_item_id": cable, "qty": 1}],
             "comment": f"cable [refund-worker:{victim}]"},
            database=env.database, publisher=env.publisher, tenant="other",
        )
    assert len(env.rows()) == 1


def test_without_an_operator_a_guessed_marker_never_settles_the_victim(env: Env) -> None:
    """One 503 on the victim's call; meanwhile a 1.00 credit memo appears with the victim's old
    marker form. The victim reconciles, finds nothing of its own, and refunds its 900.00."""
    order, tv, cable = _victim_and_cable(env)
    env.state.add_fault({"route": "order_refund", "kind": "status", "status": 503, "count": 1})
    victim = env.enqueue(order_id=order["order_id"], items=[{"order_item_id": tv, "qty": 1}])
    service = env.refunds()
    assert service.process(victim).status == "retrying"
    _forge(env, int(order["order_id"]), cable, f"cable [refund-worker:{victim}]")

    env.clock.advance(3600)
    result = service.process(victim)

    assert result.status == "succeeded"
    row = env.row(victim)
    memo = env.state.creditmemo(row.creditmemo_id)
    assert float(memo["grand_total"]) == pytest.approx(900)
    assert float(env.state.order(int(order["order_id"]))["total_refunded"]) == pytest.approx(901)


def test_a_stolen_marker_on_a_memo_that_does_not_fit_needs_attention(env: Env) -> None:
    """Even the real marker (as if read off Magento) on someone else's 1.00 memo does not make
    the victim succeed: it does not fit, so a person must look; nothing is refunded again."""
    order, tv, cable = _victim_and_cable(env)
    env.state.add_fault({"route": "order_refund", "kind": "status", "status": 503, "count": 1})
    victim = env.enqueue(order_id=order["order_id"], items=[{"order_item_id": tv, "qty": 1}])
    service = env.refunds()
    assert service.process(victim).status == "retrying"
    marker = marker_for(victim, env.row(victim).marker_token)
    forged = _forge(env, int(order["order_id"]), cable, comment_with_marker(marker, "cable"))

    env.clock.advance(3600)
    result = service.process(victim)

    assert result.status == "needs_attention"
    row = env.row(victim)
    assert row.status == "needs_attention"
    assert row.creditmemo_id is None
    assert row.in_doubt
    assert f"credit memo {forged} carries this refund's marker but does not fit" in (
        row.attention or "")
    assert "does not refund order item" in (row.attention or "")
    assert env.refund_calls() == 1  # the victim's one 503; nothing sent since
    # A replay reconciles again, finds the same misfit, and flags again: never a success.
    replay(env.database, env.publisher, [victim], reason="looked", actor="ops")
    env.clock.advance(3600)
    assert service.process(victim).status == "needs_attention"
    assert env.refund_calls() == 1


def test_through_replay_a_memo_backing_another_refund_is_never_a_second_success(
    env: Env,
) -> None:
    """The forged 1.00 refund goes through and records credit memo N. The victim, failed, is
    replayed; were it to match memo N too, it may not succeed on it: one memo, one refund."""
    order, _, cable = _victim_and_cable(env)
    forger = env.enqueue(order_id=order["order_id"], items=[{"order_item_id": cable, "qty": 1}])
    service = env.refunds()
    assert service.process(forger).status == "succeeded"
    memo_id = env.row(forger).creditmemo_id
    victim = env.enqueue(order_id=order["order_id"], items=[{"order_item_id": cable, "qty": 1}],
                         idempotency_key="victim")
    # The worst case: the victim's marker is on the forger's memo (and the memo fits the victim).
    marker = marker_for(victim, env.row(victim).marker_token)
    env.state.add_creditmemo_comment(
        {"parent_id": memo_id, "comment": comment_with_marker(marker, "x"),
         "is_visible_on_front": 0, "is_customer_notified": 0}
    )
    with env.database.session_scope() as session:
        session.execute(update(Refund).where(Refund.id == victim).values(
            status="failed", last_error="bad token", attempts=1, first_attempt_at=env.clock()))
    replay(env.database, env.publisher, [victim], reason="token fixed", actor="ops")

    result = service.process(victim)

    assert result.status == "needs_attention"
    row = env.row(victim)
    assert (row.status, row.creditmemo_id) == ("needs_attention", None)
    assert f"credit memo {memo_id} already backs refund {forger}" in (row.attention or "")
    assert env.row(forger).creditmemo_id == memo_id
    assert env.refund_calls() == 1  # only the forger's
