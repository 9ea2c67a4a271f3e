"""The worker's consumer class (``worker_consumer``), loaded by the worker alone.

RabbitMQ fix: Celery registers the task-event connection with the worker's event loop so that the
loop reads the broker's heartbeats on it, while pool threads publish task events on that same
connection. With publisher confirms (``confirm_publish``) a publishing thread then waits to *read*
the broker's ``basic.ack``, and the loop may read it first: the thread waits forever holding the
event dispatcher's lock, and every task that ends waits behind it (found by
``bench/fault_run.py --broker amqp``: 136 of 201 refunds stalled). Events only feed monitoring, so
their connection publishes without confirms; tasks, retries and emails keep them.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer
from kombu.connection import Connection


class EventsWithoutConfirms(Consumer):  # type: ignore[misc]
    """Celery's consumer, whose task-event connection never waits for publisher confirms."""

    def connection_for_write(self, url: str | None = None, heartbeat: float | None = None) -> Any:
        """The connection Celery's ``Events`` step publishes on (its only caller)."""
        connection: Connection = self.app.connection_for_write(url=url, heartbeat=heartbeat)
        options = connection.transport_options or {}
        if options.get("confirm_publish"):
            connection = connection.clone(  # type: ignore[no-untyped-call]
                transport_options={**options, "confirm_publish": False}
            )
        return self.ensure_connected(connection)
