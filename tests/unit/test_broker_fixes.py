"""kombu's Redis channel, asked for a connection pool after its connection was collected, raises a
connection error (which Celery handles by reconnecting) instead of an ``AttributeError`` (which
stopped the worker). End to end: ``tests/e2e/test_redis_loss.py``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis
from kombu.transport import redis as kombu_redis

from refund_worker import broker_fixes
from refund_worker.celery_app import app


def test_a_collected_connection_gives_a_connection_error() -> None:
    collected = SimpleNamespace(connection=SimpleNamespace(client=None))
    with pytest.raises(redis.exceptions.ConnectionError, match="already closed"):
        kombu_redis.Channel._connparams(collected)
    # ... one the worker's broker connection treats as recoverable:
    with app.connection_for_read() as connection:
        assert issubclass(redis.exceptions.ConnectionError, connection.connection_errors)


def test_the_fix_is_applied_once() -> None:
    patched = kombu_redis.Channel._connparams
    broker_fixes.apply()
    assert kombu_redis.Channel._connparams is patched
