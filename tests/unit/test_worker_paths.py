"""Small pieces of the worker's hot path: the marker built without the row, when the claim's own
lease is trusted for the refund call, and httpx's per-request log lines silenced."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import pytest
from celery.signals import worker_init

from refund_worker import celery_app
from refund_worker.models import Refund, utcnow
from refund_worker.refunds import lease_covers_call, marker_for
from refund_worker.settings import Settings


def test_the_marker_is_the_one_the_refund_row_gives() -> None:
    refund_id = "0b7c5a8e-2f1d-4c3b-9a6e-5d4c3b2a1f0e"
    assert marker_for(refund_id) == Refund(id=refund_id).marker


def test_the_claims_lease_is_trusted_for_one_magento_timeout() -> None:
    settings = Settings(magento_url="http://unused", magento_token="t0ken", magento_timeout=10,
                        lease_seconds=120, _env_file=None)
    claimed_at = utcnow()

    def covered(age: float) -> bool:
        return lease_covers_call(settings, claimed_at, claimed_at + timedelta(seconds=age))

    assert covered(0)
    assert covered(9.999)
    assert not covered(10)  # from here on the lease is renewed first
    assert not covered(121)


@pytest.fixture
def httpx_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("httpx")
    level = logger.level
    logger.setLevel(logging.NOTSET)
    try:
        yield logger
    finally:
        logger.setLevel(level)


@pytest.mark.parametrize(("worker_level", "request_lines"), [
    (logging.INFO, False), (logging.WARNING, False), (logging.DEBUG, True)])
def test_the_worker_silences_httpx_request_logs_unless_it_runs_at_debug(
    httpx_logger: logging.Logger, worker_level: int, request_lines: bool
) -> None:
    assert celery_app._quiet_http_logs in worker_init._live_receivers(None)
    celery_app._quiet_http_logs(sender=SimpleNamespace(loglevel=worker_level))
    assert httpx_logger.level == (logging.NOTSET if request_lines else logging.WARNING)
