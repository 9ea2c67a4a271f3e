"""Start-up refuses a visibility timeout that Redis would undercut: a message waiting for its
countdown, or held by a task for up to a lease, must never be handed to a second worker."""

from __future__ import annotations

import pytest

from refund_worker.celery_app import check_visibility_timeout, create_app
from refund_worker.errors import ConfigurationError
from refund_worker.settings import load_settings
from tests.services.conftest import fast_settings


def test_the_longest_countdown_covers_backoff_and_the_in_doubt_wait() -> None:
    assert fast_settings(retry_backoff_max=300, visibility_timeout=400).longest_countdown == 300
    slow = fast_settings(retry_backoff_max=1, magento_timeout=10, in_doubt_grace_seconds=20,
                         lease_seconds=60, visibility_timeout=200)
    assert slow.longest_countdown == 30


def test_settings_refuse_a_visibility_timeout_below_countdown_plus_lease() -> None:
    with pytest.raises(ConfigurationError, match="REFUND_WORKER_VISIBILITY_TIMEOUT"):
        load_settings(retry_backoff_max=300, lease_seconds=120, visibility_timeout=420)
    # Above backoff + lease, but below the in-doubt wait (timeout + grace) + lease:
    with pytest.raises(ConfigurationError, match="IN_DOUBT_GRACE_SECONDS"):
        load_settings(retry_backoff_max=5, magento_timeout=30, in_doubt_grace_seconds=60,
                      lease_seconds=125, visibility_timeout=200, _env_file=None)
    assert load_settings(retry_backoff_max=300, lease_seconds=120,
                         visibility_timeout=421).visibility_timeout == 421


@pytest.mark.parametrize("option", ["broker_transport_options"])
def test_the_worker_refuses_to_start_when_celery_was_configured_otherwise(option: str) -> None:
    settings = fast_settings()
    app = create_app(settings)
    check_visibility_timeout(app, settings)  # as configured from settings: fine
    app.conf[option] = {"visibility_timeout": settings.longest_countdown
                        + settings.lease_seconds}
    with pytest.raises(RuntimeError, match=option):
        check_visibility_timeout(app, settings)
    app.conf[option] = {}
    with pytest.raises(RuntimeError, match="is None"):
        check_visibility_timeout(app, settings)
