"""Metrics out: what the database and the broker hold, read at scrape time, and the worker's
exporter of the event counts its processes keep in ``PROMETHEUS_MULTIPROC_DIR``.

Two sources, each counted once however many processes run (docs/metrics.md):

* **State** (``StateCollector``): refunds by status and service, the in-doubt ones, the oldest
  unsettled refund, the customer emails waiting, the oldest message in each broker queue. Read
  from the database (one grouped query over the unsettled and the problem statuses, through the
  ``status`` index; succeeded rows are never scanned) and the broker (one ``LRANGE``) when
  scraped, cached a few seconds. Served by the API's ``/metrics``: every API process gives the
  same answer, and no worker repeats it.
* **Events** (``refund_worker.metrics``): attempts, reconciliations, Magento calls and their
  latency, rate-limit waits, emails, webhooks. Kept by prometheus_client's multiprocess mode in
  files under ``PROMETHEUS_MULTIPROC_DIR``, one per process (prefork children included), summed
  by ``MultiProcessCollector`` when the worker's exporter (``serve_worker_metrics``) is scraped.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import IO, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from celery import Celery
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from refund_worker.db import Database
from refund_worker.errors import ConfigurationError
from refund_worker.models import Refund, utcnow
from refund_worker.queues import oldest_queued_at
from refund_worker.schemas import NotificationStatus, RefundStatus
from refund_worker.settings import ENV_PREFIX, Settings

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Statuses still on their way; their oldest row is the backlog's age.
UNSETTLED = (
    RefundStatus.RECEIVED,
    RefundStatus.QUEUED,
    RefundStatus.PROCESSING,
    RefundStatus.RETRYING,
)
#: Statuses counted by ``refund_worker_refunds``: the unsettled ones and the two a person acts on.
#: ``succeeded`` is left out on purpose: it is nearly every row, and counting it would scan the
#: table at every scrape; its rate is ``refund_worker_refund_attempts_total{outcome="succeeded"}``.
COUNTED = (*UNSETTLED, RefundStatus.FAILED, RefundStatus.NEEDS_ATTENTION)
EMAILS_COUNTED = (
    NotificationStatus.PENDING,
    NotificationStatus.SENDING,
    NotificationStatus.RETRYING,
    NotificationStatus.FAILED,
    NotificationStatus.NOT_SENT,
)
#: Scrapes closer together than this share one read of the database and the broker.
STATE_CACHE_SECONDS = 5.0


@dataclass
class _State:
    refunds: dict[tuple[str, str, str], int] = field(default_factory=dict)
    in_doubt: int = 0
    oldest_unsettled: float = 0.0
    emails: dict[str, int] = field(default_factory=dict)
    queue_ages: dict[str, float] = field(default_factory=dict)
    up: bool = True
    seconds: float = 0.0


class StateCollector(Collector):
    """The gauges read from the database (and the broker, given its Celery app) at scrape time."""

    def __init__(
        self,
        database: Database,
        *,
        celery_app: Celery | None = None,
        queues: Iterable[str] = (),
        clock: Callable[[], datetime] = utcnow,
        cache_seconds: float = STATE_CACHE_SECONDS,
    ) -> None:
        self._database = database
        self._celery_app = celery_app
        self._queues = tuple(queues)
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: _State | None = None
        self._cached_at = 0.0

    def collect(self) -> Iterator[Metric]:
        """The gauges, from a read at most ``cache_seconds`` old."""
        yield from _families(self._state())

    def describe(self) -> Iterator[Metric]:
        """Nothing: registering must not run a query."""
        return iter(())

    def _state(self) -> _State:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached_at >= self._cache_seconds:
                self._cached = self._read()
                self._cached_at = time.monotonic()
            return self._cached

    def _read(self) -> _State:
        started = time.perf_counter()
        state = _State()
        now = self._clock()
        try:
            self._read_database(state, now)
        except Exception as exc:  # an unreachable database is a sample (up 0), not a 500
            log.warning("metrics: cannot read the database: %s", type(exc).__name__)
            state = _State(up=False)
        if self._celery_app is not None:
            for queue in self._queues:
                oldest = oldest_queued_at(self._celery_app, queue, now)
                if oldest is not None:
                    state.queue_ages[queue] = max(0.0, (now - oldest).total_seconds())
        state.seconds = time.perf_counter() - started
        return state

    def _read_database(self, state: _State, now: datetime) -> None:
        service = func.coalesce(Refund.service, Refund.service_requested)
        refunds = (
            select(
                Refund.shop,
                Refund.status,
                service,
                Refund.in_doubt,
                func.count(),
                func.min(Refund.created_at),
            )
            .where(Refund.status.in_([status.value for status in COUNTED]))
            .group_by(Refund.shop, Refund.status, service, Refund.in_doubt)
        )
        emails = (
            select(Refund.notification_status, func.count())
            .where(Refund.notification_status.in_([status.value for status in EMAILS_COUNTED]))
            .group_by(Refund.notification_status)
        )
        from refund_worker.metrics import SERVICES  # not at import: it makes metric files

        unsettled = {status.value for status in UNSETTLED}
        oldest: datetime | None = None
        with self._database.connection_scope() as connection:
            for shop, status, chosen, in_doubt, count, created in connection.execute(refunds):
                # A row's shop is one an operator configured (intake refuses any other).
                key = (str(shop), str(status), chosen if chosen in SERVICES else "other")
                state.refunds[key] = state.refunds.get(key, 0) + int(count)
                if status in unsettled:
                    if in_doubt:
                        state.in_doubt += int(count)
                    if created is not None and (oldest is None or created < oldest):
                        oldest = created
            for status, count in connection.execute(emails):
                state.emails[str(status)] = int(count)
        if oldest is not None:
            if oldest.tzinfo is None:  # SQLite, read without the column's type
                oldest = oldest.replace(tzinfo=now.tzinfo)
            state.oldest_unsettled = max(0.0, (now - oldest).total_seconds())


def _families(state: _State) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "refund_worker_state_up", "1 when the database answered the last metrics read, else 0."
    )
    up.add_metric([], 1.0 if state.up else 0.0)
    yield up
    took = GaugeMetricFamily(
        "refund_worker_state_read_seconds", "How long the last read of the database took."
    )
    took.add_metric([], state.seconds)
    yield took
    if state.up:
        refunds = GaugeMetricFamily(
            "refund_worker_refunds",
            "Refunds by shop, status (unsettled, failed, needs_attention; not succeeded) and "
            "service.",
            labels=["shop", "status", "service"],
        )
        for (shop, status, service), count in sorted(state.refunds.items()):
            refunds.add_metric([shop, status, service], count)
        yield refunds
        in_doubt = GaugeMetricFamily(
            "refund_worker_refunds_in_doubt",
            "Unsettled refunds whose last call may have reached Magento (to reconcile).",
        )
        in_doubt.add_metric([], state.in_doubt)
        yield in_doubt
        oldest = GaugeMetricFamily(
            "refund_worker_oldest_unsettled_refund_age_seconds",
            "Age of the oldest refund not yet settled (0 when there is none).",
        )
        oldest.add_metric([], state.oldest_unsettled)
        yield oldest
        emails = GaugeMetricFamily(
            "refund_worker_emails",
            "Customer emails waiting, being sent, retrying, failed or not sent by Magento.",
            labels=["status"],
        )
        for status in EMAILS_COUNTED:
            emails.add_metric([status.value], state.emails.get(status.value, 0))
        yield emails
    if state.queue_ages:
        ages = GaugeMetricFamily(
            "refund_worker_queue_oldest_message_age_seconds",
            "Age of the oldest message waiting in a broker queue (0 when it is empty).",
            labels=["queue"],
        )
        for queue, age in sorted(state.queue_ages.items()):
            ages.add_metric([queue], age)
        yield ages


def state_registry(collector: StateCollector) -> CollectorRegistry:
    """A registry holding only ``collector`` (the API's ``/metrics``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


# -- bearer tokens ------------------------------------------------------------------------------


def token_matches(presented: str | None, expected: str) -> bool:
    """Whether ``presented`` is ``expected``, compared in constant time (of their digests)."""
    if not presented:
        return False
    left = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    right = hashlib.sha256(expected.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(left, right)


def bearer_of(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


# -- the worker's exporter --------------------------------------------------------------------


def multiproc_dir(environ: dict[str, str] | None = None) -> Path:
    """``PROMETHEUS_MULTIPROC_DIR``, checked: set, a directory, writable, and set before
    prometheus_client was imported (else it counts in memory, where no exporter sees prefork
    children). ``ConfigurationError`` naming what is wrong, otherwise."""
    environ = dict(os.environ) if environ is None else environ
    value = environ.get(MULTIPROC_ENV, "").strip()
    needs = f"{ENV_PREFIX}METRICS_PORT is set, so {MULTIPROC_ENV}"
    if not value:
        raise ConfigurationError(
            f"{needs} must name a directory of its own for this worker's metric files"
        )
    path = Path(value)
    if not path.is_dir():
        raise ConfigurationError(f"{needs}={value} is not a directory (create it first)")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigurationError(f"{needs}={value} is not writable by this user")
    from prometheus_client import values

    if values.ValueClass.__name__ != "MmapedValue":
        raise ConfigurationError(
            f"{MULTIPROC_ENV} was set after prometheus_client was imported; set it in the "
            "process's environment"
        )
    return path


def claim_multiproc_dir(path: Path) -> IO[str]:
    """Lock ``path`` for this worker (one directory per worker command) and delete the metric
    files earlier processes left there, so counters start from zero with the process.

    Returns the lock's open file: keep it for the process's life. ``ConfigurationError`` when
    another live worker holds the directory."""
    lock = (path / ".refund-worker.lock").open("a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ConfigurationError(
            f"{MULTIPROC_ENV}={path} is in use by another worker; give each worker its own "
            "directory"
        ) from None
    own = f"_{os.getpid()}.db"
    for stale in path.glob("*.db"):
        if not stale.name.endswith(own):  # this process's own files are already mapped
            stale.unlink(missing_ok=True)
    return lock


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def metrics_wsgi_app(registry: CollectorRegistry, token: str | None) -> Callable[..., Any]:
    """``GET /metrics`` of ``registry``, behind ``Authorization: Bearer <token>`` if given."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the metrics are at /metrics\n"]
        if token is not None and not token_matches(
            bearer_of(environ.get("HTTP_AUTHORIZATION")), token
        ):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
            )
            return [b"a valid metrics token is required: Authorization: Bearer <token>\n"]
        body = generate_latest(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [body]

    return app


@dataclass
class MetricsServer:
    """A running exporter: its address, and how to stop it."""

    host: str
    port: int
    server: WSGIServer
    thread: threading.Thread
    lock: IO[str] | None = None

    def stop(self) -> None:
        """Stop serving and release the directory."""
        self.server.shutdown()
        self.server.server_close()
        if self.lock is not None:
            self.lock.close()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(registry: CollectorRegistry, host: str, port: int, token: str | None) -> MetricsServer:
    """Serve ``registry`` on ``host:port`` from a daemon thread."""
    try:
        server = make_server(
            host,
            port,
            metrics_wsgi_app(registry, token),
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        raise ConfigurationError(
            f"{ENV_PREFIX}METRICS_PORT: cannot listen on {host}:{port} ({exc.strerror or exc})"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="metrics-exporter", daemon=True)
    thread.start()
    return MetricsServer(host, server.server_port, server, thread)


_RUNNING: list[MetricsServer] = []


def serve_worker_metrics(settings: Settings) -> MetricsServer:
    """The worker's exporter, as ``refund-worker worker`` starts it when ``METRICS_PORT`` is
    set: the checked, locked, emptied ``PROMETHEUS_MULTIPROC_DIR`` summed over every process
    that writes there. Refuses (``ConfigurationError``, one line) rather than serve wrong or
    open numbers."""
    assert settings.metrics_port is not None
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if token is None and not is_loopback(settings.metrics_host):
        raise ConfigurationError(
            f"{ENV_PREFIX}METRICS_HOST is {settings.metrics_host}, not loopback: set "
            f"{ENV_PREFIX}METRICS_TOKEN so the exporter is not open to anyone"
        )
    path = multiproc_dir()
    lock = claim_multiproc_dir(path)
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    try:
        running = serve(registry, settings.metrics_host, settings.metrics_port, token)
    except ConfigurationError:
        lock.close()
        raise
    running.lock = lock
    _RUNNING.append(running)  # the lock lasts as long as the process, not as the return value
    log.info("metrics exporter on http://%s:%d/metrics", running.host, running.port)
    return running
