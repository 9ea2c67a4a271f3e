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
* and so have webhook deliveries (``webhooks.deliver``), for the same reason; a slow receiver
  holds one task slot for at most ``REFUND_WORKER_WEBHOOK_TIMEOUT`` per read;
* task events are on so Flower sees every task; results are not stored (the database is the
  source of truth, and a result backend would only duplicate it);
* a worker survives the broker dying under running tasks (:mod:`refund_worker.broker_fixes`).

On RabbitMQ (``amqp://``) the three queues are durable **quorum** queues (replicated, no
priorities, no global QoS: Celery's ``worker_detect_quorum_queues`` makes the prefetch
per consumer), each bound to a topic exchange of its name so that retries with a countdown go
through Celery's native delayed delivery (the ``celery_delayed_*`` queues) instead of waiting
unacknowledged in the worker; publishes are confirmed by the broker (``confirm_publish``) except
task events' (:mod:`refund_worker.worker_consumer`: with confirms a worker can stall), and
start-up checks that RabbitMQ's consumer timeout, like Redis's visibility timeout, exceeds the
longest countdown plus the lease (docs/operations.md, "Which broker").
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from celery import Celery
from celery.signals import beat_init, celeryd_after_setup, worker_init, worker_process_init

from refund_worker import broker_fixes
from refund_worker.errors import ConfigurationError
from refund_worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

broker_fixes.apply()

QUEUE = "refunds"
NOTIFY_QUEUE = "refunds.notify"
SWEEP_QUEUE = "refunds.sweep"
WEBHOOK_QUEUE = "webhooks"
PROCESS_TASK = "refunds.process"
NOTIFY_TASK = "refunds.notify"
SWEEP_TASK = "refunds.sweep"
WEBHOOK_TASK = "webhooks.deliver"
PRUNE_TASK = "refunds.prune"
#: How often beat runs the prune when ``Settings.prune_after_days`` is set.
PRUNE_INTERVAL_SECONDS = 24 * 3600
#: Each task's queue: ``task_routes`` for ``send_task``, and ``publishing.publish``'s own messages.
TASK_QUEUES = {
    PROCESS_TASK: QUEUE,
    NOTIFY_TASK: NOTIFY_QUEUE,
    SWEEP_TASK: SWEEP_QUEUE,
    WEBHOOK_TASK: WEBHOOK_QUEUE,
    PRUNE_TASK: SWEEP_QUEUE,
}
#: Queues every worker consumes on top of its ``-Q``.
ALWAYS_CONSUMED = (NOTIFY_QUEUE, SWEEP_QUEUE, WEBHOOK_QUEUE)


#: Arguments of every queue on RabbitMQ.
QUORUM = {"x-queue-type": "quorum"}


def amqp_queues() -> list[Any]:
    """The four queues as RabbitMQ quorum queues, each bound to a topic exchange of its name
    (native delayed delivery needs one; messages published to the default exchange with the
    queue's name as routing key arrive too)."""
    from kombu.entity import Exchange, Queue

    return [
        Queue(  # type: ignore[no-untyped-call]
            name,
            Exchange(name, type="topic"),  # type: ignore[no-untyped-call]
            routing_key=name,
            queue_arguments=QUORUM,
            durable=True,
        )
        for name in (QUEUE, NOTIFY_QUEUE, SWEEP_QUEUE, WEBHOOK_QUEUE)
    ]


def configure(app: Celery, settings: Settings) -> None:
    """Apply every setting derived from ``settings`` to ``app``."""
    transport_options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if settings.broker_kind == "amqp":
        transport_options = {"confirm_publish": True}
        app.conf.update(
            task_queues=amqp_queues(),
            task_create_missing_queues=False,
            worker_detect_quorum_queues=True,
            broker_native_delayed_delivery_queue_type="quorum",
            worker_consumer="refund_worker.worker_consumer:EventsWithoutConfirms",
        )
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
    On RabbitMQ the same bound holds for its consumer timeout (``check_consumer_timeout``).
    """
    needed = settings.longest_countdown + settings.lease_seconds
    if settings.broker_kind == "amqp":
        check_consumer_timeout(settings)
        return
    value = (app.conf.get("broker_transport_options") or {}).get("visibility_timeout")
    if value is None or float(value) <= needed:
        raise RuntimeError(
            f"broker_transport_options['visibility_timeout'] is {value}; it must exceed the "
            f"longest retry countdown + lease_seconds = {needed:g}"
        )


def check_consumer_timeout(settings: Settings) -> None:
    """RabbitMQ closes the channel of a consumer that holds a message unacknowledged longer
    than its ``consumer_timeout`` (every message on it is then delivered again). A message is
    held while its task runs (a lease at most) and, when prefetched behind running tasks or
    waiting for its countdown, up to the longest countdown: ``CONSUMER_TIMEOUT`` (what the
    server's is) must exceed both. RabbitMQ < 3.12 tells no client its value; see
    docs/operations.md for how to set and verify it."""
    needed = settings.longest_countdown + settings.lease_seconds
    if settings.consumer_timeout <= needed:
        raise RuntimeError(
            f"REFUND_WORKER_CONSUMER_TIMEOUT is {settings.consumer_timeout}; it must exceed the "
            f"longest retry countdown + lease_seconds = {needed:g}"
        )


def countdown(settings: Settings, seconds: float) -> float:
    """A retry's countdown as the broker can honour it: whole seconds (rounded up) on RabbitMQ,
    whose native delayed delivery counts in seconds and refuses less than one."""
    if settings.broker_kind == "amqp" and seconds > 0:
        return float(max(1, math.ceil(seconds)))
    return seconds


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
    _sweeps_will_run(settings)


def _sweeps_will_run(settings: Settings) -> None:
    """Beat is up, so a sweep comes within an interval: workers may park refunds from now
    (each sweep then renews the heartbeat; see :mod:`refund_worker.heartbeat`)."""
    from refund_worker.heartbeat import SweepHeartbeat
    from refund_worker.runtime import limiter_redis

    try:
        client = limiter_redis(settings)
    except ConfigurationError as exc:  # the workers refuse to start on it; beat only says so
        log.warning("no heartbeat for the sweep: %s", exc)
        return
    SweepHeartbeat(client, settings.sweep_interval_seconds).beat()


def _refuse_to_start(exc: Exception) -> None:
    """One line on stderr, exit code 2. Celery logs and swallows exceptions from signal
    handlers, so this raises ``SystemExit``, which stops the process."""
    print(f"refund-worker: cannot start: {exc}", file=sys.stderr)
    raise SystemExit(2) from exc


@celeryd_after_setup.connect
def _consume_own_queues(instance: Any, **_: Any) -> None:
    """Every worker consumes the emails' and the sweeper's queues too, whatever its ``-Q``."""
    queues = instance.app.amqp.queues
    for queue in ALWAYS_CONSUMED:
        # The queue as declared (RabbitMQ: quorum, topic exchange), not a new default one.
        queues.select_add(queues.get(queue, queue))


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """Connections must not cross a fork (prefork pool)."""
    from refund_worker.runtime import reset_runtime

    reset_runtime()
