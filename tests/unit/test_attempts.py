"""The one attempt policy: backoff with jitter and a cap, Retry-After, the in-doubt wait, and
when the claim's own lease is trusted for the refund call."""

from __future__ import annotations

import random
from datetime import timedelta

from refund_worker.attempts import AttemptPolicy, pause_on_rate_limit
from refund_worker.errors import MagentoRateLimited, MagentoUnavailable
from refund_worker.models import utcnow
from refund_worker.settings import Settings

SETTINGS = Settings(
    magento_url="http://unused",
    magento_token="t0ken",
    magento_timeout=10,
    lease_seconds=120,
    retry_backoff_base=2,
    retry_backoff_max=60,
    in_doubt_grace_seconds=15,
    max_attempts=5,
    notification_max_attempts=3,
    _env_file=None,  # type: ignore[call-arg]
)


def test_the_claims_lease_is_trusted_for_one_magento_timeout() -> None:
    policy = AttemptPolicy.for_refunds(SETTINGS)
    claimed_at = utcnow()

    def covered(age: float) -> bool:
        return policy.lease_covers_call(claimed_at, claimed_at + timedelta(seconds=age))

    assert covered(0)
    assert covered(9.999)
    assert not covered(10)  # from here on the lease is renewed first
    assert not covered(121)


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = AttemptPolicy.for_refunds(SETTINGS)
    rng = random.Random(7)
    for attempt, raw in [(1, 2), (2, 4), (3, 8), (6, 60), (30, 60)]:
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert min(delays) >= raw / 2
        assert max(delays) <= raw
        assert max(delays) - min(delays) > raw / 4  # jittered, not fixed


def test_retry_delay_honours_retry_after_the_in_doubt_wait_and_the_longest_countdown() -> None:
    policy = AttemptPolicy.for_refunds(SETTINGS)
    rng = random.Random(1)
    busy = MagentoRateLimited("429", retry_after=40, http_status=429)
    assert 40 <= policy.retry_delay(1, busy, rng, unknown=False) <= 41
    timeout = MagentoUnavailable("timed out", outcome_unknown=True)
    assert policy.retry_delay(1, timeout, rng, unknown=True) >= 25  # timeout + grace
    huge = MagentoRateLimited("429", retry_after=10_000, http_status=429)
    assert policy.retry_delay(1, huge, rng, unknown=False) == SETTINGS.longest_countdown


def test_each_machine_has_its_own_cap() -> None:
    assert AttemptPolicy.for_refunds(SETTINGS).exhausted(5)
    assert not AttemptPolicy.for_refunds(SETTINGS).exhausted(4)
    assert AttemptPolicy.for_emails(SETTINGS).exhausted(3)


def test_only_magentos_own_429_pauses_every_worker() -> None:
    paused: list[float] = []

    class Limiter:
        def acquire(self) -> None: ...
        def pause(self, seconds: float) -> None:
            paused.append(seconds)

    pause_on_rate_limit(MagentoRateLimited("429", retry_after=5, http_status=429), Limiter())
    pause_on_rate_limit(MagentoRateLimited("ours", retry_after=5), Limiter())  # our own limit
    pause_on_rate_limit(MagentoUnavailable("503", http_status=503), Limiter())
    assert paused == [5]
