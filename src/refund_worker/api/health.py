"""Reachability checks for ``GET /healthz``: the database answers ``SELECT 1``, the broker PING."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis
from sqlalchemy import text

from refund_worker.db import Database

log = logging.getLogger(__name__)

#: A check answers True when its service is reachable (raising counts as unreachable).
Check = Callable[[], bool]

#: Seconds a check may take before its service counts as down.
CHECK_TIMEOUT_SECONDS = 2.0


def database_check(database: Database) -> Check:
    """``SELECT 1`` on a pooled connection."""

    def check() -> bool:
        with database.engine.connect() as connection:
            return connection.execute(text("SELECT 1")).scalar() == 1

    return check


class RedisPing:
    """PING the broker's Redis, on one small connection pool made on first use."""

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self._url = url
        self._timeout = timeout
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            if self._client is None:
                self._client = redis.Redis.from_url(
                    self._url,
                    socket_connect_timeout=self._timeout,
                    socket_timeout=self._timeout,
                    max_connections=2,
                )
            client = self._client
        return bool(client.ping())

    def close(self) -> None:
        """Close the pool's connections."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def default_broker_check(broker_url: str) -> RedisPing | None:
    """A Redis PING when the broker is Redis; None (unchecked) for other brokers."""
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisPing(broker_url)
    return None


def run_check(name: str, check: Check) -> bool:
    """True when ``check`` says so; an exception counts as down (logged without its message,
    which for a broker can hold its URL)."""
    try:
        return bool(check())
    except Exception as exc:
        log.warning("health check %s failed: %s", name, type(exc).__name__)
        return False
