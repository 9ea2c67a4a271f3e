"""On RabbitMQ the worker's task events go on a connection without publisher confirms, while
everything else the worker publishes keeps them (``refund_worker.worker_consumer``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from celery import Celery

from refund_worker.celery_app import configure
from refund_worker.settings import Settings
from refund_worker.worker_consumer import EventsWithoutConfirms


def _app(broker_url: str) -> Celery:
    app = Celery("t", set_as_current=False)
    configure(app, Settings(broker_url=broker_url, _env_file=None))  # type: ignore[call-arg]
    return app


def _events_connection(app: Celery) -> Any:
    consumer = SimpleNamespace(app=app, ensure_connected=lambda connection: connection)
    return EventsWithoutConfirms.connection_for_write(consumer, heartbeat=10)  # type: ignore[arg-type]


def test_amqp_events_publish_without_confirms_and_tasks_with_them() -> None:
    app = _app("amqp://guest:guest@127.0.0.1:5672//")
    assert app.conf.worker_consumer == "refund_worker.worker_consumer:EventsWithoutConfirms"
    assert app.connection_for_write().transport_options["confirm_publish"] is True
    events = _events_connection(app)
    assert events.transport_options["confirm_publish"] is False
    assert events.heartbeat == 10
    assert events.as_uri() == app.connection_for_write().as_uri()


def test_redis_keeps_celerys_consumer_and_its_connection() -> None:
    app = _app("redis://127.0.0.1:6379/0")
    assert app.conf.worker_consumer == "celery.worker.consumer:Consumer"
    assert "confirm_publish" not in _events_connection(app).transport_options
