"""What the broker's queues hold: when the oldest message still waiting was published.

The sweeper asks this so that a row whose message is only waiting behind a backlog is not
published again. Redis lists are first in, first out: every message published after the oldest
one still queued is still in the queue too.
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
