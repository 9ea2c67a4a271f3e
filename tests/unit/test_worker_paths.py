"""Small pieces of the worker's hot path: when the claim's own lease is trusted for the refund
call."""

from __future__ import annotations

from datetime import timedelta

from refund_worker.models import utcnow
from refund_worker.refunds import lease_covers_call
from refund_worker.settings import Settings


def test_the_claims_lease_is_trusted_for_one_magento_timeout() -> None:
    settings = Settings(
        magento_url="http://unused",
        magento_token="t0ken",
        magento_timeout=10,
        lease_seconds=120,
        _env_file=None,
    )
    claimed_at = utcnow()

    def covered(age: float) -> bool:
        return lease_covers_call(settings, claimed_at, claimed_at + timedelta(seconds=age))

    assert covered(0)
    assert covered(9.999)
    assert not covered(10)  # from here on the lease is renewed first
    assert not covered(121)
