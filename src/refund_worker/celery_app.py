"""The Celery app: ``celery -A refund_worker.celery_app worker`` or ``refund-worker worker``.

Redis delivers at least once. Every setting here serves the two promises:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after its
  task ran, so a killed worker's refund is delivered again (and then reconciled, not repeated);
* the broker's visibility timeout is set from the settings, and start-up checks
  it exceeds the longest retry countdown (``Settings.longest_countdown``; every countdown is capped
  at it) plus the lease (else Redis would redeliver a message that is only waiting for its
  countdown);
* the sweeper has a queue of its own that every worker consumes whatever its ``-Q``: in the
  refunds queue it would wait behind the backlog (and expire there) exactly when a Redis restart
  or a crash makes it needed;
* so have the notification emails (``refunds.notify``): kombu's Redis transport takes from a
  worker's queues in turn, so an email goes out soon after its refund instead of behind a bulk
  import's whole backlog, and no ``-Q`` can leave emails unconsumed;
* task events are on so Flower sees every task; results are not stored (the database is the
  source of truth, and a result backend would only duplicate it);
* a worker survives the broker dying under running tasks (:mod:`refund_worker.broker_fixes`).
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery
from celery.signals import beat_init, celeryd_after_setup, worker_init, worker_process_init

from refund_worker import broker_fixes
from refund_worker.errors import ConfigurationError
from refund_worker.settings import Settings, get_settings

broker_fixes.apply()

QUEUE = "refunds"
NOTIFY_QUEUE = "refunds.notify"
SWEEP_QUEUE = "refunds.sweep"
PROCESS_TASK = "refunds.process"
NOTIFY_TASK = "refunds.notify"
SWEEP_TASK = "refunds.sweep"
PRUNE_TASK = "refunds.prune"
#: How often beat runs the prune when ``Settings.prune_after_days`` is set.
PRUNE_INTERVAL_SECONDS = 24 * 3600
#: Each task's queue: ``task_routes`` for ``send_task``, and ``publishing.publish``'s own messages.
TASK_QUEUES = {
    PROCESS_TASK: QUEUE,
    NOTIFY_TASK: NOTIFY_QUEUE,
    SWEEP_TASK: SWEEP_QUEUE,
    PRUNE_TASK: SWEEP_QUEUE,
}
#: Queues every worker consumes on top of its ``-Q``.
ALWAYS_CONSUMED = (NOTIFY_QUEUE, SWEEP_QUEUE)


def configure(app: Celery, settings: Settings) -> None:
    """Apply every setting derived from ``settings`` to ``app``."""
    transport_options = {"visibility_timeout": settings.visibility_timeout}
    app.conf.update(
        broker_url=settings.broker_dsn,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_default_queue=QUEUE,
        task_routes={task: {"queue": queue} for task, queue in TASK_QUEUES.items()},
        task_track_started=False,
        worker_prefetch_multiplier=4,
        worker_send_task_events=True,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        beat_schedule=beat_schedule(settings),
    )


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The sweeper every ``sweep_interval_seconds``; the history prune once a day, only when
    ``prune_after_days`` is set (off by default)."""
    schedule: dict[str, dict[str, Any]] = {
        "sweep-stranded-refunds": {
            "task": SWEEP_TASK,
            "schedule": settings.sweep_interval_seconds,
            "options": {"expires": settings.sweep_interval_seconds, "queue": SWEEP_QUEUE},
        }
    }
    if settings.prune_after_days is not None:
        schedule["prune-settled-history"] = {
            "task": PRUNE_TASK,
            "schedule": PRUNE_INTERVAL_SECONDS,
            "options": {"expires": PRUNE_INTERVAL_SECONDS, "queue": SWEEP_QUEUE},
        }
    return schedule


def check_visibility_timeout(app: Celery, settings: Settings) -> None:
    """Refuse to start when the effective visibility timeouts are shorter than retries need.

    A message waiting for its countdown (at most ``settings.longest_countdown``) or held by a
    task that runs for up to a lease must not be handed to a second worker by Redis meanwhile.
    """
    needed = settings.longest_countdown + settings.lease_seconds
    value = (app.conf.get("broker_transport_options") or {}).get("visibility_timeout")
    if value is None or float(value) <= needed:
        raise RuntimeError(
            f"broker_transport_options['visibility_timeout'] is {value}; it must exceed the "
            f"longest retry countdown + lease_seconds = {needed:g}"
        )


def create_app(settings: Settings | None = None) -> Celery:
    """A configured Celery app with the refund tasks registered."""
    settings = settings or get_settings()
    celery_app = Celery("refund_worker", include=["refund_worker.tasks"])
    configure(celery_app, settings)
    return celery_app


app = create_app()


@worker_init.connect
def _check_at_start(sender: Any = None, **_: Any) -> None:
    """Size the database pool to the worker's concurrency, and fail fast on an unusable
    configuration, before the first task is taken."""
    from refund_worker.runtime import get_runtime, set_task_slots

    concurrency = getattr(sender, "concurrency", None)
    set_task_slots(concurrency if isinstance(concurrency, int) else None)
    try:
        runtime = get_runtime()
        check_visibility_timeout(app, runtime.settings)
        runtime.check_ready()
    except (ConfigurationError, RuntimeError) as exc:
        _refuse_to_start(exc)


@beat_init.connect
def _check_beat_at_start(**_: Any) -> None:
    """Beat schedules the sweeper; it refuses to start on settings or a database that cannot
    work, like the worker."""
    from refund_worker.db import Database

    try:
        settings = get_settings()
        check_visibility_timeout(app, settings)
        database = Database.from_url(settings.database_dsn, pool_size=1)
        try:
            database.prepare()
        finally:
            database.dispose()
    except (ConfigurationError, RuntimeError) as exc:
        _refuse_to_start(exc)


def _refuse_to_start(exc: Exception) -> None:
    """One line on stderr, exit code 2. Celery logs and swallows exceptions from signal
    handlers, so this raises ``SystemExit``, which stops the process."""
    print(f"refund-worker: cannot start: {exc}", file=sys.stderr)
    raise SystemExit(2) from exc


@celeryd_after_setup.connect
def _consume_own_queues(instance: Any, **_: Any) -> None:
    """Every worker consumes the emails' and the sweeper's queues too, whatever its ``-Q``."""
    for queue in ALWAYS_CONSUMED:
        instance.app.amqp.queues.select_add(queue)


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """Connections must not cross a fork (prefork pool)."""
    from refund_worker.runtime import reset_runtime

    reset_runtime()
