"""Publishing refund and email messages to the broker: what intake, replay and the sweeper use.

The database is the source of truth and a message is only a doorbell carrying a refund id, so a
message is published only after its row is committed, and a broker that refuses one loses
nothing: the row waits, and the sweeper publishes it. ``GuardedPublisher`` turns such a refusal
into one ``BrokerUnavailable`` (the exception's type only: a broker error's text can carry the
broker URL and its password), for the API (a 503) and the CLI (a line) alike.

Every message carries the moment it was published (``PUBLISHED_AT_HEADER``), so the sweeper can
tell a message that is only waiting in a long queue from one that was lost.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from celery import Celery
from kombu.utils.uuid import uuid

from refund_worker.celery_app import NOTIFY_TASK, PROCESS_TASK, TASK_QUEUES, WEBHOOK_TASK, app
from refund_worker.errors import BrokerUnavailable

log = logging.getLogger(__name__)

#: Message header: when the message was published (seconds since the epoch).
PUBLISHED_AT_HEADER = "refund_worker_published_at"


class Publisher(Protocol):
    """Publishes messages for refund ids (after their rows are committed)."""

    def publish_refunds(self, refund_ids: Sequence[str]) -> None: ...
    def publish_notifications(self, refund_ids: Sequence[str]) -> None: ...


@runtime_checkable
class WebhookPublisher(Protocol):
    """Publishes webhook delivery messages (after their outbox rows are committed)."""

    def publish_webhooks(self, delivery_ids: Sequence[int]) -> None: ...


def publish_webhooks_of(publisher: object, delivery_ids: Sequence[int]) -> None:
    """Publish ``delivery_ids`` through ``publisher`` if it can; if it cannot (a publisher
    made before webhooks), the sweep publishes them."""
    if delivery_ids and isinstance(publisher, WebhookPublisher):
        publisher.publish_webhooks(delivery_ids)


def stamp() -> dict[str, float]:
    """The headers that date a message (also on a task's retries)."""
    return {PUBLISHED_AT_HEADER: time.time()}


def publish(celery_app: Celery, task_name: str, refund_ids: Sequence[str]) -> None:
    """Publish one ``task_name`` message per id to the task's queue, pipelined where the broker
    can.

    Each message is the one ``send_task`` would send (``app.amqp.as_task_v2``: the same headers,
    body and properties, to the default exchange with the queue as routing key), built without
    ``send_task``'s per-message routing, option merging and declaring: a third of its CPU, which
    matters for bulk intake (docs/performance.md, "messages built once"). The queue is declared
    once per call.
    """
    if not refund_ids:
        return
    amqp = celery_app.amqp
    queue = TASK_QUEUES[task_name]
    reply_to = celery_app.thread_oid  # computed once, not per message
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
                    headers={**message.headers, **stamp()},
                    delivery_mode=2,
                    **message.properties,
                )


class CeleryPublisher:
    """Publishes refund and email messages through a Celery app (``publish``)."""

    def __init__(self, celery_app: Celery = app) -> None:
        self.celery_app = celery_app

    def publish_refunds(self, refund_ids: Sequence[str]) -> None:
        """Publish ``refunds.process`` for each id."""
        publish(self.celery_app, PROCESS_TASK, refund_ids)

    def publish_notifications(self, refund_ids: Sequence[str]) -> None:
        """Publish ``refunds.notify`` for each id, to the emails' own queue."""
        publish(self.celery_app, NOTIFY_TASK, refund_ids)

    def publish_webhooks(self, delivery_ids: Sequence[int]) -> None:
        """Publish ``webhooks.deliver`` for each delivery id, to the webhooks' own queue."""
        publish(self.celery_app, WEBHOOK_TASK, [str(delivery_id) for delivery_id in delivery_ids])


class GuardedPublisher:
    """A publisher whose broker failures are one ``BrokerUnavailable``, logged once."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    def publish_refunds(self, refund_ids: Sequence[str]) -> None:
        """Publish ``refunds.process`` for each id, or raise ``BrokerUnavailable``."""
        self._guard(self._publisher.publish_refunds, refund_ids)

    def publish_notifications(self, refund_ids: Sequence[str]) -> None:
        """Publish ``refunds.notify`` for each id, or raise ``BrokerUnavailable``."""
        self._guard(self._publisher.publish_notifications, refund_ids)

    def publish_webhooks(self, delivery_ids: Sequence[int]) -> None:
        """Publish ``webhooks.deliver`` for each delivery id, or raise ``BrokerUnavailable``."""
        if isinstance(self._publisher, WebhookPublisher):
            self._guard(self._publisher.publish_webhooks, delivery_ids)

    @staticmethod
    def _guard(publish: Callable[[Sequence[Any]], None], refund_ids: Sequence[Any]) -> None:
        try:
            publish(refund_ids)
        except Exception as exc:
            kind = type(exc).__name__
            log.error(
                "publishing %d committed messages failed (%s); the sweeper will publish them",
                len(refund_ids),
                kind,
            )
            raise BrokerUnavailable(f"the broker refused the messages ({kind})") from exc
