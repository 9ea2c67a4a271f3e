"""Prototype fixes, applied by monkeypatching in benchmark processes only (never shipped).

Each entry measures what a proposed change to ``src/`` (or to a setting) would bring
(``bench/latency.py`` layouts and ``BENCH_PATCHES`` run them side by side). The patches work
at the lowest level that shows the effect, so they survive edits to the services: they are
measurements, not the code to merge. Enable with ``--patch NAME`` (``BENCH_PATCHES=a,b`` in
worker processes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PATCHES: dict[str, Callable[[], None]] = {}


def patch(function: Callable[[], None]) -> Callable[[], None]:
    PATCHES[function.__name__.replace("_", "-")] = function
    return function


def apply(names: str | list[str]) -> None:
    if isinstance(names, str):
        names = [names]
    split = [n.strip() for group in names for n in group.split(",") if n.strip()]
    for name in expand(split):
        PATCHES[name]()


@patch
def kombu_client_cache() -> None:
    """kombu's Redis channel builds a new ``redis.Redis`` client object for every publish, ack
    and QoS update (``Channel.conn_or_acquire`` → ``_create_client``; redis-py 8's constructor
    is not cheap). Keep one synchronous client per channel instead (thread-safe: it only holds
    the channel's connection pool). Upstream kombu, or a few lines in ``celery_app``."""
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.Channel._create_client

    def create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return original(self, asynchronous=True)
        client = self.__dict__.get("_sync_client")
        if client is None:
            client = self.__dict__["_sync_client"] = original(self)
        return client

    kombu_redis.Channel._create_client = create_client


@patch
def redis_max_connections() -> None:
    """broker_transport_options max_connections=256 (kombu's Redis channel default: 10). With
    the gevent pool at 64 greenlets the worker runs out ("MaxConnectionsError: Too many
    connections"): acks are lost, the consumer reconnects, and a prefetched message can vanish
    until the sweeper re-publishes it."""
    from refund_worker.celery_app import app

    app.conf.broker_transport_options = {
        **(app.conf.broker_transport_options or {}),
        "max_connections": 256,
    }


@patch
def switch_1ms() -> None:
    """``sys.setswitchinterval(0.001)`` (CPython's default: 5 ms). A thread whose socket read
    returned waits for the GIL until the running thread is asked to drop it; with 32 threads
    half busy that wait is paid after most Magento and database round trips."""
    import sys

    sys.setswitchinterval(0.001)


@patch
def switch_0_5ms() -> None:
    """``sys.setswitchinterval(0.0005)``."""
    import sys

    sys.setswitchinterval(0.0005)


@patch
def prefetch_1() -> None:
    """worker_prefetch_multiplier=1 (shipped: 4)."""
    from refund_worker.celery_app import app

    app.conf.worker_prefetch_multiplier = 1


@patch
def prefetch_16() -> None:
    """worker_prefetch_multiplier=16 (shipped: 4)."""
    from refund_worker.celery_app import app

    app.conf.worker_prefetch_multiplier = 16


@patch
def one_queue() -> None:
    """Emails published to the refunds queue, as before they had their own (``refunds.notify``):
    the layout this change replaced, to measure it against."""
    from refund_worker.celery_app import NOTIFY_TASK, QUEUE, TASK_QUEUES

    TASK_QUEUES[NOTIFY_TASK] = QUEUE


@patch
def db_pool_log() -> None:
    """Log every new database connection with the pool's state to ``/tmp/dbpool-PID.log``, to
    see why connections are opened mid-run."""
    import os
    import threading
    import traceback

    from sqlalchemy.pool import QueuePool

    original = QueuePool._create_connection

    def create_connection(self: Any) -> Any:
        stack = "".join(traceback.format_stack(limit=14)[:-1])
        with open(f"/tmp/dbpool-{os.getpid()}.log", "a") as log:
            thread = threading.current_thread().name
            log.write(f"connect thread={thread} {self.status()}\n{stack}\n")
        return original(self)

    QueuePool._create_connection = create_connection  # type: ignore[method-assign]


@patch
def db_count() -> None:
    """Count each engine's statements by their first words, and its commits, into
    ``/tmp/dbcount-PID.json`` at exit: the database round trips a refund costs."""
    import atexit
    import json
    import os
    from collections import Counter

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counts: Counter[str] = Counter()

    @event.listens_for(Engine, "before_cursor_execute")
    def statement(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        words = " ".join(sql.split()[:3])
        counts[f"{words}{' (many)' if many else ''}"] += 1

    @event.listens_for(Engine, "commit")
    def commit(_conn: Any) -> None:
        counts["COMMIT"] += 1

    @event.listens_for(Engine, "begin")
    def begin(conn: Any) -> None:
        # An autocommit connection begins only in SQLAlchemy's books: no BEGIN is sent.
        autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        counts["BEGIN (not sent: autocommit)" if autocommit else "BEGIN"] += 1

    def dump() -> None:
        with open(f"/tmp/dbcount-{os.getpid()}.json", "w") as out:
            json.dump(counts, out, indent=1, sort_keys=True)

    atexit.register(dump)


@patch
def without_audit_rows() -> None:
    """Ablation, never to ship: no ``magento_calls`` rows (the brief wants one per call). What
    the audit rows cost a refund and its email."""
    from refund_worker import store

    def no_rows(*_: Any) -> None:
        return None

    store.insert_calls = no_rows  # type: ignore[assignment]


@patch
def without_order_lock() -> None:
    """Ablation, never to ship: no order lock (two refunds of one order could then reach Magento
    at once). What taking and releasing it costs a refund."""
    from refund_worker import store

    def always_taken(*_: Any) -> bool:
        return True

    def finish(connection: Any, claim: Any, *, release_lock: bool) -> None:
        store.insert_calls(connection, claim.refund_id, claim.attempt, claim.calls)

    store.take_order_lock = always_taken  # type: ignore[assignment]
    store.RefundStore._finish = staticmethod(finish)  # type: ignore[method-assign,assignment]


@patch
def no_metrics() -> None:
    """Ablation, never to ship: every event metric (``refund_worker.metrics``) a no-op. What
    counting costs a refund (``bench/metrics_cost.py``)."""
    from refund_worker import metrics

    def nothing(*_: Any) -> None:
        return None

    for name in ("magento_call", "refund_attempt", "reconciliation", "rate_limit_wait",
                 "rate_limit_refused", "rate_limit_pause", "email", "webhook_delivery"):
        setattr(metrics, name, nothing)


@patch
def metrics_exporter() -> None:
    """The exporter ``refund-worker worker`` starts with ``REFUND_WORKER_METRICS_PORT`` set (the
    bench's worker runs Celery directly, not through the CLI)."""
    from refund_worker.exporter import serve_worker_metrics
    from refund_worker.settings import get_settings

    serve_worker_metrics(get_settings())


#: Every change above that keeps behaviour, together. (The fixes measured here before, from
#: ``no-pre-ping`` to ``publish-prebuilt``, are in ``src/`` now: docs/performance.md.)
BUNDLES = {
    "all": ["kombu-client-cache"],
}


def expand(names: list[str]) -> list[str]:
    """Bundle names replaced by their patches."""
    out: list[str] = []
    for name in names:
        out.extend(BUNDLES.get(name, [name]))
    return out
