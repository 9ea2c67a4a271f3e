"""What the broker's queues hold: when the oldest message still waiting was published.

The sweeper asks this so that a row whose message is only waiting behind a backlog is not
published again. Queues are first in, first out: every message published after the oldest one
still queued is still in the queue too.

* Redis: the queue is a list, read without taking anything from it.
* RabbitMQ has no way to look at a message without taking it: the oldest is the queue's head,
  taken with ``basic.get`` (unacknowledged) and given back at once by closing the channel, so
  it stays at the head. A look only happens when the queue holds messages no consumer took
  (its ``message_count``); it counts as a delivery in the message's ``x-delivery-count`` (keep
  any ``delivery-limit`` policy well above one per sweep interval; a message dropped by one is
  a lost message, which the sweeper re-publishes).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from refund_worker.publishing import PUBLISHED_AT_HEADER

log = logging.getLogger(__name__)

#: How many of the oldest queued messages are read to find the oldest publish time.
QUEUE_PEEK = 100


def oldest_queued_at(celery_app: Celery, queue: str, now: datetime) -> datetime | None:
    """When the oldest message still waiting in ``queue`` was published.

    ``now`` when the queue is empty; ``None`` when that cannot be told (another broker, no
    stamped message in sight, the broker away).
    """
    try:
        with celery_app.connection_for_read() as connection:
            if connection.transport.driver_type == "amqp":
                return _amqp_head_published_at(connection, queue, now)
            client: Any = getattr(connection.default_channel, "client", None)
            if client is None or not hasattr(client, "lrange"):
                return None
            # Published with LPUSH, consumed with BRPOP: the oldest message is the last one.
            waiting = client.lrange(queue, -QUEUE_PEEK, -1)
    except Exception:  # the broker is away: sweep as if nothing were queued
        log.warning("cannot look into the broker's queue %s", queue, exc_info=True)
        return None
    if not waiting:
        return now
    for raw in reversed(waiting):
        try:
            published = json.loads(raw)["headers"].get(PUBLISHED_AT_HEADER)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if isinstance(published, int | float):
            return datetime.fromtimestamp(published, UTC)
    return None


def _amqp_head_published_at(connection: Any, queue: str, now: datetime) -> datetime | None:
    """The publish time of the head of a RabbitMQ queue, looked at and given back."""
    channel = connection.channel()
    try:
        _, waiting, _ = channel.queue_declare(queue=queue, passive=True)
        if not waiting:
            return now
        message = channel.basic_get(queue=queue, no_ack=False)
        if message is None:  # taken by a consumer meanwhile
            return now
        headers = (message.properties or {}).get("application_headers") or {}
        published = headers.get(PUBLISHED_AT_HEADER)
    finally:
        channel.close()  # gives the unacknowledged head back, where it was
    if isinstance(published, int | float):
        return datetime.fromtimestamp(published, UTC)
    return None
