"""The shared Magento call limit on a real Redis: one budget for every worker, and a 429 from
Magento pauses all of them."""

from __future__ import annotations

import time

import pytest
import redis

from refund_worker.errors import MagentoRateLimited
from refund_worker.ratelimit import RedisCallLimiter, ShopPaused
from refund_worker.refunds import RefundService
from refund_worker.store import RefundStore
from tests.services.conftest import Env

pytestmark = pytest.mark.redis


def limiter(url: str, **options: float) -> RedisCallLimiter:
    return RedisCallLimiter(redis.Redis.from_url(url), instance="default",
                            **options)  # type: ignore[arg-type]


def test_two_workers_share_one_budget(redis_url: str) -> None:
    first, second = limiter(redis_url, rate=20, burst=1), limiter(redis_url, rate=20, burst=1)
    started = time.monotonic()
    for index in range(11):
        (first if index % 2 else second).acquire()
    elapsed = time.monotonic() - started
    assert 0.40 <= elapsed < 1.5  # ten intervals of 50 ms, whoever asks


def test_a_pause_holds_every_worker_back(redis_url: str) -> None:
    first, second = limiter(redis_url, rate=1000), limiter(redis_url, rate=1000)
    first.pause(0.6)
    started = time.monotonic()
    second.acquire()
    assert time.monotonic() - started >= 0.5


def test_no_room_within_max_wait_raises_a_retryable_error(redis_url: str) -> None:
    waiting = limiter(redis_url, rate=1000, max_wait=0.2)
    waiting.pause(5)
    with pytest.raises(MagentoRateLimited) as caught:
        waiting.acquire()
    assert caught.value.retry_after is not None
    assert 4 <= caught.value.retry_after <= 5
    assert caught.value.http_status is None  # ours, not Magento's: nobody else is paused


def test_without_redis_calls_go_through() -> None:
    closed = limiter("redis://127.0.0.1:1/0", rate=1)
    started = time.monotonic()
    closed.acquire()
    closed.pause(10)
    closed.acquire()
    assert time.monotonic() - started < 5


def test_a_429_from_magento_pauses_every_worker(env: Env, redis_url: str) -> None:
    shared = limiter(redis_url, rate=1000)
    settings = env.settings.model_copy(update={"retry_backoff_max": 5})
    service = RefundService(RefundStore(env.database), env.magento, settings, limiter=shared,
                            clock=env.clock)
    env.state.add_fault({"route": "order_get", "kind": "status", "status": 429,
                         "retry_after": 1, "count": 1})
    refund_id = env.enqueue(order_id=env.order()["order_id"])
    result = service.process(refund_id)
    assert result.status == "retrying"
    assert result.retry_in is not None
    assert result.retry_in >= 1
    pause_key = "refund-worker:pause:default"
    assert 500 < redis.Redis.from_url(redis_url).pttl(pause_key) <= 2000
    other_worker = limiter(redis_url, rate=1000)
    started = time.monotonic()
    other_worker.acquire()
    assert time.monotonic() - started >= 0.5


def test_a_long_retry_after_is_capped_at_the_longest_countdown(env: Env) -> None:
    env.state.add_fault({"route": "order_get", "kind": "status", "status": 429,
                         "retry_after": 3600, "count": 1})
    refund_id = env.enqueue(order_id=env.order()["order_id"])
    result = env.refunds().process(refund_id)
    assert result.retry_in == env.settings.longest_countdown


def test_waits_are_counted_once_per_call_with_their_time(redis_url: str) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:  # the limiter counts under its shop's name
        return REGISTRY.get_sample_value(name, {"shop": "default", **labels}) or 0.0

    waits = sample("refund_worker_ratelimit_waits_total", outcome="waited")
    refused = sample("refund_worker_ratelimit_waits_total", outcome="refused")
    seconds = sample("refund_worker_ratelimit_wait_seconds_total")
    pauses = sample("refund_worker_ratelimit_pauses_total")
    shared = limiter(redis_url, rate=10, burst=1)
    for _ in range(4):  # two go at once (a burst of one), the next two wait about 100 ms each
        shared.acquire()
    assert sample("refund_worker_ratelimit_waits_total", outcome="waited") == waits + 2
    waited = sample("refund_worker_ratelimit_wait_seconds_total") - seconds
    assert 0.12 <= waited < 1.0
    impatient = limiter(redis_url, rate=1000, max_wait=0.1)
    impatient.pause(0.5)  # short enough to sleep through, longer than this caller may wait
    with pytest.raises(MagentoRateLimited):
        impatient.acquire()
    assert sample("refund_worker_ratelimit_waits_total", outcome="refused") == refused + 1
    assert sample("refund_worker_ratelimit_pauses_total") == pauses + 1
    impatient.pause(5)  # a long pause defers the refund (ShopPaused) and is not a refusal
    with pytest.raises(ShopPaused):
        impatient.acquire()
    assert sample("refund_worker_ratelimit_waits_total", outcome="refused") == refused + 1
