"""Thin Celery tasks: parse the id, call one service, translate the result. Arguments are ids."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import Task
from sqlalchemy.exc import SQLAlchemyError

from refund_worker.celery_app import (
    NOTIFY_QUEUE,
    NOTIFY_TASK,
    PROCESS_TASK,
    PRUNE_TASK,
    QUEUE,
    SWEEP_TASK,
    WEBHOOK_TASK,
    app,
    countdown,
)
from refund_worker.counts import compact_all
from refund_worker.db import Database
from refund_worker.errors import DatabaseUnavailable, RetryableError
from refund_worker.models import utcnow
from refund_worker.publishing import CeleryPublisher, stamp
from refund_worker.queues import oldest_queued_at
from refund_worker.refunds import AttemptResult
from refund_worker.retention import prune
from refund_worker.runtime import get_runtime
from refund_worker.settings import Settings
from refund_worker.sweeper import purge_expired_order_locks, sweep
from refund_worker.webhooks.sweep import find_stranded_deliveries, mark_published

log = logging.getLogger(__name__)


def _retry_later(task: Task, exc: Exception) -> Exception:
    """The task's retry after the database failed it (its row still says what to do). A
    SQLAlchemy error is shown by its type only: its text carries SQL and parameters."""
    shown = exc if isinstance(exc, RetryableError) else DatabaseUnavailable(
        f"database error: {type(exc).__name__}"
    )
    settings = get_runtime().settings
    return task.retry(  # type: ignore[no-any-return]
        countdown=countdown(settings, settings.in_doubt_grace_seconds),
        exc=shown,
        max_retries=None,
        headers=stamp(),
    )


def _settle(task: Task, result: AttemptResult) -> str:
    if result.retry_in is not None:
        raise task.retry(
            countdown=countdown(get_runtime().settings, result.retry_in),
            max_retries=None,
            headers=stamp(),
        )
    if result.error is not None:
        raise result.error  # stored already; re-raised so Flower shows the failure
    return f"{result.status}: {result.detail}" if result.detail else str(result.status)


@app.task(
    name=PROCESS_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def process_refund(self: Task, refund_id: str) -> str:
    """Run one attempt of a refund; publishes its notification after the outcome is committed."""
    try:
        result = get_runtime().refunds.process(str(refund_id))
    except (RetryableError, SQLAlchemyError) as exc:
        # The database is away or unusable: the row still says what to do, so the message is
        # retried, never acknowledged away.
        raise _retry_later(self, exc) from exc
    publisher = CeleryPublisher(app)
    if result.publish_notification:
        publisher.publish_notifications([result.refund_id])
    _publish_webhooks(publisher, result.webhooks)
    return _settle(self, result)


def _publish_webhooks(publisher: CeleryPublisher, delivery_ids: tuple[int, ...]) -> None:
    """The outcome's webhook deliveries, committed with it; a refused publish loses nothing
    (the sweep publishes them), so it never fails the task."""
    if not delivery_ids:
        return
    try:
        publisher.publish_webhooks(delivery_ids)
    except Exception as exc:
        log.error(
            "publishing %d webhook deliveries failed (%s); the sweep will publish them",
            len(delivery_ids),
            type(exc).__name__,
        )


@app.task(name=NOTIFY_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def notify_customer(self: Task, refund_id: str) -> str:
    """Send the credit-memo email of a succeeded refund, at most once."""
    try:
        result = get_runtime().notifications.send(str(refund_id))
    except (RetryableError, SQLAlchemyError) as exc:
        raise _retry_later(self, exc) from exc
    _publish_webhooks(CeleryPublisher(app), result.webhooks)
    return _settle(self, result)


@app.task(
    name=WEBHOOK_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def deliver_webhook(self: Task, delivery_id: str) -> str:
    """One attempt of one webhook delivery (its argument is the delivery's id, nothing else)."""
    try:
        result = get_runtime().webhooks.deliver(int(delivery_id))
    except (RetryableError, SQLAlchemyError) as exc:
        raise _retry_later(self, exc) from exc
    if result.retry_in is not None:
        raise self.retry(countdown=result.retry_in, max_retries=None, headers=stamp())
    return f"{result.status}: {result.detail}" if result.detail else result.status


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep_stranded() -> dict[str, int]:
    """Re-publish what a crash or a Redis restart left without a message, and fold the refund
    counts (run by beat)."""
    runtime = get_runtime()
    now = utcnow()
    found = sweep(
        runtime.database,
        runtime.settings,
        CeleryPublisher(app),
        now,
        queued_since=oldest_queued_at(app, QUEUE, now),
        notifications_queued_since=oldest_queued_at(app, NOTIFY_QUEUE, now),
    )
    purge_expired_order_locks(runtime.database, now)
    compact_all(runtime.database)
    webhooks = sweep_webhooks(runtime.database, runtime.settings, CeleryPublisher(app), now)
    runtime.heartbeat.beat()  # parked refunds are published: workers may park them
    if found.refunds or found.notifications:
        log.warning(
            "sweeper re-published %d refunds and %d notifications",
            len(found.refunds),
            len(found.notifications),
        )
    return {
        "refunds": len(found.refunds),
        "notifications": len(found.notifications),
        "webhooks": len(webhooks),
    }


def sweep_webhooks(
    database: Database, settings: Settings, publisher: CeleryPublisher, now: datetime
) -> list[int]:
    """Publish the deliveries that are due and have no message (see ``webhooks.sweep``)."""
    found = find_stranded_deliveries(database, settings, now)
    publisher.publish_webhooks(found)
    mark_published(database, found, now)
    if found:
        log.info("sweeper published %d webhook deliveries", len(found))
    return found


#: Rows per batch, and the pause between batches, of the scheduled prune: it yields to workers.
PRUNE_BATCH = 1000
PRUNE_PAUSE_SECONDS = 0.05


@app.task(name=PRUNE_TASK, ignore_result=True)
def prune_history() -> dict[str, int]:
    """Remove the audit rows and events of refunds settled ``prune_after_days`` ago (run by
    beat once a day when that setting is set; the refund rows stay)."""
    runtime = get_runtime()
    days = runtime.settings.prune_after_days
    if days is None:  # the setting was unset since beat scheduled this
        return {}
    report = prune(
        runtime.database,
        cutoff=utcnow() - timedelta(days=days),
        batch=PRUNE_BATCH,
        pause=PRUNE_PAUSE_SECONDS,
    )
    log.info(
        "pruned %s in %d batches (%.1f s)",
        ", ".join(f"{count} {table}" for table, count in report.removed.items()),
        report.batches,
        report.seconds,
    )
    return report.removed
