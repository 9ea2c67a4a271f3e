"""Thin Celery tasks: parse the id, call one service, translate the result. Arguments are ids.

Every refund and email message carries the moment it was published (``PUBLISHED_AT_HEADER``), so
the sweeper can tell a message that is only waiting in a long queue from one that was lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task
from kombu.utils.uuid import uuid
from sqlalchemy.exc import SQLAlchemyError

from refund_worker.celery_app import (
    NOTIFY_QUEUE,
    NOTIFY_TASK,
    PROCESS_TASK,
    QUEUE,
    SWEEP_TASK,
    TASK_QUEUES,
    app,
)
from refund_worker.errors import DatabaseUnavailable, RetryableError
from refund_worker.models import utcnow
from refund_worker.refunds import AttemptResult
from refund_worker.runtime import get_runtime
from refund_worker.sweeper import find_stranded, mark_published

log = logging.getLogger(__name__)

#: Message header: when the message was published (seconds since the epoch).
PUBLISHED_AT_HEADER = "refund_worker_published_at"
#: How many of the oldest queued messages the sweeper reads to find the oldest publish time.
QUEUE_PEEK = 100


def _stamp() -> dict[str, float]:
    return {PUBLISHED_AT_HEADER: time.time()}


def _retry_later(task: Task, exc: Exception) -> Exception:
    """The task's retry after the database failed it (its row still says what to do). A
    SQLAlchemy error is shown by its type only: its text carries SQL and parameters."""
    shown = exc if isinstance(exc, RetryableError) else DatabaseUnavailable(
        f"database error: {type(exc).__name__}"
    )
    return task.retry(  # type: ignore[no-any-return]
        countdown=get_runtime().settings.in_doubt_grace_seconds,
        exc=shown,
        max_retries=None,
        headers=_stamp(),
    )


def _settle(task: Task, result: AttemptResult) -> str:
    if result.retry_in is not None:
        raise task.retry(countdown=result.retry_in, max_retries=None, headers=_stamp())
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
    if result.publish_notification:
        publish_notifications(app, [result.refund_id])
    return _settle(self, result)


@app.task(name=NOTIFY_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def notify_customer(self: Task, refund_id: str) -> str:
    """Send the credit-memo email of a succeeded refund, at most once."""
    try:
        result = get_runtime().notifications.send(str(refund_id))
    except (RetryableError, SQLAlchemyError) as exc:
        raise _retry_later(self, exc) from exc
    return _settle(self, result)


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> dict[str, int]:
    """Re-publish what a crash or a Redis restart left without a message (run by beat)."""
    runtime = get_runtime()
    now = utcnow()
    found = find_stranded(
        runtime.database,
        runtime.settings,
        now,
        queued_since=oldest_queued_at(app, now),
        notifications_queued_since=oldest_queued_at(app, now, NOTIFY_QUEUE),
    )
    publish_refunds(app, found.refunds)
    publish_notifications(app, found.notifications)
    mark_published(runtime.database, found, now)
    if found.refunds or found.notifications:
        log.warning(
            "sweeper re-published %d refunds and %d notifications",
            len(found.refunds),
            len(found.notifications),
        )
    return {"refunds": len(found.refunds), "notifications": len(found.notifications)}


def oldest_queued_at(celery_app: Celery, now: datetime, queue: str = QUEUE) -> datetime | None:
    """When the oldest message still waiting in ``queue`` was published.

    Every message published after it is still in the queue (Redis lists are first in, first
    out), so its refund is not stranded however long ago that was. ``now`` when the queue is
    empty; ``None`` when that cannot be told (another broker, no stamped message in sight).
    """
    try:
        with celery_app.connection_for_read() as connection:
            client: Any = getattr(connection.default_channel, "client", None)
            if client is None or not hasattr(client, "lrange"):
                return None
            # Published with LPUSH, consumed with BRPOP: the oldest message is the last one.
            waiting = client.lrange(queue, -QUEUE_PEEK, -1)
    except Exception:  # the broker is away: sweep as if nothing were queued
        log.warning("cannot look into the broker's queue", exc_info=True)
        return None
    if not waiting:
        return now
    for raw in reversed(waiting):
        try:
            stamp = json.loads(raw)["headers"].get(PUBLISHED_AT_HEADER)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if isinstance(stamp, int | float):
            return datetime.fromtimestamp(stamp, UTC)
    return None


def _publish(celery_app: Celery, task_name: str, refund_ids: Sequence[str]) -> None:
    """Publish one message per id straight to the task's queue, pipelined where it can be.

    Each message is the one ``send_task`` would send (``app.amqp.as_task_v2``: the same headers,
    body and properties, to the default exchange with the queue as routing key), built without
    ``send_task``'s per-message routing, option merging and declaring: a third of its CPU, which
    matters for bulk intake. The queue is declared once per call.
    """
    if not refund_ids:
        return
    amqp = celery_app.amqp
    queue = TASK_QUEUES[task_name]
    reply_to = celery_app.thread_oid  # this thread's node id, computed once, not per message
    with celery_app.producer_or_acquire() as producer:
        producer.maybe_declare(amqp.queues[queue])
        batch = getattr(producer, "batch", None)  # kombu >= 5.7: one pipeline per batch
        with batch() if batch is not None else contextlib.nullcontext():
            for refund_id in refund_ids:
                message = amqp.as_task_v2(
                    uuid(),
                    task_name,
                    args=(refund_id,),
                    kwargs={},
                    argsrepr=f"({refund_id!r},)",
                    kwargsrepr="{}",
                    reply_to=reply_to,
                    ignore_result=None,
                )
                producer.publish(
                    message.body,
                    exchange="",
                    routing_key=queue,
                    serializer="json",
                    headers={**message.headers, **_stamp()},
                    delivery_mode=2,
                    **message.properties,
                )


def publish_refunds(celery_app: Celery, refund_ids: Sequence[str]) -> None:
    """Publish ``refunds.process`` for each id."""
    _publish(celery_app, PROCESS_TASK, refund_ids)


def publish_notifications(celery_app: Celery, refund_ids: Sequence[str]) -> None:
    """Publish ``refunds.notify`` for each id, to the emails' own queue."""
    _publish(celery_app, NOTIFY_TASK, refund_ids)


class CeleryPublisher:
    """The intake's publisher, backed by a Celery app."""

    def __init__(self, celery_app: Celery = app) -> None:
        self.celery_app = celery_app

    def publish_refunds(self, refund_ids: Sequence[str]) -> None:
        """Publish ``refunds.process`` for each id."""
        publish_refunds(self.celery_app, refund_ids)

    def publish_notifications(self, refund_ids: Sequence[str]) -> None:
        """Publish ``refunds.notify`` for each id."""
        publish_notifications(self.celery_app, refund_ids)
