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


AMQP = "amqp://guest:pw-in-url@rabbit.example:5672/refunds"


def test_on_rabbitmq_the_consumer_timeout_must_cover_countdown_plus_lease() -> None:
    """RabbitMQ closes the channel of a consumer holding a message longer than its consumer
    timeout: the same bound as Redis's visibility timeout, named by its own setting."""
    with pytest.raises(ConfigurationError, match="REFUND_WORKER_CONSUMER_TIMEOUT") as caught:
        load_settings(broker_url=AMQP, retry_backoff_max=300, lease_seconds=120,
                      consumer_timeout=420, _env_file=None)
    assert "pw-in-url" not in str(caught.value)
    settings = load_settings(broker_url=AMQP, retry_backoff_max=300, lease_seconds=120,
                             consumer_timeout=421, _env_file=None)
    check_visibility_timeout(create_app(settings), settings)  # RabbitMQ: the consumer timeout
    # On Redis the consumer timeout means nothing and is not checked.
    assert load_settings(retry_backoff_max=300, lease_seconds=120, consumer_timeout=1,
                         _env_file=None).consumer_timeout == 1


def test_rabbitmq_gets_quorum_queues_confirmed_publishes_and_per_consumer_prefetch() -> None:
    settings = load_settings(broker_url=AMQP, _env_file=None)
    conf = create_app(settings).conf
    queues = {queue.name: queue for queue in conf.task_queues}
    assert set(queues) == {"refunds", "refunds.notify", "refunds.sweep", "webhooks"}
    for name, queue in queues.items():
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
        assert queue.durable
        assert queue.exchange.type == "topic"  # native delayed delivery needs it
        assert queue.routing_key == name
    assert conf.broker_transport_options == {"confirm_publish": True}
    assert conf.worker_detect_quorum_queues is True
    assert conf.task_acks_late is True
    # Redis keeps its own configuration.
    redis_conf = create_app(load_settings(_env_file=None)).conf
    assert not redis_conf.task_queues
    assert "visibility_timeout" in redis_conf.broker_transport_options


def test_beside_rabbitmq_a_rate_limit_needs_a_redis_of_its_own() -> None:
    from refund_worker.runtime import Runtime

    base = {"broker_url": AMQP, "magento_url": "http://shop", "magento_token": "tok-real",
            "database_url": "sqlite://", "_env_file": None}
    with pytest.raises(ConfigurationError, match="REFUND_WORKER_REDIS_URL"):
        Runtime.from_settings(load_settings(**base))
    with pytest.raises(ConfigurationError, match="cannot reach the Redis of REFUND_WORKER_REDIS"):
        Runtime.from_settings(load_settings(**base, redis_url="redis://127.0.0.1:1/0"))
    runtime = Runtime.from_settings(load_settings(**base, magento_rate_limit=0))
    runtime.close()
    with pytest.raises(ConfigurationError, match="REFUND_WORKER_REDIS_URL: not a Redis URL"):
        load_settings(**base, redis_url=AMQP)
