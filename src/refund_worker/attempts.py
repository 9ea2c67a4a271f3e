"""One attempt policy for refunds and emails: which errors retry, when, and when to give up.

Both services and the thin tasks ask this module, so every retry in the worker follows one rule
(compare dramatiq's ``middleware/retries.py``):

* ``PermanentError`` never retries; ``RetryableError`` retries with capped exponential backoff and
  jitter, at least its ``Retry-After`` (a 429 from Magento, or our shared limit);
* Magento's own 429 with ``Retry-After`` pauses every worker's calls to that shop
  (``pause_on_rate_limit``);
* an attempt whose outcome is unknown waits at least a Magento timeout plus a grace before the
  next one, so a slow commit lands before it is looked for;
* past the attempt cap a refund fails, unless Magento may have refunded: then it is never failed
  on a guess, only once a search has answered (the services handle that case);
* no countdown is ever longer than ``Settings.longest_countdown`` (the broker's visibility
  timeout is checked against it at start-up).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from refund_worker.errors import MagentoRateLimited, RetryableError
from refund_worker.ratelimit import CallLimiter
from refund_worker.settings import Settings

#: How long a refund waits for another refund of the same order to finish (times 1..2).
ORDER_BUSY_DELAY = 2.0
#: A retry's message may arrive this much before its due time (countdowns and clocks drift) and
#: still run; one that comes earlier is an older copy, and is dropped.
DUE_SLACK = timedelta(seconds=1)


@dataclass(frozen=True)
class AttemptPolicy:
    """Backoff, caps and waits of one state machine (refunds or emails)."""

    max_attempts: int
    backoff_base: float
    backoff_max: float
    #: The shortest wait after an attempt whose outcome is unknown.
    in_doubt_wait: float
    #: No countdown is longer (the visibility timeout is checked against it).
    longest_countdown: float
    #: A claim is trusted for a Magento call for this long without renewing its lease.
    call_window: float

    @classmethod
    def for_refunds(cls, settings: Settings) -> AttemptPolicy:
        """The refunds' policy."""
        return cls._from(settings, settings.max_attempts)

    @classmethod
    def for_emails(cls, settings: Settings) -> AttemptPolicy:
        """The customer emails' policy."""
        return cls._from(settings, settings.notification_max_attempts)

    @classmethod
    def _from(cls, settings: Settings, max_attempts: int) -> AttemptPolicy:
        return cls(
            max_attempts=max_attempts,
            backoff_base=settings.retry_backoff_base,
            backoff_max=settings.retry_backoff_max,
            in_doubt_wait=settings.longest_magento_timeout + settings.in_doubt_grace_seconds,
            longest_countdown=settings.longest_countdown,
            call_window=settings.longest_magento_timeout,
        )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Capped exponential backoff with jitter: base * 2**(attempt-1), capped, times 0.5..1."""
        raw = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempt - 1))
        return float(round(raw * (0.5 + rng.random() / 2), 3))

    def exhausted(self, attempt: int) -> bool:
        """Whether ``attempt`` was the last one allowed."""
        return attempt >= self.max_attempts

    def retry_delay(
        self, attempt: int, error: RetryableError, rng: random.Random, *, unknown: bool
    ) -> float:
        """Seconds until the next attempt after ``error`` ended ``attempt``."""
        delay = self.backoff(attempt, rng)
        if isinstance(error, MagentoRateLimited) and error.retry_after:
            delay = max(delay, error.retry_after + rng.random())
        if unknown:
            delay = max(delay, self.in_doubt_wait)
        return min(delay, self.longest_countdown)

    def paused_delay(self, wait: float, rng: random.Random) -> float:
        """When work for a shop paused for ``wait`` more seconds comes back (uncounted): spread
        between twice the pause and the pause plus half the longest countdown, so a shop that is
        down costs each refund or email a delivery every few tens of seconds, and is not hit by
        all of them at once when it is back."""
        longest = self.longest_countdown
        return min(longest, wait + rng.uniform(wait, max(wait, longest / 2)))

    def lease_covers_call(self, claimed_at: datetime, now: datetime) -> bool:
        """True while a lease granted at ``claimed_at`` is as good as a renewal for a call now.

        That is the first Magento timeout after the claim (normally the claim is milliseconds old
        when the call goes out): the call then starts with at least ``lease_seconds -
        magento_timeout`` of lease (three timeouts and more, checked at start-up), so the attempt
        cannot be taken over while it runs. An older claim is renewed, fenced, first.
        """
        return now - claimed_at < timedelta(seconds=self.call_window)


def pause_on_rate_limit(error: RetryableError, limiter: CallLimiter) -> None:
    """Magento's own 429 with ``Retry-After`` holds back every worker's calls to the shop."""
    if isinstance(error, MagentoRateLimited) and error.http_status == 429 and error.retry_after:
        limiter.pause(error.retry_after)


def order_busy_delay(rng: random.Random) -> float:
    """Seconds until a refund whose order has another refund in flight tries again."""
    return ORDER_BUSY_DELAY * (1 + rng.random())
