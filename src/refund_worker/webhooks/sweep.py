"""Deliveries whose message was lost (a crash, a Redis restart) or that wait for the sweep.

A retry due later than the task's own countdown limit has no message: it is published here once
due. A delivery whose message went out but never ran (``published_at`` older than
``REFUND_WORKER_REPUBLISH_AFTER_SECONDS``), or one an attempt abandoned (its lease expired), is
published again. Publishing twice is harmless: each attempt claims its row first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update

from refund_worker.db import Database
from refund_worker.models import WebhookDelivery
from refund_worker.outbox import DeliveryStatus
from refund_worker.settings import Settings

__all__ = ["SWEEP_LIMIT", "find_stranded_deliveries", "mark_published"]

SWEEP_LIMIT = 1000


def find_stranded_deliveries(
    database: Database, settings: Settings, now: datetime, *, limit: int = SWEEP_LIMIT
) -> list[int]:
    """Deliveries that should be running and show no sign of it, oldest due first."""
    stale = now - timedelta(seconds=settings.republish_after_seconds)
    waiting = (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value)
    d = WebhookDelivery
    query = (
        select(d.id)
        .where(
            or_(
                and_(
                    d.status.in_(waiting),
                    or_(
                        and_(d.published_at.is_(None), d.next_attempt_at <= now),
                        and_(d.next_attempt_at < stale, d.published_at < stale),
                    ),
                ),
                and_(
                    d.status == DeliveryStatus.DELIVERING.value,
                    d.lease_expires_at < now,
                    or_(
                        d.published_at.is_(None),
                        d.published_at < d.lease_expires_at,
                        d.published_at < stale,
                    ),
                ),
            )
        )
        .order_by(d.next_attempt_at, d.id)
        .limit(limit)
    )
    with database.session_scope() as session:
        return list(session.scalars(query))


def mark_published(database: Database, delivery_ids: list[int], now: datetime) -> None:
    """Remember the sweep published them, so they wait a full period before the next time."""
    if not delivery_ids:
        return
    with database.session_scope() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(delivery_ids))
            .values(published_at=now)
        )
