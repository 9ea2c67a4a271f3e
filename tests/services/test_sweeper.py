"""The sweeper finds what lost its message: unpublished, overdue, abandoned (expired lease),
and keeps finding an abandoned row while its re-published message is lost too."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from refund_worker.models import OrderLock, Refund, utcnow
from refund_worker.sweeper import find_stranded, mark_published, purge_expired_order_locks
from tests.services.conftest import Env


def add(env: Env, name: str, now: datetime, **fields: Any) -> str:
    refund_id = str(uuid.uuid4())
    values: dict[str, Any] = {
        "id": refund_id, "idempotency_key": name, "payload_hash": "0" * 64,
        "request_json": f'{{"idempotency_key": "{name}", "order_id": 1}}', "order_id": 1,
        "service_requested": "auto", "status": "queued", "created_at": now - timedelta(hours=1),
        "updated_at": now, "next_attempt_at": now - timedelta(hours=1),
        "published_at": now - timedelta(hours=1),
    }
    values.update(fields)
    with env.database.session_scope() as session:
        session.add(Refund(**values))
    return name


def test_the_sweeper_finds_received_stale_and_abandoned_rows(env: Env) -> None:
    now = utcnow()
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    later = lambda seconds: now + timedelta(seconds=seconds)  # noqa: E731
    stale = env.settings.republish_after_seconds + 1
    expected = {
        add(env, "received-long-ago", now, status="received", created_at=ago(60),
            published_at=None),
        add(env, "queued-message-lost", now, status="queued"),
        add(env, "parked-due", now, status="queued", next_attempt_at=ago(1), published_at=None),
        add(env, "retrying-overdue", now, status="retrying", next_attempt_at=ago(stale),
            published_at=ago(stale)),
        add(env, "processing-lease-expired", now, status="processing", lease_expires_at=ago(1),
            published_at=ago(60)),
        add(env, "processing-expired-republished-long-ago", now, status="processing",
            lease_expires_at=ago(stale * 3), published_at=ago(stale)),
        add(env, "email-pending-lost", now, status="succeeded", notification_status="pending",
            notification_next_at=ago(stale), notification_published_at=ago(stale)),
        add(env, "email-sending-abandoned", now, status="succeeded",
            notification_status="sending", notification_lease_expires_at=ago(1),
            notification_published_at=ago(60)),
    }
    add(env, "received-just-now", now, status="received", created_at=ago(1), published_at=None)
    add(env, "queued-just-published", now, status="queued", published_at=ago(1))
    add(env, "retrying-not-due", now, status="retrying", next_attempt_at=later(30))
    add(env, "parked-not-due", now, status="queued", next_attempt_at=later(30),
        published_at=None)
    add(env, "processing-live-lease", now, status="processing", lease_expires_at=later(5))
    add(env, "processing-expired-just-republished", now, status="processing",
        lease_expires_at=ago(stale * 3), published_at=ago(1))
    add(env, "succeeded", now, status="succeeded")
    add(env, "failed", now, status="failed")
    add(env, "email-sent", now, status="succeeded", notification_status="sent")
    add(env, "email-sending-live", now, status="succeeded", notification_status="sending",
        notification_lease_expires_at=later(5), notification_published_at=ago(60))

    found = find_stranded(env.database, env.settings, now)
    keys = {row.id: row.idempotency_key for row in env.rows()}
    assert {keys[i] for i in found.refunds} | {keys[i] for i in found.notifications} == expected
    assert {keys[i] for i in found.notifications} == {"email-pending-lost",
                                                       "email-sending-abandoned"}

    mark_published(env.database, found, now)
    statuses = {row.idempotency_key: row.status for row in env.rows()}
    assert statuses["received-long-ago"] == "queued"
    # Published just now: each waits a full period before it is re-published again...
    assert find_stranded(env.database, env.settings, now + timedelta(seconds=1)).refunds == []
    # ...and is found again if that message is lost too.
    again = find_stranded(env.database, env.settings, now + timedelta(seconds=stale))
    assert {keys[i] for i in again.refunds} >= {"queued-message-lost",
                                                 "processing-lease-expired"}


def test_long_expired_order_locks_are_purged_apart_from_finding(env: Env) -> None:
    now = utcnow()
    with env.database.session_scope() as session:
        session.add(OrderLock(order_id=1, refund_id="a", expires_at=now - timedelta(hours=2)))
        session.add(OrderLock(order_id=2, refund_id="b", expires_at=now - timedelta(minutes=5)))
    assert purge_expired_order_locks(env.database, now) == 1
    with env.database.session_scope() as session:
        assert list(session.scalars(select(OrderLock.order_id))) == [2]
    find_stranded(env.database, env.settings, now)  # finding touches no lock
    with env.database.session_scope() as session:
        assert list(session.scalars(select(OrderLock.order_id))) == [2]


def test_a_row_whose_message_waits_behind_a_backlog_is_not_published_again(env: Env) -> None:
    now = utcnow()
    stale = env.settings.republish_after_seconds
    add(env, "waiting-behind-backlog", now, status="queued",
        published_at=now - timedelta(seconds=stale * 4))
    add(env, "email-waiting-behind-backlog", now, status="succeeded",
        notification_status="pending", notification_next_at=now - timedelta(seconds=stale * 4),
        notification_published_at=now - timedelta(seconds=stale * 4))
    # The oldest message still in each queue was published before those rows' messages:
    behind = now - timedelta(seconds=stale * 5)
    backlog = find_stranded(env.database, env.settings, now, queued_since=behind,
                            notifications_queued_since=behind)
    assert (backlog.refunds, backlog.notifications) == ([], [])
    # Each queue speaks for its own rows: a backlog of refunds holds back no email, and back.
    refunds_only = find_stranded(env.database, env.settings, now, queued_since=behind)
    assert (refunds_only.refunds, len(refunds_only.notifications)) == ([], 1)
    emails_only = find_stranded(env.database, env.settings, now,
                                notifications_queued_since=behind)
    assert (len(emails_only.refunds), emails_only.notifications) == (1, [])
    # The queue has moved past them (or is empty: queued_since is now): their messages are gone.
    for queued_since in (now - timedelta(seconds=stale * 3), now, None):
        found = find_stranded(env.database, env.settings, now, queued_since=queued_since,
                              notifications_queued_since=queued_since)
        assert (len(found.refunds), len(found.notifications)) == (1, 1)


def test_a_parked_row_is_published_when_due_whatever_the_backlog(env: Env) -> None:
    """Parked (put off while its shop was down, no message out): no backlog holds it back."""
    now = utcnow()
    parked = add(env, "parked", now, status="retrying", next_attempt_at=now, published_at=None)
    behind = now - timedelta(seconds=env.settings.republish_after_seconds * 5)
    found = find_stranded(env.database, env.settings, now, queued_since=behind)
    keys = {row.id: row.idempotency_key for row in env.rows()}
    assert [keys[i] for i in found.refunds] == [parked]
    assert find_stranded(env.database, env.settings, now - timedelta(seconds=1)).refunds == []


def test_a_row_parked_again_while_the_sweep_published_it_stays_parked(env: Env) -> None:
    """Its message came and it was put off again before the sweep noted the publish: it must
    not look published (no message is out), or it would wait a full period more."""
    now = utcnow()
    add(env, "parked", now, status="queued", next_attempt_at=now, published_at=None)
    found = find_stranded(env.database, env.settings, now)
    with env.database.session_scope() as session:  # delivered and parked again, 30 s on
        session.query(Refund).update({"next_attempt_at": now + timedelta(seconds=30)})
    mark_published(env.database, found, now)
    (row,) = env.rows()
    assert row.published_at is None
    later = now + timedelta(seconds=30)
    assert find_stranded(env.database, env.settings, later).refunds == [row.id]
