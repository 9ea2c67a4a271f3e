"""The lease renewal before the money-moving call: skipped while the claim's own lease still
outlasts the call, done (and fenced) once the claim is older, for refunds and emails alike."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from refund_worker.models import OrderLock
from refund_worker.notifications import NotificationService
from refund_worker.ratelimit import NoLimit
from refund_worker.refunds import AttemptResult
from refund_worker.store import EmailStore
from tests.services.conftest import Env


def renewal_margin(env: Env) -> float:
    """Seconds after the claim up to which the claim's lease is trusted: one Magento timeout."""
    return env.settings.magento_timeout


def order_lock_expiry(env: Env, order_id: int) -> datetime:
    with env.database.session_scope() as session:
        expiry = session.scalar(select(OrderLock.expires_at).where(OrderLock.order_id == order_id))
        assert expiry is not None
        return expiry


@pytest.mark.parametrize(("offset", "renewed"), [(None, False), (-0.001, False), (0.0, True)])
def test_a_refund_renews_its_lease_only_once_the_claim_is_old(
    env: Env, offset: float | None, renewed: bool
) -> None:
    """The claim is ``margin + offset`` seconds old when the refund call goes out (``None``: not
    aged at all). Under the margin the claim's own lease is left as it is; from it on, the
    lease and the order lock are renewed for a full ``lease_seconds``."""
    order = env.order()
    refund_id = env.enqueue(order_id=order["order_id"])
    claimed_at = env.clock.now
    age = 0.0 if offset is None else renewal_margin(env) + offset
    seen: dict[str, datetime | None] = {}

    def age_the_claim(original: Any, *args: Any, **kwargs: Any) -> Any:
        env.clock.advance(age)
        return original(*args, **kwargs)

    def look_at_the_lease(original: Any, *args: Any, **kwargs: Any) -> Any:
        seen["lease"] = env.row(refund_id).lease_expires_at
        seen["lock"] = order_lock_expiry(env, order["order_id"])
        return original(*args, **kwargs)

    env.overrides["get_order"] = age_the_claim
    env.overrides["refund_order"] = look_at_the_lease
    result = env.refunds().process(refund_id)

    assert result.status == "succeeded"
    lease = timedelta(seconds=env.settings.lease_seconds)
    expected = (claimed_at + timedelta(seconds=age) if renewed else claimed_at) + lease
    assert seen == {"lease": expected, "lock": expected}
    assert env.refund_calls() == 1


class ClockLimiter(NoLimit):
    """A limiter whose wait runs ``on_acquire`` (moves the clock, lets another worker in)."""

    def __init__(self, on_acquire: Callable[[], None]) -> None:
        self.on_acquire = on_acquire

    def acquire(self) -> None:
        self.on_acquire()


def notifier(env: Env, on_acquire: Callable[[], None]) -> NotificationService:
    return NotificationService(EmailStore(env.database), env.magento, env.settings,
                               clock=env.clock, limiter=ClockLimiter(on_acquire))


def notified_refund(env: Env) -> str:
    refund_id = env.enqueue(order_id=env.order()["order_id"], notify_customer=True)
    assert env.refunds().process(refund_id).status == "succeeded"
    return refund_id


@pytest.mark.parametrize("renewed", [False, True])
def test_an_email_renews_its_lease_only_once_the_claim_is_old(env: Env, renewed: bool) -> None:
    refund_id = notified_refund(env)
    claimed_at = env.clock.now
    age = renewal_margin(env) - (0.0 if renewed else 0.001)  # at the margin: renewed
    seen: list[datetime | None] = []

    def look_at_the_lease(original: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(env.row(refund_id).notification_lease_expires_at)
        return original(*args, **kwargs)

    env.overrides["send_creditmemo_email"] = look_at_the_lease
    result = notifier(env, lambda: env.clock.advance(age)).send(refund_id)

    assert result.status == "sent"
    lease = timedelta(seconds=env.settings.lease_seconds)
    expected = (claimed_at + timedelta(seconds=age) if renewed else claimed_at) + lease
    assert seen == [expected]
    assert len(env.state.emails()) == 1


def test_an_old_email_claim_taken_over_meanwhile_is_not_sent(env: Env) -> None:
    refund_id = notified_refund(env)
    other: list[AttemptResult] = []

    def stall_and_be_taken_over() -> None:
        env.clock.advance(env.settings.lease_seconds + 1)
        other.append(env.notifications().send(refund_id))

    stalled = notifier(env, stall_and_be_taken_over).send(refund_id)
    assert other[0].status == "sent"
    assert (stalled.status, stalled.detail) == ("sending", "lease lost; not sent")
    assert len(env.state.emails()) == 1
    assert env.row(refund_id).notification_status == "sent"
