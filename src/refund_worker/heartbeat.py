"""Whether beat's sweep is running, as workers see it: a refund is parked (left for the sweep to
publish, with no retry message) only while it is, so a deployment without beat never strands one.

Each sweep sets a Redis key that lives three sweep intervals; a worker reads it at most once a
second. No Redis, or Redis away: not alive, and refunds keep their Celery retries.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import redis

log = logging.getLogger(__name__)

KEY = "refund-worker:sweep:alive"
#: How long a worker trusts what it last read.
READ_EVERY = 1.0


class SweepWatch(Protocol):
    """Tells whether the sweep runs (so a parked refund will be published)."""

    def alive(self) -> bool: ...


class NoSweep:
    """Never trusts a sweep: every put-off keeps its retry message (tests, the demo)."""

    def alive(self) -> bool:
        return False


class SweepHeartbeat:
    """The sweep's heartbeat in the Redis the limiters share."""

    def __init__(self, client: redis.Redis | None, interval: float) -> None:
        self._client = client
        self._ttl_ms = max(1, int(3 * interval * 1000))
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._alive = False

    def beat(self) -> None:
        """Called by each sweep: the sweep runs for three more intervals."""
        if self._client is None:
            return
        try:
            self._client.set(KEY, b"1", px=self._ttl_ms)
        except redis.RedisError as exc:
            log.warning("could not note the sweep's heartbeat: %s", type(exc).__name__)

    def alive(self) -> bool:
        """True while a sweep ran within three intervals (read at most once a second)."""
        if self._client is None:
            return False
        with self._lock:
            moment = time.monotonic()
            if moment - self._read_at < READ_EVERY:
                return self._alive
            self._read_at = moment
            try:
                self._alive = bool(self._client.exists(KEY))
            except redis.RedisError:
                self._alive = False
            return self._alive
