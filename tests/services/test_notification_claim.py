"""The email's claim, one statement: which rows it takes, as which attempt, and why it leaves
the others (on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from refund_worker.models import Refund
from tests.services.conftest import Env, at_once
from tests.services.test_notification_guarantees import succeeded_refund


def set_notification(env: Env, refund_id: str, **values: Any) -> None:
    with env.database.session_scope() as session:
        row = session.get(Refund, refund_id)
        assert row is not None
        for name, value in values.items():
            setattr(row, f"notification_{name}", value)


# (row state, seconds from now for its lease / next attempt, expected status and detail, the
# attempt number the send is recorded as, or None when nothing is called)
CASES = [
    ("pending", None, None, ("sent", ""), 1),
    ("retrying", None, -5, ("sent", ""), 1),
    ("retrying", None, 30, ("retrying", "not due yet; an earlier copy"), None),
    ("sending", 30, None, ("sending", "notification is sending"), None),
    ("sending", -1, None, ("sent", ""), 2),  # abandoned: checks email_sent, then sends
    ("sent", None, None, ("sent", "notification is sent"), None),
    ("failed", None, None, ("failed", "notification is failed"), None),
    ("not_sent", None, None, ("not_sent", "notification is not_sent"), None),
]


@pytest.mark.parametrize(("status", "lease_in", "next_in", "expected", "attempt"), CASES)
def test_the_claim_takes_only_what_may_be_sent_now(
    env: Env,
    status: str,
    lease_in: float | None,
    next_in: float | None,
    expected: tuple[str, str],
    attempt: int | None,
) -> None:
    refund_id = succeeded_refund(env)
    now = env.clock.now
    set_notification(
        env,
        refund_id,
        status=status,
        lease_expires_at=None if lease_in is None else now + timedelta(seconds=lease_in),
        next_at=None if next_in is None else now + timedelta(seconds=next_in),
    )
    version = env.row(refund_id).notification_version
    result = env.notifications().send(refund_id)
    assert (result.status, result.detail) == expected
    row = env.row(refund_id)
    operations = [call.operation for call in env.calls[-2:]]
    if attempt is None:
        assert row.notification_version == version  # untouched
        assert "creditmemo_emails" not in operations
    else:
        assert row.notification_attempts == attempt
        assert row.notification_version == version + 2  # the claim, then the outcome
        assert operations[-1] == "creditmemo_emails"
        assert ("creditmemo_get" in operations) == (attempt > 1)
        assert len(env.state.emails()) == 1


def test_a_refund_that_did_not_succeed_has_no_email_to_claim(env: Env) -> None:
    refund_id = env.enqueue(order_id=env.order()["order_id"], notify_customer=True)
    result = env.notifications().send(refund_id)
    assert (result.status, result.detail) == ("skipped", "no succeeded refund to notify about")
    assert env.row(refund_id).notification_attempts == 0
    unknown = env.notifications().send("00000000-0000-4000-8000-000000000000")
    assert unknown.status == "skipped"
    assert env.requests() == 0


def test_two_workers_claiming_at_once_send_one_email(env: Env) -> None:
    refund_id = succeeded_refund(env)
    services = [env.notifications(), env.notifications()]
    results = at_once(lambda: services.pop().send(refund_id))
    assert sorted((str(r.status), r.detail) for r in results) in (
        [("sending", "notification is sending"), ("sent", "")],  # the loser read after the claim
        [("sent", ""), ("sent", "notification is sent")],  # ... or after the outcome
    )
    assert len(env.state.emails()) == 1
    assert [c.operation for c in env.calls].count("creditmemo_emails") == 1
    assert env.row(refund_id).notification_attempts == 1
