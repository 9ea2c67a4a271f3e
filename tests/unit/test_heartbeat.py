"""The sweep's heartbeat: a worker parks refunds only while a sweep ran lately."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from refund_worker import heartbeat
from refund_worker.heartbeat import KEY, NoSweep, SweepHeartbeat


def test_alive_after_a_sweep_until_three_intervals_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    client = fakeredis.FakeRedis()
    watch = SweepHeartbeat(client, interval=5)
    monkeypatch.setattr(heartbeat, "READ_EVERY", 0.0)
    assert not watch.alive()
    watch.beat()
    assert watch.alive()
    assert 14_000 < client.pttl(KEY) <= 15_000  # three sweep intervals
    client.delete(KEY)  # the intervals passed with no sweep (beat stopped)
    assert not watch.alive()


def test_a_reading_is_trusted_for_a_second() -> None:
    client = fakeredis.FakeRedis()
    watch = SweepHeartbeat(client, interval=5)
    assert not watch.alive()
    watch.beat()
    assert not watch.alive()  # read less than a second ago


class _Away(fakeredis.FakeRedis):
    def exists(self, *names: object) -> int:
        raise redis.ConnectionError("away")

    def set(self, *args: object, **kwargs: object) -> bool:
        raise redis.ConnectionError("away")


def test_no_redis_or_redis_away_means_no_sweep_is_trusted() -> None:
    assert not SweepHeartbeat(None, interval=5).alive()
    SweepHeartbeat(None, interval=5).beat()  # nothing to note it in: nothing happens
    away = SweepHeartbeat(_Away(), interval=5)
    away.beat()  # logged, not raised: a sweep never fails for its heartbeat
    assert not away.alive()
    assert not NoSweep().alive()


def test_beat_starting_says_sweeps_will_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beat's start sets the heartbeat (its first sweep is an interval away); a Redis that
    cannot be reached only costs the heartbeat, never beat's start."""
    from refund_worker import celery_app, runtime
    from refund_worker.errors import ConfigurationError
    from refund_worker.settings import Settings

    client = fakeredis.FakeRedis()
    monkeypatch.setattr(runtime, "limiter_redis", lambda settings: client)
    settings = Settings(_env_file=None, sweep_interval_seconds=10)  # type: ignore[call-arg]
    celery_app._sweeps_will_run(settings)
    assert 29_000 < client.pttl(KEY) <= 30_000

    def unreachable(settings: Settings) -> None:
        raise ConfigurationError("cannot reach the Redis of REFUND_WORKER_REDIS_URL")

    monkeypatch.setattr(runtime, "limiter_redis", unreachable)
    celery_app._sweeps_will_run(settings)  # logged, not raised
