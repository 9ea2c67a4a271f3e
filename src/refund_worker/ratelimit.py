"""A call limit per shop (Magento instance) shared by every worker process, kept in Redis.

GCRA (generic cell rate algorithm) in one Lua script, timed by Redis' own clock so workers on
different hosts agree. A 429 from Magento pauses every worker until its ``Retry-After`` has passed.
If Redis cannot be reached the limiter lets calls through: the worker cannot fetch work without
Redis anyway, and a refund must not fail because its limiter is down.

A ``ShopGate`` admits a refund's attempt into its shop before any call: it refuses (with how long
to wait) while the shop is paused by a 429 or already has ``max_in_flight`` attempts running
across all workers, so a shop that is down, slow or rate-limited holds at most that many worker
threads and never a thread asleep; the attempt is deferred with a countdown instead.
"""

from __future__ import annotations

import logging
import threading
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
if paused > now then return 'p' .. tostring(paused - now) end
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


_GATE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return tostring(paused - now) end
local cap = tonumber(ARGV[1])
if cap <= 0 then return '0' end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  if redis.call('ZCARD', KEYS[1]) >= cap then return '-1' end
end
local lease = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 1000)
return '0'
"""

#: A shop that answered "unavailable" (5xx, timeout, no connection) is paused for as long as it
#: has been failing (at least ``SICK_PAUSE_MIN``, at most the caller's cap); it counts as
#: failing until ``SICK_MEMORY`` seconds pass without a failure.
_SICK = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local memory = tonumber(ARGV[3])
local since = tonumber(redis.call('GET', KEYS[2]) or tostring(now))
redis.call('SET', KEYS[2], tostring(since), 'PX', math.ceil(memory * 1000))
local pause = math.min(tonumber(ARGV[2]), math.max(tonumber(ARGV[1]), now - since))
local until_ts = now + pause
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ts > current then
  redis.call('SET', KEYS[1], tostring(until_ts), 'PX', math.ceil(pause * 1000) + 1000)
end
return tostring(pause)
"""

#: What ``ShopGate.enter`` answers when the shop has ``max_in_flight`` attempts running.
FULL = -1.0
SICK_PAUSE_MIN = 2.0
SICK_MEMORY = 30.0


def limiter_keys(shop: str) -> tuple[str, str, str, str]:
    """The Redis keys of one shop: its call rate, its pause (a 429, or the shop down), its
    attempts in flight, since when it has been failing."""
    return (
        f"refund-worker:ratelimit:{shop}",
        f"refund-worker:pause:{shop}",
        f"refund-worker:inflight:{shop}",
        f"refund-worker:sick:{shop}",
    )


class ShopPaused(MagentoRateLimited):
    """The shop is paused (a 429, or it is down) for longer than a thread should sleep: the
    caller defers the refund instead (nothing counted)."""


#: A pause this short is slept through in ``acquire``; a longer one raises ``ShopPaused``.
MAX_PAUSE_SLEEP = 1.0


class ShopGate(Protocol):
    """Admits attempts into one shop, before any of their calls."""

    def enter(self, holder: str, lease_seconds: float) -> float:
        """0 when ``holder`` (a refund id) may go ahead (for ``lease_seconds`` at most, until
        ``leave``); else the seconds until the shop's pause ends, or ``FULL``."""

    def leave(self, holder: str) -> None:
        """``holder``'s attempt is over."""

    def unavailable(self, longest: float) -> float:
        """The shop just failed to answer (5xx, timeout, connection): pause it, longer the
        longer it keeps failing (``longest`` at most); returns the pause's length."""


class OpenGate:
    """Admits every attempt."""

    def enter(self, holder: str, lease_seconds: float) -> float:
        """Admit it."""
        return 0.0

    def leave(self, holder: str) -> None:
        """Nothing to give back."""

    def unavailable(self, longest: float) -> float:
        """Never pauses."""
        return 0.0


class LocalGate:
    """``max_in_flight`` attempts at once in this process (no Redis: the demo, eager tests)."""

    def __init__(self, max_in_flight: int | None) -> None:
        self._cap = max_in_flight or 0
        self._holders: set[str] = set()
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._sick_since: float | None = None
        self._last_failure = 0.0

    def enter(self, holder: str, lease_seconds: float) -> float:
        """Admit ``holder`` while the shop is not paused and fewer than the cap are in."""
        with self._lock:
            wait = self._paused_until - time.monotonic()
            if wait > 0:
                return wait
            if self._cap and holder not in self._holders and len(self._holders) >= self._cap:
                return FULL
            self._holders.add(holder)
            return 0.0

    def leave(self, holder: str) -> None:
        """Let ``holder`` out."""
        with self._lock:
            self._holders.discard(holder)

    def unavailable(self, longest: float) -> float:
        """Pause this process's attempts of the shop (as ``RedisShopGate`` does for all)."""
        with self._lock:
            now = time.monotonic()
            if self._sick_since is None or now - self._last_failure > SICK_MEMORY:
                self._sick_since = now
            self._last_failure = now
            pause = min(longest, max(SICK_PAUSE_MIN, now - self._sick_since))
            self._paused_until = max(self._paused_until, now + pause)
            return pause


class RedisShopGate:
    """One shop's pause and its cap on attempts in flight, shared by every worker: a sorted set
    of the attempts in, each expiring with its lease (a killed worker's slot frees itself)."""

    def __init__(self, client: redis.Redis, *, shop: str, max_in_flight: int | None) -> None:
        _, pause_key, inflight_key, sick_key = limiter_keys(shop)
        self._client = client
        self._keys = [inflight_key, pause_key]
        self._sick_keys = [pause_key, sick_key]
        self._cap = max_in_flight or 0
        self._gate: Any = client.register_script(_GATE)
        self._sick: Any = client.register_script(_SICK)

    def enter(self, holder: str, lease_seconds: float) -> float:
        """0 to go ahead; the pause's remaining seconds; ``FULL``. Open when Redis is away."""
        try:
            return float(self._gate(keys=self._keys, args=[self._cap, holder, lease_seconds]))
        except redis.RedisError as exc:
            log.warning("shop gate unavailable, letting the attempt in: %s", exc)
            return 0.0

    def leave(self, holder: str) -> None:
        """Free ``holder``'s slot."""
        if not self._cap:
            return
        try:
            self._client.zrem(self._keys[0], holder)
        except redis.RedisError as exc:  # the slot expires with its lease
            log.warning("could not free a shop slot: %s", exc)

    def unavailable(self, longest: float) -> float:
        """Pause every worker's attempts of the shop: as long as it has been failing."""
        try:
            args = [SICK_PAUSE_MIN, max(SICK_PAUSE_MIN, longest), SICK_MEMORY]
            return float(self._sick(keys=self._sick_keys, args=args))
        except redis.RedisError as exc:
            log.warning("could not share a shop's pause: %s", exc)
            return 0.0


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
    """``rate`` calls per second to one shop (``instance``: its name), with a burst, across all
    workers."""

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
        self._shop = instance
        self._keys = list(limiter_keys(instance)[:2])
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
                answer = self._gcra(keys=self._keys, args=[self._interval, self._burst])
            except redis.RedisError as exc:
                log.warning("rate limiter unavailable, letting the call through: %s", exc)
                break
            text = answer.decode() if isinstance(answer, bytes) else str(answer)
            wait = float(text.lstrip("p"))
            if wait <= 0:
                break
            if text.startswith("p") and wait > MAX_PAUSE_SLEEP:  # no thread sleeps through it
                raise ShopPaused(f"the shop is paused for {wait:.1f}s", retry_after=wait)
            if time.monotonic() + wait > deadline:
                metrics.rate_limit_refused(self._shop)
                raise MagentoRateLimited(
                    f"our shared Magento call limit has no room for {wait:.1f}s", retry_after=wait
                )
            waited = True
            time.sleep(wait)
        if waited:
            metrics.rate_limit_wait(time.monotonic() - started, self._shop)

    def pause(self, seconds: float) -> None:
        """Make every worker wait ``seconds`` before its next call to this instance."""
        metrics.rate_limit_pause(self._shop)
        try:
            self._pause(keys=self._keys[1:], args=[max(0.0, seconds)])
        except redis.RedisError as exc:
            log.warning("could not share a Magento pause: %s", exc)
