"""Replay failed refunds (or failed emails) under the same idempotency key, never twice.

A replayed refund is marked in doubt, so its next attempt searches Magento for a credit memo
carrying its marker before it could refund again. Succeeded and in-flight refunds are refused.
Every replay leaves a ``replayed`` event with the operator's reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from refund_worker.db import Database, rowcount
from refund_worker.intake import Publisher
from refund_worker.models import Refund, RefundEvent, utcnow
from refund_worker.schemas import NotificationStatus, RefundStatus

REPLAYABLE_NOTIFICATIONS = (NotificationStatus.FAILED.value, NotificationStatus.NOT_SENT.value)


class NotificationPublisher(Publisher, Protocol):
    """A publisher that can also publish ``refunds.notify``."""

    def publish_notifications(self, refund_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class RefundFilter:
    """Which refunds to list or replay."""

    ids: tuple[str, ...] = ()
    status: str | None = None
    order_id: int | None = None
    service: str | None = None
    error_contains: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None

    def statement(self) -> Select[Refund]:
        """The SELECT for this filter, newest first."""
        query = select(Refund)
        if self.ids:
            query = query.where(Refund.id.in_(self.ids) | Refund.idempotency_key.in_(self.ids))
        if self.status:
            query = query.where(Refund.status == self.status)
        if self.order_id is not None:
            query = query.where(Refund.order_id == self.order_id)
        if self.service:
            query = query.where(Refund.service == self.service)
        if self.error_contains:
            query = query.where(Refund.last_error.contains(self.error_contains, autoescape=True))
        if self.since:
            query = query.where(Refund.created_at >= self.since)
        if self.until:
            query = query.where(Refund.created_at < self.until)
        query = query.order_by(Refund.created_at.desc())
        return query.limit(self.limit) if self.limit else query


@dataclass
class ReplayReport:
    """What a replay did: ids re-queued, and ids refused with why."""

    replayed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def refusal(row: Refund, notifications: bool) -> str | None:
    """Why ``row`` cannot be replayed, or None."""
    if notifications:
        if row.status != RefundStatus.SUCCEEDED:
            return f"the refund is {row.status}; only a succeeded refund has an email to send"
        if row.notification_status not in REPLAYABLE_NOTIFICATIONS:
            return f"its notification is {row.notification_status}, not failed"
        return None
    if row.status == RefundStatus.SUCCEEDED:
        return f"already succeeded (credit memo {row.creditmemo_id}); replaying would refund twice"
    if row.status != RefundStatus.FAILED:
        return f"still in flight ({row.status}); only failed refunds can be replayed"
    return None


def select_refunds(session: Session, refund_filter: RefundFilter) -> list[Refund]:
    """Rows matching the filter."""
    return list(session.scalars(refund_filter.statement()))


def replay(
    database: Database,
    publisher: NotificationPublisher,
    refund_ids: Sequence[str],
    *,
    reason: str,
    actor: str = "operator",
    notifications: bool = False,
) -> ReplayReport:
    """Re-queue failed refunds (or failed emails); commit, then publish."""
    report = ReplayReport()
    now = utcnow()
    with database.session_scope() as session:
        rows = select_refunds(session, RefundFilter(ids=tuple(refund_ids)))
        found = {row.id for row in rows} | {row.idempotency_key for row in rows}
        for missing in sorted(set(refund_ids) - found):
            report.refused[missing] = "no such refund"
        for row in rows:
            why = refusal(row, notifications)
            if why is not None:
                report.refused[row.id] = why
                continue
            if _requeue(session, row, now, notifications):
                previous = row.notification_error if notifications else row.last_error
                what = "notification" if notifications else "refund"
                session.add(
                    RefundEvent(
                        refund_id=row.id,
                        kind=f"{what}_replayed",
                        detail=f"by {actor}: {reason} (previous error: {previous})",
                    )
                )
                report.replayed.append(row.id)
            else:
                report.refused[row.id] = "changed while replaying; try again"
    if notifications:
        publisher.publish_notifications(report.replayed)
    else:
        publisher.publish_refunds(report.replayed)
    return report


def _requeue(session: Session, row: Refund, now: datetime, notifications: bool) -> bool:
    if notifications:
        values: dict[str, object] = {
            "notification_status": NotificationStatus.PENDING.value,
            "notification_error": None,
            # Counted as a later attempt: Magento's email_sent flag is checked before sending.
            "notification_attempts": 1,
            "notification_next_at": now,
            "notification_published_at": now,
        }
    else:
        values = {
            "status": RefundStatus.QUEUED.value,
            "attempts": 0,
            "last_error": None,
            "last_error_kind": None,
            "last_http_status": None,
            "in_doubt": True,  # reconcile with Magento before any new refund call
            "next_attempt_at": now,
            "published_at": now,
            "settled_at": None,
        }
    return (
        rowcount(
            session.execute(
                update(Refund)
                .where(Refund.id == row.id, Refund.version == row.version)
                .values(version=Refund.version + 1, updated_at=now, **values)
            )
        )
        == 1
    )
