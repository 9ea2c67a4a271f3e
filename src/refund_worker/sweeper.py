"""Finds refunds and emails whose message was lost, so they can be published again.

The database is the source of truth; the broker is only a doorbell. A message can be lost when a
process dies between commit and publish, when Redis restarts without persistence, or when a worker
is killed holding a prefetched message; and a refund put off while its shop is down is parked
with none on purpose (``published_at`` cleared), to be published here once due. Publishing twice
is harmless (every task claims its row with compare-and-set), so the sweeper errs on the side of
publishing, but not on a backlog: a row whose message was published after the oldest one still
queued is only waiting its turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, delete, or_, select, update

from refund_worker.db import Database, rowcount
from refund_worker.models import OrderLock, Refund
from refund_worker.schemas import NotificationStatus, RefundStatus
from refund_worker.settings import Settings

#: A ``received`` row older than this was committed but never published.
UNPUBLISHED_AFTER = timedelta(seconds=10)
SWEEP_LIMIT = 1000


@dataclass(frozen=True)
class SweepResult:
    """Ids to publish again."""

    refunds: list[str]
    notifications: list[str]


class _Publisher(Protocol):
    def publish_refunds(self, refund_ids: Sequence[str]) -> None: ...
    def publish_notifications(self, refund_ids: Sequence[str]) -> None: ...


def sweep(
    database: Database,
    settings: Settings,
    publisher: _Publisher,
    now: datetime,
    *,
    queued_since: datetime | None,
    notifications_queued_since: datetime | None,
) -> SweepResult:
    """Find what should have run by now and shows no sign of it, publish it again, and remember
    when (so the same rows wait a full period before the next time)."""
    found = find_stranded(
        database,
        settings,
        now,
        queued_since=queued_since,
        notifications_queued_since=notifications_queued_since,
    )
    publisher.publish_refunds(found.refunds)
    publisher.publish_notifications(found.notifications)
    mark_published(database, found, now)
    return found


def find_stranded(
    database: Database,
    settings: Settings,
    now: datetime,
    queued_since: datetime | None = None,
    notifications_queued_since: datetime | None = None,
) -> SweepResult:
    """Refunds and notifications that should have run by now and show no sign of it.

    ``queued_since``: when the oldest message still waiting in the refunds queue was published
    (``notifications_queued_since``: in the emails' queue). A row published after it still has
    its message in the queue, behind a backlog: publishing it again would only lengthen the
    backlog (each period, for every waiting row). ``None``: cannot be told.
    """
    stale = now - timedelta(seconds=settings.republish_after_seconds)
    published_stale = stale if queued_since is None else min(stale, queued_since)
    email_published_stale = (
        stale if notifications_queued_since is None else min(stale, notifications_queued_since)
    )
    waiting = (RefundStatus.QUEUED.value, RefundStatus.RETRYING.value)
    notifiable = (NotificationStatus.PENDING.value, NotificationStatus.RETRYING.value)
    with database.session_scope() as session:
        refunds = list(
            session.scalars(
                select(Refund.id)
                .where(
                    or_(
                        and_(
                            Refund.status == RefundStatus.RECEIVED.value,
                            Refund.created_at < now - UNPUBLISHED_AFTER,
                        ),
                        and_(  # parked (put off with no message): published when due
                            Refund.status.in_(waiting),
                            Refund.published_at.is_(None),
                            Refund.next_attempt_at <= now,
                        ),
                        and_(
                            Refund.status.in_(waiting),
                            Refund.next_attempt_at < stale,
                            or_(
                                Refund.published_at.is_(None),
                                Refund.published_at < published_stale,
                            ),
                        ),
                        and_(
                            Refund.status == RefundStatus.PROCESSING.value,
                            Refund.lease_expires_at < now,
                            # Once when the lease expires, then every period while the row
                            # stays abandoned: the first re-published message may be lost too.
                            or_(
                                Refund.published_at.is_(None),
                                Refund.published_at < Refund.lease_expires_at,
                                Refund.published_at < published_stale,
                            ),
                        ),
                    )
                )
                .order_by(Refund.created_at)
                .limit(SWEEP_LIMIT)
            )
        )
        notifications = list(
            session.scalars(
                select(Refund.id)
                .where(
                    Refund.status == RefundStatus.SUCCEEDED.value,
                    or_(
                        and_(
                            Refund.notification_status.in_(notifiable),
                            Refund.notification_next_at < stale,
                            or_(
                                Refund.notification_published_at.is_(None),
                                Refund.notification_published_at < email_published_stale,
                            ),
                        ),
                        and_(
                            Refund.notification_status == NotificationStatus.SENDING.value,
                            Refund.notification_lease_expires_at < now,
                            or_(
                                Refund.notification_published_at.is_(None),
                                Refund.notification_published_at
                                < Refund.notification_lease_expires_at,
                                Refund.notification_published_at < email_published_stale,
                            ),
                        ),
                    ),
                )
                .limit(SWEEP_LIMIT)
            )
        )
    return SweepResult(refunds, notifications)


def purge_expired_order_locks(database: Database, now: datetime) -> int:
    """Delete order locks that expired an hour ago or more (a dead worker's; an expired lock is
    taken over by the next refund of its order anyway, so this only keeps the table small)."""
    with database.session_scope() as session:
        purged = session.execute(
            delete(OrderLock).where(OrderLock.expires_at < now - timedelta(hours=1))
        )
        return rowcount(purged)


def mark_published(database: Database, result: SweepResult, now: datetime) -> None:
    """Remember when the sweeper published, so the same rows wait a full period again."""
    with database.session_scope() as session:
        if result.refunds:
            session.execute(
                update(Refund)
                .where(
                    Refund.id.in_(result.refunds),
                    # parked again meanwhile (its message came and it was put off): still none out
                    or_(Refund.published_at.is_not(None), Refund.next_attempt_at <= now),
                )
                .values(published_at=now)
            )
            session.execute(
                update(Refund)
                .where(Refund.id.in_(result.refunds), Refund.status == RefundStatus.RECEIVED.value)
                .values(status=RefundStatus.QUEUED.value)
            )
        if result.notifications:
            session.execute(
                update(Refund)
                .where(Refund.id.in_(result.notifications))
                .values(notification_published_at=now)
            )
