"""A call limit per Magento instance shared by every worker process, kept in Redis.

GCRA (generic cell rate algorithm) in one Lua script, timed by Redis' own clock so workers on
different hosts agree. A 429 from Magento pauses every worker until its ``Retry-After`` has passed.
If Redis cannot be reached the limiter lets calls through: the worker cannot fetch work without
Redis anyway, and a refund must not fail because its limiter is down.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import redis

from refund_worker import metrics
from refund_worker.errors import MagentoRateLimited

log = logging.getLogger(__name__)

_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return tostring(paused - now) end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - burst * interval
if now < allow_at then return tostring(allow_at - now) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return '0'
"""

_PAUSE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local until_ts = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ts > current then
  redis.call('SET', KEYS[1], tostring(until_ts), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return 1
"""


class CallLimiter(Protocol):
    """Something that admits Magento calls."""

    def acquire(self) -> None:
        """Block until a call may go out, or raise ``MagentoRateLimited`` if that is too long."""

    def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (Magento said 429 with Retry-After)."""


class NoLimit:
    """Admits every call at once."""

    def acquire(self) -> None:
        """Admit the call."""

    def pause(self, seconds: float) -> None:
        """Ignore pauses."""


class RedisCallLimiter:
    """``rate`` calls per second to one Magento instance, with a burst, across all workers."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        instance: str,
        rate: float,
        burst: int | None = None,
        max_wait: float = 5.0,
    ) -> None:
        self._client = client
        self._keys = [f"refund-worker:ratelimit:{instance}", f"refund-worker:pause:{instance}"]
        self._interval = 1.0 / rate
        self._burst = burst if burst is not None else max(1, int(rate))
        self._max_wait = max_wait
        self._gcra: Any = client.register_script(_GCRA)
        self._pause: Any = client.register_script(_PAUSE)

    def acquire(self) -> None:
        """Wait for room (``max_wait`` seconds at most), else raise ``MagentoRateLimited``.

        A call that had to wait is counted once (``metrics.rate_limit_wait``) with all the time
        it waited, however many times it asked Redis again."""
        started = time.monotonic()
        deadline = started + self._max_wait
        waited = False
        while True:
            try:
                wait = float(self._gcra(keys=self._keys, args=[self._interval, self._burst]))
            except redis.RedisError as exc:
                log.warning("rate limiter unavailable, letting the call through: %s", exc)
                break
            if wait <= 0:
                break
            if time.monotonic() + wait > deadline:
                metrics.rate_limit_refused()
                raise MagentoRateLimited(
                    f"our shared Magento call limit has no room for {wait:.1f}s", retry_after=wait
                )
            waited = True
            time.sleep(wait)
        if waited:
            metrics.rate_limit_wait(time.monotonic() - started)

    def pause(self, seconds: float) -> None:
        """Make every worker wait ``seconds`` before its next call to this instance."""
        metrics.rate_limit_pause()
        try:
            self._pause(keys=self._keys[1:], args=[max(0.0, seconds)])
        except redis.RedisError as exc:
            log.warning("could not share a Magento pause: %s", exc)
