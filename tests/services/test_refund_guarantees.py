"""The guarantee mechanics of RefundService, one failure at a time, on SQLite and PostgreSQL:
commit-then-fail, a killed attempt, concurrent deliveries, the order lock, redelivery of a settled
refund, unreadable rows, the lease fence, giving up only after reconciling, and replay."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select

from refund_worker.models import OrderLock, Refund, RefundEvent
from refund_worker.refunds import AttemptResult
from refund_worker.replay import replay
from tests.services.conftest import Env, Killed, at_once

MARKER = "refund-worker:"


def events(env: Env, refund_id: str) -> list[str]:
    with env.database.session_scope() as session:
        return list(session.scalars(
            select(RefundEvent.kind).where(RefundEvent.refund_id == refund_id)))


@pytest.mark.parametrize(("kind", "extra"), [
    ("commit_then_500", {}),
    ("commit_then_drop", {}),
    ("commit_then_hang", {"hang_seconds": 5}),
])
def test_commit_then_fail_is_reconciled_not_repeated(
    env: Env, kind: str, extra: dict[str, Any]
) -> None:
    order = env.order()
    env.state.add_fault({"route": "order_refund", "kind": kind, "count": 1, **extra})
    refund_id = env.enqueue(order_id=order["order_id"])
    service = env.refunds()

    first = service.process(refund_id)
    assert first.status == "retrying"
    # Unknown outcome: wait out the client timeout and the grace before looking.
    assert first.retry_in is not None
    assert first.retry_in >= env.settings.magento_timeout + env.settings.in_doubt_grace_seconds
    row = env.row(refund_id)
    assert row.in_doubt
    assert len(env.memos()) == 1  # Magento did commit

    assert service.process(refund_id).detail == "not due yet; an earlier copy"
    env.clock.advance(first.retry_in)
    second = service.process(refund_id)
    assert second.status == "succeeded"
    assert second.detail.startswith("reconciled: credit memo")
    memos = env.memos()
    assert len(memos) == 1
    row = env.row(refund_id)
    assert row.creditmemo_id == memos[0]["entity_id"]
    assert not row.in_doubt
    assert row.attempts == 2
    assert env.refund_calls() == 1
    assert events(env, refund_id) == ["reconciled"]


@pytest.mark.parametrize("when", ["before the refund call", "after Magento committed"])
def test_killed_attempt_is_reconciled_once_its_lease_expires(env: Env, when: str) -> None:
    order = env.order()
    refund_id = env.enqueue(order_id=order["order_id"])
    service = env.refunds()

    def die_before(original: Any, *args: Any, **kwargs: Any) -> Any:
        raise Killed

    def die_after(original: Any, *args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise Killed

    env.overrides["refund_order"] = die_before if when.startswith("before") else die_after
    with pytest.raises(Killed):
        service.process(refund_id)
    env.overrides.clear()
    row = env.row(refund_id)
    # Left processing: whoever claims it next knows an earlier attempt may have reached Magento.
    assert row.status == "processing"

    requests = env.requests()
    assert service.process(refund_id).detail == "in flight in another worker"
    assert env.requests() == requests  # a live lease: nobody even looks

    env.clock.advance(env.settings.lease_seconds + 1)
    result = service.process(refund_id)
    assert result.status == "succeeded"
    assert len(env.memos()) == 1
    if when.startswith("after"):
        assert result.detail.startswith("reconciled")
        assert env.refund_calls() == 1
    else:
        assert env.refund_calls() == 1  # the search found nothing, so it refunded, once
        assert env.row(refund_id).service == "order"
    with env.database.session_scope() as session:
        assert session.scalars(select(OrderLock)).all() == []


def test_two_deliveries_at_the_same_moment_make_one_refund_call(env: Env) -> None:
    order = env.order()
    refund_id = env.enqueue(order_id=order["order_id"])
    env.state.add_fault({"route": "order_get", "kind": "latency", "ms": 300})
    service = env.refunds()
    results = at_once(lambda: service.process(refund_id))
    assert [r.status for r in results].count("succeeded") == 1
    loser = next(r for r in results if r.status != "succeeded")
    assert loser.detail in ("in flight in another worker", "claimed by another worker first")
    assert env.refund_calls() == 1
    assert len(env.memos()) == 1
    assert env.row(refund_id).attempts == 1


def test_two_refunds_of_one_order_are_serialized_by_the_order_lock(env: Env) -> None:
    order = env.order()
    items = order["items"]
    first = env.enqueue(order_id=order["order_id"],
                        items=[{"order_item_id": items[0]["item_id"], "qty": 1}])
    second = env.enqueue(order_id=order["order_id"],
                         items=[{"order_item_id": items[1]["item_id"], "qty": 1}])
    env.state.add_fault({"route": "order_get", "kind": "latency", "ms": 300})
    service = env.refunds()
    start = threading.Barrier(2)
    results: dict[str, AttemptResult] = {}

    def deliver(refund_id: str) -> None:
        start.wait()
        results[refund_id] = service.process(refund_id)

    threads = [threading.Thread(target=deliver, args=(rid,)) for rid in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status for r in results.values())
    assert statuses == ["queued", "succeeded"]
    busy_id, busy = next((k, r) for k, r in results.items() if r.status == "queued")
    assert busy.detail == f"order {order['order_id']} has a refund in flight"
    assert busy.retry_in is not None
    assert env.row(busy_id).attempts == 0  # the claim was rolled back: no attempt spent
    assert env.refund_calls() == 1

    assert service.process(busy_id).status == "succeeded"
    assert env.refund_calls() == 2
    assert len(env.memos(order["order_id"])) == 2


def test_an_abandoned_order_lock_is_taken_over_when_it_expires(env: Env) -> None:
    order = env.order()
    items = order["items"]
    dead = env.enqueue(order_id=order["order_id"],
                       items=[{"order_item_id": items[0]["item_id"], "qty": 1}])
    waiting = env.enqueue(order_id=order["order_id"],
                          items=[{"order_item_id": items[1]["item_id"], "qty": 1}])
    service = env.refunds()

    def die(original: Any, *args: Any, **kwargs: Any) -> Any:
        raise Killed

    env.overrides["get_order"] = die
    with pytest.raises(Killed):
        service.process(dead)
    env.overrides.clear()
    assert service.process(waiting).detail.endswith("has a refund in flight")
    env.clock.advance(env.settings.lease_seconds + 1)
    assert service.process(waiting).status == "succeeded"
    assert service.process(dead).status == "succeeded"
    assert env.refund_calls() == 2


def test_a_settled_refund_delivered_again_calls_nothing(env: Env) -> None:
    order = env.order()
    refund_id = env.enqueue(order_id=order["order_id"])
    service = env.refunds()
    assert service.process(refund_id).status == "succeeded"
    requests = env.requests()
    env.clock.advance(3600)
    again = service.process(refund_id)
    assert (again.status, again.detail) == ("succeeded", "already settled; duplicate delivery")
    assert env.requests() == requests


def test_a_refund_rejected_by_magento_is_settled_failed_and_not_retried(env: Env) -> None:
    order = env.order(state="holded")
    refund_id = env.enqueue(order_id=order["order_id"])
    result = env.refunds().process(refund_id)
    assert result.status == "failed"
    assert result.error is not None
    assert "status of holded" in (env.row(refund_id).last_error or "")
    assert env.refunds().process(refund_id).detail == "already settled; duplicate delivery"


@pytest.mark.parametrize("stored", [
    "not json at all",
    '{"idempotency_key": "k", "order_id": "seven"}',
    '{"idempotency_key": "k", "order_id": 7, "shipping_amount": "NaN"}',
    '{"idempotency_key": "k", "order_id": 7, "surprise": true}',
    "[]",
])
def test_a_stored_row_that_cannot_be_parsed_fails_with_a_reason(env: Env, stored: str) -> None:
    refund_id = env.enqueue(order_id=env.order()["order_id"])
    with env.database.session_scope() as session:
        row = session.get(Refund, refund_id)
        assert row is not None
        row.request_json = stored
    result = env.refunds().process(refund_id)
    assert result.status == "failed"
    assert result.detail.startswith("stored request cannot be processed (")
    row = env.row(refund_id)
    assert row.status == "failed"
    assert (row.last_error or "").startswith("stored request cannot be processed (")
    assert env.requests() == 0


def test_a_lease_lost_before_the_call_means_no_call(env: Env) -> None:
    """A worker stalled past its lease (limiter wait, GC pause) must not call Magento after
    another worker took the refund over: the lease renewal right before the call is fenced (a
    claim this old is past the fresh-claim window, so the renewal does run)."""
    order = env.order()
    refund_id = env.enqueue(order_id=order["order_id"])
    service = env.refunds()
    other_worker: list[AttemptResult] = []
    stalled_once = threading.Event()

    def stall(original: Any, *args: Any, **kwargs: Any) -> Any:
        answer = original(*args, **kwargs)
        if not stalled_once.is_set():  # the first worker stalls here, past its lease...
            stalled_once.set()
            env.clock.advance(env.settings.lease_seconds + 1)
            other_worker.append(service.process(refund_id))  # ...and another takes over
        return answer

    env.overrides["get_order"] = stall
    stalled = service.process(refund_id)
    assert other_worker[0].status == "succeeded"
    assert (stalled.status, stalled.detail) == ("processing", "lease lost; not called")
    assert env.refund_calls() == 1
    assert len(env.memos()) == 1
    assert env.row(refund_id).status == "succeeded"


def test_out_of_attempts_with_an_unknown_outcome_it_reconciles_before_failing(env: Env) -> None:
    order = env.order()
    refund_id = env.enqueue(order_id=order["order_id"])
    env.state.add_fault({"route": "order_refund", "kind": "status", "status": 503})
    service = env.refunds(max_attempts=2)
    for _ in range(2):
        result = service.process(refund_id)
        assert result.status == "retrying"  # 503 on a POST: Magento may have refunded
        assert result.retry_in is not None
        env.clock.advance(result.retry_in)
    env.state.clear_faults()
    final = service.process(refund_id)  # attempt 3 only looks for the marker
    assert final.status == "failed"
    assert "gave up after 2 attempts; Magento has no credit memo" in final.detail
    assert env.refund_calls() == 2
    assert env.memos() == []


def test_out_of_attempts_it_finds_the_refund_that_did_go_through(env: Env) -> None:
    order = env.order()
    refund_id = env.enqueue(order_id=order["order_id"])
    env.state.add_fault({"route": "order_refund", "kind": "status", "status": 503, "count": 1})
    env.state.add_fault({"route": "order_refund", "kind": "commit_then_500", "count": 1})
    service = env.refunds(max_attempts=2)
    for _ in range(2):
        result = service.process(refund_id)
        assert result.status == "retrying"
        assert result.retry_in is not None
        env.clock.advance(result.retry_in)
    final = service.process(refund_id)
    assert final.status == "succeeded"
    assert final.detail.startswith("reconciled")
    assert env.refund_calls() == 2
    assert len(env.memos()) == 1


def test_replay_of_a_failed_refund_reconciles_before_any_new_call(env: Env) -> None:
    order = env.order()
    refund_id = env.enqueue(order_id=order["order_id"])

    def bug_after_commit(original: Any, *args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise ValueError("a bug after Magento committed")

    env.overrides["refund_order"] = bug_after_commit
    failed = env.refunds().process(refund_id)
    env.overrides.clear()
    assert failed.status == "failed"
    assert env.row(refund_id).in_doubt
    assert len(env.memos()) == 1

    report = replay(env.database, env.publisher, [refund_id], reason="bug fixed")
    assert report.replayed == [refund_id]
    assert env.publisher.refunds[-1] == refund_id
    result = env.refunds().process(refund_id)
    assert result.status == "succeeded"
    assert result.detail.startswith("reconciled")
    assert env.refund_calls() == 1
    assert len(env.memos()) == 1
    assert env.row(refund_id).creditmemo_id == env.memos()[0]["entity_id"]


def test_a_success_recorded_by_a_taken_over_attempt_is_kept_and_the_lock_released(
    env: Env,
) -> None:
    """A's call committed, but A stalled past its lease and B took over. A records the success
    (a fact) while B holds the lease; B finds the same memo, lets go, and frees the order."""
    order = env.order()
    refund_id = env.enqueue(order_id=order["order_id"], notify_customer=True)
    service = env.refunds()
    a_committed, b_searching, a_recorded = (threading.Event() for _ in range(3))
    results: dict[str, AttemptResult] = {}

    def commit_then_stall(original: Any, *args: Any, **kwargs: Any) -> Any:
        answer = original(*args, **kwargs)
        a_committed.set()
        assert b_searching.wait(10)
        return answer

    def search_while_a_records(original: Any, *args: Any, **kwargs: Any) -> Any:
        b_searching.set()
        assert a_recorded.wait(10)
        return original(*args, **kwargs)

    def run_a() -> None:
        results["a"] = service.process(refund_id)
        a_recorded.set()

    env.overrides["refund_order"] = commit_then_stall
    env.overrides["search_creditmemos"] = search_while_a_records
    first = threading.Thread(target=run_a)
    first.start()
    assert a_committed.wait(10)
    env.clock.advance(env.settings.lease_seconds + 1)
    results["b"] = service.process(refund_id)
    first.join()

    assert results["a"].status == "succeeded"
    assert results["a"].publish_notification
    assert (results["b"].status, results["b"].detail) == (
        "succeeded", "already recorded by another attempt")
    assert not results["b"].publish_notification
    row = env.row(refund_id)
    assert (row.status, row.lease_token) == ("succeeded", None)
    assert row.creditmemo_id == env.memos()[0]["entity_id"]
    assert env.refund_calls() == 1
    with env.database.session_scope() as session:
        assert session.scalars(select(OrderLock)).all() == []
