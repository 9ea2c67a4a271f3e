"""The customer's email goes out at most once: commit-then-fail, a killed send, redelivery,
unreadable rows, and giving up only once Magento says the email was not sent."""

from __future__ import annotations

from typing import Any

import pytest

from refund_worker.models import Refund
from tests.services.conftest import Env, Killed


def succeeded_refund(env: Env) -> str:
    refund_id = env.enqueue(order_id=env.order()["order_id"], notify_customer=True)
    result = env.refunds().process(refund_id)
    assert (result.status, result.publish_notification) == ("succeeded", True)
    assert env.row(refund_id).notification_status == "pending"
    return refund_id


@pytest.mark.parametrize("kind", ["commit_then_500", "commit_then_drop"])
def test_commit_then_fail_on_the_email_sends_exactly_one(env: Env, kind: str) -> None:
    refund_id = succeeded_refund(env)
    env.state.add_fault({"route": "creditmemo_emails", "kind": kind, "count": 1})
    notifier = env.notifications()
    first = notifier.send(refund_id)
    assert first.status == "retrying"
    assert len(env.state.emails()) == 1  # Magento sent it before failing
    assert first.retry_in is not None
    env.clock.advance(first.retry_in)
    second = notifier.send(refund_id)
    assert (second.status, second.detail) == ("sent", "already sent by an earlier attempt")
    assert len(env.state.emails()) == 1
    assert env.row(refund_id).notification_status == "sent"


def test_a_send_killed_after_magento_sent_is_not_repeated(env: Env) -> None:
    refund_id = succeeded_refund(env)

    def die_after(original: Any, *args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise Killed

    env.overrides["send_creditmemo_email"] = die_after
    with pytest.raises(Killed):
        env.notifications().send(refund_id)
    env.overrides.clear()
    assert env.row(refund_id).notification_status == "sending"
    assert env.notifications().send(refund_id).detail == "notification is sending"
    env.clock.advance(env.settings.lease_seconds + 1)
    result = env.notifications().send(refund_id)
    assert (result.status, result.detail) == ("sent", "already sent by an earlier attempt")
    assert len(env.state.emails()) == 1


def test_a_sent_email_delivered_again_calls_nothing(env: Env) -> None:
    refund_id = succeeded_refund(env)
    assert env.notifications().send(refund_id).status == "sent"
    requests = env.requests()
    again = env.notifications().send(refund_id)
    assert (again.status, again.detail) == ("sent", "notification is sent")
    assert env.requests() == requests
    assert len(env.state.emails()) == 1


def test_out_of_attempts_with_an_unknown_outcome_it_checks_before_failing(env: Env) -> None:
    refund_id = succeeded_refund(env)
    env.state.add_fault({"route": "creditmemo_emails", "kind": "status", "status": 503})
    notifier = env.notifications()
    for _ in range(env.settings.notification_max_attempts):
        result = notifier.send(refund_id)
        assert result.status == "retrying"  # a 503 on the POST: it may have been sent
        assert result.retry_in is not None
        env.clock.advance(result.retry_in)
    final = notifier.send(refund_id)  # only reads email_sent
    assert final.status == "failed"
    assert "Magento shows the email was not sent" in final.detail
    assert env.state.emails() == []


def test_an_unreadable_stored_request_fails_the_email_with_a_reason(env: Env) -> None:
    refund_id = succeeded_refund(env)
    with env.database.session_scope() as session:
        row = session.get(Refund, refund_id)
        assert row is not None
        row.request_json = "{broken"
    result = env.notifications().send(refund_id)
    assert result.status == "failed"
    row = env.row(refund_id)
    assert (row.notification_status, row.status) == ("failed", "succeeded")
    assert (row.notification_error or "").startswith("stored request cannot be read")
    assert row.notification_lease_expires_at is None  # the claim's lease is given back
    assert env.state.emails() == []
