"""The thin tasks never acknowledge a message away when the database fails them: they retry,
and show the failure by its type only (SQLAlchemy's text carries SQL and parameters)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from refund_worker import tasks
from refund_worker.errors import DatabaseUnavailable
from refund_worker.runtime import set_runtime


class Retried(Exception):
    """Stands in for Celery's ``Retry``: what ``task.retry`` raises."""


class Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def process(self, refund_id: str) -> Any:
        raise self.error

    send = process


@pytest.mark.parametrize("task_name", ["process_refund", "notify_customer"])
@pytest.mark.parametrize(
    "error",
    [
        ProgrammingError("SELECT secret_column FROM refunds", {"p": "x"}, Exception("no table")),
        OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        DatabaseUnavailable("database unavailable: OperationalError"),
    ],
)
def test_a_database_failure_retries_the_message(
    monkeypatch: pytest.MonkeyPatch, task_name: str, error: Exception
) -> None:
    task = getattr(tasks, task_name)
    retried: dict[str, Any] = {}

    def retry(**kwargs: Any) -> Exception:
        retried.update(kwargs)
        return Retried()

    monkeypatch.setattr(task, "retry", retry)
    failing = Failing(error)
    set_runtime(SimpleNamespace(  # type: ignore[arg-type]
        refunds=failing, notifications=failing,
        settings=SimpleNamespace(in_doubt_grace_seconds=7.0, broker_kind="redis"),
    ))
    try:
        with pytest.raises(Retried):
            task("0b7c5a8e-2f1d-4c3b-9a6e-5d4c3b2a1f0e")
    finally:
        set_runtime(None)
    assert retried["countdown"] == 7.0
    assert retried["max_retries"] is None
    shown = retried["exc"]
    assert isinstance(shown, DatabaseUnavailable)
    assert "SELECT" not in str(shown)


def test_countdowns_are_whole_seconds_on_rabbitmq() -> None:
    """Celery's native delayed delivery (RabbitMQ quorum queues) counts whole seconds and
    refuses less than one: a countdown is rounded up there, kept as it is on Redis."""
    from refund_worker.celery_app import countdown

    rabbit, redis = SimpleNamespace(broker_kind="amqp"), SimpleNamespace(broker_kind="redis")
    assert countdown(rabbit, 0.2) == 1.0  # type: ignore[arg-type]
    assert countdown(rabbit, 2.5) == 3.0  # type: ignore[arg-type]
    assert countdown(rabbit, 0) == 0  # type: ignore[arg-type]
    assert countdown(redis, 0.2) == 0.2  # type: ignore[arg-type]
