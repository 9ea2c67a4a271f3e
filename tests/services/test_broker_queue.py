"""The sweeper's look into the broker: when was the oldest message still queued published?"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
import redis

from refund_worker.celery_app import NOTIFY_QUEUE, NOTIFY_TASK, PROCESS_TASK, QUEUE, create_app
from refund_worker.models import utcnow
from refund_worker.publishing import PUBLISHED_AT_HEADER, CeleryPublisher
from refund_worker.queues import oldest_queued_at
from tests.services.conftest import fast_settings

pytestmark = pytest.mark.redis


def test_the_oldest_stamped_message_in_the_queue_is_found(redis_url: str) -> None:
    app = create_app(fast_settings(broker_url=redis_url))
    now = utcnow()
    assert oldest_queued_at(app, QUEUE, now) == now  # nothing queued
    client = redis.Redis.from_url(redis_url)
    client.lpush(QUEUE, b"not a message")  # unreadable messages are skipped
    assert oldest_queued_at(app, QUEUE, now) is None  # queued, but nothing tells when
    before = time.time()
    CeleryPublisher(app).publish_refunds(["first"])
    time.sleep(0.05)
    CeleryPublisher(app).publish_refunds(["second", "third"])
    oldest = oldest_queued_at(app, QUEUE, utcnow())
    assert oldest is not None
    assert before - 0.01 <= oldest.timestamp() <= before + 0.04
    raw = client.lrange(QUEUE, 0, -1)
    assert all(PUBLISHED_AT_HEADER in item.decode() for item in raw[:-1])
    client.close()


def test_emails_have_a_queue_of_their_own(redis_url: str) -> None:
    app = create_app(fast_settings(broker_url=redis_url))
    client = redis.Redis.from_url(redis_url)
    try:
        CeleryPublisher(app).publish_refunds(["r1"])
        time.sleep(0.05)
        before = time.time()
        CeleryPublisher(app).publish_notifications(["n1"])
        refunds = [json.loads(raw)["headers"]["task"] for raw in client.lrange(QUEUE, 0, -1)]
        emails = [json.loads(raw)["headers"] for raw in client.lrange(NOTIFY_QUEUE, 0, -1)]
        assert refunds == [PROCESS_TASK]
        assert [(h["task"], h["argsrepr"]) for h in emails] == [(NOTIFY_TASK, "('n1',)")]
        # The sweeper reads each queue's own backlog.
        oldest_email = oldest_queued_at(app, NOTIFY_QUEUE, utcnow())
        assert oldest_email is not None
        assert before - 0.01 <= oldest_email.timestamp() <= before + 0.04
        oldest_refund = oldest_queued_at(app, QUEUE, utcnow())
        assert oldest_refund is not None
        assert oldest_refund.timestamp() < before
    finally:
        client.close()
        app.close()


def test_another_broker_says_nothing() -> None:
    app = create_app(fast_settings(broker_url="memory://"))
    assert oldest_queued_at(app, QUEUE, datetime.now(UTC)) is None
