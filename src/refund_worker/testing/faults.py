"""Fault injection for the whole pipeline, shared by ``bench/fault_run.py`` and the e2e tests.

One run: a PostgreSQL database of its own, a PRIVATE ``redis-server`` (no persistence, so a
restart loses every queued message), the simulator as a subprocess, N real
``refund-worker worker`` processes and ``refund-worker beat`` (the sweeper). Refunds go in through
``intake.enqueue_refunds`` with every message published twice (and every refund and email id
published again mid-run, at the end of the chaos and after settling), while a chaos schedule

* SIGKILLs workers at random moments (and right after a commit-then-fail fault was seen) and
  restarts them,
* restarts Redis (all queued and unacknowledged messages are gone),
* injects commit_then_500 / commit_then_drop / commit_then_hang (and a slow commit that lands
  after the client gave up) on a share of refund calls, and bursts of 503 and 429,
* breaks every database connection of the workers (``pg_terminate_backend`` in a loop),
* has the webhook receiver (a real HTTP server on a socket, its endpoint subscribed to every
  event) answer 500 to a share of deliveries, and takes it down for a while,

then waits (bounded) for every refund, email and webhook delivery to settle and checks the
invariants against the simulator's credit memos, orders and outbox (``evaluate``) and what the
receiver got (``evaluate_webhooks``: every event delivered, each duplicate with the same id and
body, every signature valid); on a violation ``diagnose`` writes
everything known about it to ``diagnostics.json`` next to the logs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, func, select, text

from refund_worker.celery_app import create_app
from refund_worker.db import Database, upgrade
from refund_worker.intake import IntakeRejection, enqueue_refunds, validate_request
from refund_worker.models import MagentoCall, Refund, RefundEvent, WebhookDelivery
from refund_worker.outbox import EventType
from refund_worker.publishing import CeleryPublisher
from refund_worker.settings import Settings
from refund_worker.simulator.testing import LISTENING_PREFIX
from refund_worker.testing.ports import free_port
from refund_worker.testing.rabbit import PrivateRabbit, private_rabbit
from refund_worker.testing.receiver import Receiver
from refund_worker.webhooks import WebhookVerificationError, verify
from refund_worker.webhooks.endpoints import EndpointRequest, register

ROOT = Path(__file__).resolve().parents[1]

PG_ADMIN_URL = os.environ.get(
    "REFUND_WORKER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TOKEN = "fault-run-token"
REFUND_ROUTES = ("order_refund", "invoice_refund")
COMMIT_KINDS = ("commit_then_500", "commit_then_drop", "commit_then_hang")
MARKER = re.compile(r"refund-worker:([0-9a-f-]{36})")
UNSETTLED_NOTIFICATIONS = ("pending", "sending", "retrying")
UNSETTLED_DELIVERIES = ("pending", "delivering", "retrying")
WEBHOOK_SECRET_KEY = "fault-run-webhook-secret-key-0123456789abcdef"


# ----------------------------------------------------------------------------- configuration


@dataclass
class FaultConfig:
    """Size, timings and the chaos schedule of one run (seconds count from the first refund)."""

    refunds: int = 1000
    workers: int = 2
    concurrency: int = 8
    intake_seconds: float = 40.0
    chaos_seconds: float = 60.0
    settle_timeout: float = 240.0
    seed: int = 7
    notify_share: float = 0.25
    #: Share of refund calls that commit and then fail (split over the three kinds).
    commit_fault_share: float = 0.10
    #: Share of refund calls that commit only after the client has given up (latency > timeout).
    slow_commit_share: float = 0.01
    kill_every: tuple[float, float] = (4.0, 9.0)
    #: Never two kills closer than this (a worker needs a few seconds to start again).
    kill_min_gap: float = 4.0
    #: Chance of a SIGKILL right after the watcher sees a commit-then-fail fault fire.
    kill_after_commit_fault: float = 0.5
    #: When things happen, as fractions of ``chaos_seconds``.
    redis_restarts: tuple[float, ...] = (0.35,)
    redis_down_seconds: float = 2.0
    db_breaks: tuple[float, ...] = (0.55,)
    db_break_seconds: float = 4.0
    #: (start as a fraction of ``chaos_seconds``, HTTP status, seconds) of fault bursts on
    #: every Magento route.
    bursts: tuple[tuple[float, int, float], ...] = ((0.2, 503, 3.0), (0.7, 429, 3.0))
    duplicate_messages: bool = True
    #: A webhook endpoint subscribed to every event, on a real receiver.
    webhooks: bool = True
    #: Share of webhook deliveries the receiver answers with a 500.
    webhook_failure_share: float = 0.3
    #: (start as a fraction of ``chaos_seconds``, seconds) the receiver is down.
    receiver_down: tuple[float, float] = (0.45, 4.0)
    #: REFUND_WORKER_* settings of the workers and beat.
    timings: dict[str, str] = field(
        default_factory=lambda: {
            "MAGENTO_TIMEOUT": "2",
            "LEASE_SECONDS": "15",
            "RETRY_BACKOFF_BASE": "0.2",
            "RETRY_BACKOFF_MAX": "2",
            "IN_DOUBT_GRACE_SECONDS": "1",
            "REPUBLISH_AFTER_SECONDS": "5",
            "SWEEP_INTERVAL_SECONDS": "2",
            "VISIBILITY_TIMEOUT": "60",
            "MAX_ATTEMPTS": "10",
            "NOTIFICATION_MAX_ATTEMPTS": "10",
            "MAGENTO_RATE_LIMIT": "400",
        }
    )
    #: REFUND_WORKER_* settings for the webhooks (on top of ``timings``).
    webhook_timings: dict[str, str] = field(
        default_factory=lambda: {
            "SECRET_KEY": WEBHOOK_SECRET_KEY,
            "WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
            "WEBHOOK_TIMEOUT": "1",
            "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
            "WEBHOOK_RETRY_MAX_SECONDS": "3",
        }
    )
    pg_admin_url: str = PG_ADMIN_URL
    log_level: str = "INFO"
    #: ``redis`` or ``amqp`` (a private RabbitMQ node; a private Redis still backs the limiter).
    broker: str = "redis"


# ----------------------------------------------------------------------------- infrastructure


class PrivateRedis:
    """A ``redis-server`` of our own without persistence: a restart loses everything."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self, down_seconds: float) -> None:
        """SIGKILL (nothing saved), stay down a while, start empty on the same port."""
        self.kill()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def queued(self, queue: str = "refunds") -> int:
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
            try:
                return int(client.llen(queue))
            finally:
                client.close()
        return -1


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def private_pg_database(admin_url: str, prefix: str = "rw_fault") -> Iterator[tuple[str, str]]:
    """(url, name) of a fresh PostgreSQL database at the schema head, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url, name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class SimulatorSubprocess:
    url: str
    process: subprocess.Popen[str]




@contextlib.contextmanager
def simulator_subprocess(workdir: Path, args: Sequence[str]) -> Iterator[SimulatorSubprocess]:
    """The simulator as its own process (like ``simulator_process``), stderr to a log file."""
    log = (workdir / "simulator.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "refund_worker.simulator", "--host", "127.0.0.1", "--port", "0",
         *args],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(LISTENING_PREFIX):
            raise RuntimeError(f"the simulator did not start: {line!r}")
        url = line[len(LISTENING_PREFIX) :].strip()
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/_simulator/health", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield SimulatorSubprocess(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


class SimControl:
    """The simulator's control API (``/_simulator/``) over HTTP."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def close(self) -> None:
        self.http.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def add_orders(self, specs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        made: list[dict[str, Any]] = []
        for start in range(0, len(specs), 500):
            chunk = list(specs[start : start + 500])
            made += self._json("POST", "/_simulator/orders:batch", json={"orders": chunk})["orders"]
        return made

    def add_fault(self, spec: dict[str, Any]) -> int:
        return int(self._json("POST", "/_simulator/faults", json=spec)["id"])

    def remove_fault(self, fault_id: int) -> None:
        self.http.delete(f"/_simulator/faults/{fault_id}")

    def clear_faults(self) -> None:
        self.http.delete("/_simulator/faults")

    def creditmemos(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/_simulator/creditmemos"))

    def emails(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/_simulator/emails"))

    def order(self, order_id: int) -> dict[str, Any]:
        return dict(self._json("GET", f"/_simulator/orders/{order_id}"))

    def bodies(self, limit: int) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/_simulator/bodies?limit={limit}"))

    def requests(self, limit: int) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/_simulator/requests?limit={limit}"))

    def stats(self) -> dict[str, Any]:
        return dict(self._json("GET", "/_simulator/stats"))


class Fleet:
    """The worker and beat processes: start, SIGKILL, restart, stop."""

    def __init__(self, env: dict[str, str], workdir: Path, concurrency: int) -> None:
        self.env = env
        self.workdir = workdir
        self.concurrency = concurrency
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: Counter[str] = Counter()
        self.unexpected_exits: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        self.starts[name] += 1
        log = (self.workdir / f"{name}-{self.starts[name]}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "refund_worker.cli", *args],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self, name: str) -> None:
        with self.lock:
            self._spawn(
                name,
                [
                    "worker",
                    "--concurrency",
                    str(self.concurrency),
                    "-n",
                    f"{name}@%h",
                    "--without-gossip",
                    "--without-mingle",
                ],
            )

    def start_beat(self) -> None:
        with self.lock:
            self._spawn("beat", ["beat", "--schedule", str(self.workdir / "beat-schedule")])

    @property
    def workers(self) -> list[str]:
        return [name for name in self.processes if name != "beat"]

    def ready_workers(self) -> list[str]:
        """Workers that are up and consuming (a worker still starting is not worth a kill)."""
        ready = []
        for name in self.workers:
            log = self.workdir / f"{name}-{self.starts[name]}.log"
            alive = self.processes[name].poll() is None
            if alive and log.exists() and " ready." in log.read_text(errors="replace"):
                ready.append(name)
        return ready

    def kill(self, name: str) -> None:
        with self.lock:
            process = self.processes[name]
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def revive(self) -> None:
        """Restart any process that died on its own (a crash is recorded, then repaired)."""
        for name, process in list(self.processes.items()):
            code = process.poll()
            if code is not None and code != -signal.SIGKILL:
                self.unexpected_exits.append((name, code))
                if name == "beat":
                    self.start_beat()
                else:
                    self.start_worker(name)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for name in self.workers:
            log = self.workdir / f"{name}-{self.starts[name]}.log"
            while " ready." not in log.read_text(errors="replace"):
                if time.monotonic() > deadline or self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def log_counts(self, patterns: dict[str, str]) -> dict[str, int]:
        found = dict.fromkeys(patterns, 0)
        for path in self.workdir.glob("*.log"):
            content = path.read_text(errors="replace")
            for label, pattern in patterns.items():
                found[label] += content.count(pattern)
        return found


class DoublePublisher:
    """Publishes every message twice: redelivery must be harmless."""

    def __init__(self, inner: CeleryPublisher, copies: int) -> None:
        self.inner = inner
        self.copies = copies
        self.published = 0

    def publish_refunds(self, refund_ids: Sequence[str]) -> None:
        for _ in range(self.copies):
            self.inner.publish_refunds(refund_ids)
            self.published += len(refund_ids)

    def publish_notifications(self, refund_ids: Sequence[str]) -> None:
        for _ in range(self.copies):
            self.inner.publish_notifications(refund_ids)


# ----------------------------------------------------------------------------- the plan


@dataclass
class PlannedOrder:
    spec: dict[str, Any]
    kind: str  # full | partial | held | unknown
    refunds: list[dict[str, Any]] = field(default_factory=list)  # payloads without order ids
    order: dict[str, Any] = field(default_factory=dict)  # the simulator's summary once created


def plan(config: FaultConfig, rng: random.Random) -> list[PlannedOrder]:
    """Orders and their refunds: full refunds, several partial refunds per order, a few that
    Magento must refuse (order on hold, unknown order); a share notifies the customer."""
    orders: list[PlannedOrder] = []
    count = 0
    while count < config.refunds:
        roll = rng.random()
        method = rng.choice(["braintree", "checkmo", "stripe_payments", "banktransfer"])
        items = [{"sku": "SHIRT", "qty": 4, "price": 20}, {"sku": "MUG", "qty": 3, "price": 8}]
        if roll < 0.02:
            order = PlannedOrder(
                {"payment_method": "checkmo", "state": "holded", "items": items[:1]}, "held", [{}]
            )
        elif roll < 0.03:
            order = PlannedOrder({"payment_method": "checkmo", "items": items[:1]}, "unknown", [{}])
        elif roll < 0.45:
            order = PlannedOrder(
                {"payment_method": method, "shipping": 5, "items": items},
                "full",
                [{"with_invoice": rng.random() < 0.3}],
            )
        else:
            parts: list[dict[str, Any]] = []
            left = {0: 4, 1: 3}
            for _ in range(rng.randint(2, 4)):
                chosen = [index for index in (0, 1) if left[index] and rng.random() < 0.7]
                chosen = chosen or [index for index in (0, 1) if left[index]][:1]
                if not chosen:
                    break
                take = {}
                for index in chosen:
                    qty = rng.randint(1, min(2, left[index]))
                    left[index] -= qty
                    take[index] = qty
                parts.append({"take": take, "with_invoice": rng.random() < 0.3})
            order = PlannedOrder(
                {"payment_method": method, "shipping": 5, "items": items}, "partial", parts
            )
        for refund in order.refunds:
            refund["notify"] = order.kind in ("full", "partial") and (
                rng.random() < config.notify_share
            )
        orders.append(order)
        count += len(order.refunds)
    return orders


def payloads(orders: list[PlannedOrder], run_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for order in orders:
        summary = order.order
        for refund in order.refunds:
            order_id = 2_000_000_000 if order.kind == "unknown" else int(summary["order_id"])
            payload: dict[str, Any] = {
                "idempotency_key": f"{run_id}-{len(out)}",
                "order_id": order_id,
                "notify_customer": bool(refund.get("notify")),
            }
            if refund.get("with_invoice") and summary.get("invoice_id"):
                payload["invoice_id"] = int(summary["invoice_id"])
            if "take" in refund:
                payload["items"] = [
                    {"order_item_id": int(summary["items"][i]["item_id"]), "qty": qty}
                    for i, qty in refund["take"].items()
                ]
                payload["shipping_amount"] = 0
            out.append(payload)
    return out


# ----------------------------------------------------------------------------- the chaos


@dataclass
class ChaosLog:
    started: float
    events: list[dict[str, Any]] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    faults_seen: Counter[str] = field(default_factory=Counter)
    db_connections_terminated: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, what: str, **detail: Any) -> None:
        with self.lock:
            self.events.append(
                {"t": round(time.monotonic() - self.started, 2), "event": what, **detail}
            )


class Chaos:
    """The threads that break things until ``chaos_seconds`` after the start."""

    def __init__(
        self,
        config: FaultConfig,
        fleet: Fleet,
        broker: PrivateRedis | PrivateRabbit,
        sim: SimControl,
        db_name: str,
        log: ChaosLog,
        rng: random.Random,
        receiver: Receiver | None = None,
    ) -> None:
        self.config = config
        self.receiver = receiver
        self.fleet = fleet
        self.broker = broker
        self.sim = sim
        self.db_name = db_name
        self.log = log
        self.rng = rng
        self.stop = threading.Event()
        self.stop_watching = threading.Event()  # the fault counter runs until the very end
        self.threads: list[threading.Thread] = []
        self.watcher: threading.Thread | None = None
        self.last_kill = 0.0
        self.kill_lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.log.started

    def start(self) -> None:
        for target in (self._killer, self._timeline, self._reviver):
            thread = threading.Thread(target=self._guard(target), daemon=True, name=target.__name__)
            thread.start()
            self.threads.append(thread)
        self.watcher = threading.Thread(target=self._guard(self._watcher), daemon=True)
        self.watcher.start()

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # a chaos thread must not die silently
                self.log.note("chaos thread failed", thread=target.__name__, error=repr(exc))

        return run

    def finish(self) -> None:
        """No more kills, restarts, breaks or bursts (the commit-then-fail faults stay on)."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def finish_watching(self) -> None:
        self.stop_watching.set()
        if self.watcher is not None:
            self.watcher.join(timeout=10)

    def _sleep_until(self, moment: float) -> bool:
        while self.elapsed() < moment:
            if self.stop.wait(min(0.2, moment - self.elapsed())):
                return False
        return not self.stop.is_set()

    def _kill(self, reason: str) -> None:
        with self.kill_lock:
            if time.monotonic() - self.last_kill < self.config.kill_min_gap:
                return
            candidates = self.fleet.ready_workers()
            if not candidates:
                return
            self.last_kill = time.monotonic()
            name = self.rng.choice(candidates)
            self.fleet.kill(name)
            self.log.kills[reason] += 1
            self.log.note("SIGKILL", worker=name, reason=reason)
        threading.Timer(self.rng.uniform(0.5, 2.0), self._restart, args=(name,)).start()

    def _restart(self, name: str) -> None:
        self.fleet.start_worker(name)
        self.log.note("restarted", worker=name)

    def _killer(self) -> None:
        while self.elapsed() < self.config.chaos_seconds:
            if self.stop.wait(self.rng.uniform(*self.config.kill_every)):
                return
            if self.elapsed() < self.config.chaos_seconds:
                self._kill("random moment")

    def _watcher(self) -> None:
        """Poll the simulator's request log; SIGKILL a worker right after a commit-then-fail."""
        seen: set[tuple[Any, ...]] = set()
        while not self.stop_watching.wait(0.2):
            try:
                entries = self.sim.requests(1000)
            except httpx.HTTPError:
                continue
            fired = False
            for entry in entries:
                if not entry.get("fault"):
                    continue
                key = (entry["time"], entry["path"], entry["duration_ms"], entry["fault"])
                if key in seen:
                    continue
                seen.add(key)
                kind = entry["fault"]
                if kind == "status":
                    kind = f"status {entry['status']}"
                self.log.faults_seen[kind] += 1
                fired = fired or entry["fault"] in COMMIT_KINDS
            if (
                fired
                and self.elapsed() < self.config.chaos_seconds
                and self.rng.random() < self.config.kill_after_commit_fault
            ):
                self._kill("right after a commit-then-fail fault")

    def _timeline(self) -> None:
        schedule: list[tuple[float, Callable[[], None]]] = []
        window = self.config.chaos_seconds
        for share in self.config.redis_restarts:
            schedule.append((share * window, self._restart_redis))
        for share in self.config.db_breaks:
            schedule.append((share * window, self._break_database))
        for share, status, seconds in self.config.bursts:
            schedule.append((share * window, functools.partial(self._burst, status, seconds)))
        if self.receiver is not None:
            schedule.append((self.config.receiver_down[0] * window, self._receiver_down))
        for moment, action in sorted(schedule, key=lambda item: item[0]):
            if not self._sleep_until(moment):
                return
            action()

    def _reviver(self) -> None:
        while not self.stop.wait(1.0):
            with self.kill_lock:
                before = len(self.fleet.unexpected_exits)
                self.fleet.revive()
                for name, code in self.fleet.unexpected_exits[before:]:
                    self.log.note("process exited on its own; restarted", name=name, code=code)

    def _receiver_down(self) -> None:
        assert self.receiver is not None
        self.log.note("webhook receiver down", seconds=self.config.receiver_down[1])
        self.receiver.stop()
        time.sleep(self.config.receiver_down[1])
        self.receiver.start()
        self.log.note("webhook receiver back")

    def _restart_redis(self) -> None:
        """Restart the broker: Redis SIGKILLed (back empty), RabbitMQ stopped (back with its
        quorum queues' messages)."""
        queued = self.broker.queued()
        emails = self.broker.queued("refunds.notify")
        if isinstance(self.broker, PrivateRabbit):
            self.log.note("rabbitmq restart: stop", messages_queued=queued, emails_queued=emails)
            self.broker.restart(self.config.redis_down_seconds)
            self.log.note("rabbitmq back")
            return
        self.log.note("redis restart: SIGKILL", messages_queued=queued, emails_queued=emails)
        self.broker.restart(self.config.redis_down_seconds)
        self.log.note("redis back (empty)")

    def _break_database(self) -> None:
        self.log.note("database break starts", seconds=self.config.db_break_seconds)
        admin = create_engine(self.config.pg_admin_url, isolation_level="AUTOCOMMIT")
        terminated = 0
        try:
            with admin.connect() as connection:
                end = time.monotonic() + self.config.db_break_seconds
                while time.monotonic() < end:
                    terminated += int(
                        connection.execute(
                            text(
                                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE datname = :name AND pid <> pg_backend_pid()"
                            ),
                            {"name": self.db_name},
                        ).scalar_one()
                    )
                    time.sleep(0.05)
        finally:
            admin.dispose()
        self.log.db_connections_terminated += terminated
        self.log.note("database break ends", connections_terminated=terminated)

    def _burst(self, status: int, seconds: float) -> None:
        spec: dict[str, Any] = {"route": "*", "kind": "status", "status": status}
        if status == 429:
            spec["retry_after"] = 1
        fault_id = self.sim.add_fault(spec)
        self.log.note(f"{status} burst starts", seconds=seconds)
        time.sleep(seconds)
        self.sim.remove_fault(fault_id)
        self.log.note(f"{status} burst ends")


def refund_call_faults(config: FaultConfig, seed: int) -> list[dict[str, Any]]:
    """commit_then_* on ``commit_fault_share`` of refund calls, plus rare slow commits."""
    timeout = float(config.timings["MAGENTO_TIMEOUT"])
    per_kind = 1 - (1 - config.commit_fault_share) ** (1 / len(COMMIT_KINDS))
    faults = []
    for offset, route in enumerate(REFUND_ROUTES):
        for index, kind in enumerate(COMMIT_KINDS):
            fault: dict[str, Any] = {
                "route": route,
                "kind": kind,
                "probability": per_kind,
                "seed": seed * 100 + offset * 10 + index,
            }
            if kind == "commit_then_hang":
                fault["hang_seconds"] = timeout * 3
            faults.append(fault)
        if config.slow_commit_share > 0:
            # Latency runs before the service: the client times out, Magento commits later.
            faults.append(
                {
                    "route": route,
                    "kind": "latency",
                    "ms": timeout * 1000 + 400,
                    "probability": config.slow_commit_share,
                    "seed": seed * 100 + offset * 10 + 9,
                }
            )
    return faults


# ----------------------------------------------------------------------------- the checks


@dataclass
class Check:
    label: str
    value: Any
    ok: bool | None = None  # None: a figure, not an invariant


@dataclass
class FaultReport:
    config: dict[str, Any]
    figures: dict[str, Any]
    checks: list[Check]
    failures: dict[str, int]
    violations: dict[str, list[Any]]
    chaos: dict[str, Any]
    workdir: str

    @property
    def ok(self) -> bool:
        return all(check.ok is not False for check in self.checks)

    def table(self) -> str:
        width = max(len(check.label) for check in self.checks) + 2
        lines = [f"{'metric':<{width}}{'value':>12}  check", "-" * (width + 21)]
        for check in self.checks:
            mark = "" if check.ok is None else ("ok" if check.ok else "BROKEN")
            lines.append(f"{check.label:<{width}}{check.value!s:>12}  {mark}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "config": self.config,
            "figures": self.figures,
            "checks": [asdict(check) for check in self.checks],
            "failures_by_reason": self.failures,
            "violations": self.violations,
            "chaos": self.chaos,
        }


def failure_reason(message: str | None) -> str:
    """A failure message with its ids removed, so equal causes group together."""
    text_ = MARKER.sub("refund-worker:<id>", (message or "(none)").replace("\n", " "))
    text_ = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", text_)
    text_ = re.sub(r"\b(order|invoice|credit memo) \d+", r"\1 N", text_)
    text_ = re.sub(r"\d+(\.\d+)?s\b", "Ns", text_)
    return re.sub(r"after \d+ attempts", "after N attempts", text_)[:240]


def evaluate(
    database: Database,
    sim: SimControl,
    orders: list[PlannedOrder],
    keys: dict[str, str],
    started_wall: float,
    shop: str | None = None,
) -> tuple[list[Check], dict[str, Any], dict[str, int], dict[str, list[Any]]]:
    """Every invariant, from our database and what Magento (the simulator) holds; with
    ``shop``, that shop's refunds against that shop's simulator."""
    only = [Refund.shop == shop] if shop is not None else []
    with database.session_scope() as session:
        rows = {row.id: row for row in session.scalars(select(Refund).where(*only))}
        reconciled = session.scalar(
            select(func.count())
            .select_from(RefundEvent)
            .join(Refund, Refund.id == RefundEvent.refund_id)
            .where(RefundEvent.kind == "reconciled", *only)
        )
    memos = sim.creditmemos()
    emails = sim.emails()
    by_marker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    unmarked = []
    for memo in memos:
        found = {
            m for c in memo.get("comments") or [] for m in MARKER.findall(c.get("comment", ""))
        }
        if not found:
            unmarked.append(memo["entity_id"])
        for refund_id in found:
            by_marker[refund_id].append(memo)
    memo_by_id = {memo["entity_id"]: memo for memo in memos}
    violations: dict[str, list[Any]] = defaultdict(list)

    accepted = len(rows)
    missing = sorted(set(keys) - {row.idempotency_key for row in rows.values()})
    settled = ("succeeded", "failed", "needs_attention")
    unsettled = [r.id for r in rows.values() if r.status not in settled]
    # Nothing is forged in this run: a refund that needs attention is the worker's mistake.
    attention = [r.id for r in rows.values() if r.status == "needs_attention"]
    violations["needs_attention"] = attention
    succeeded = [r for r in rows.values() if r.status == "succeeded"]
    failed = [r for r in rows.values() if r.status == "failed"]
    duplicates = {rid: [m["entity_id"] for m in ms] for rid, ms in by_marker.items() if len(ms) > 1}
    no_memo = [
        r.id
        for r in succeeded
        if r.creditmemo_id not in memo_by_id
        or r.id
        not in {
            m
            for c in memo_by_id[r.creditmemo_id].get("comments") or []
            for m in MARKER.findall(c.get("comment", ""))
        }
    ]
    orphan = [
        m["entity_id"]
        for rid, ms in by_marker.items()
        for m in ms
        if rid not in rows
        or rows[rid].status != "succeeded"
        or rows[rid].creditmemo_id != m["entity_id"]
    ]
    # An orphan that is only the second memo of a duplicate is counted as a duplicate, not lost.
    duplicate_ids = {i for ids in duplicates.values() for i in ids}
    orphan = [i for i in orphan if i not in duplicate_ids] + unmarked
    lost = len(unsettled) + len(no_memo) + len(orphan) + len(missing)
    violations["unsettled"] = unsettled[:20]
    violations["succeeded_without_memo"] = no_memo[:20]
    violations["memo_without_succeeded_refund"] = orphan[:20]
    violations["accepted_key_without_row"] = missing[:20]
    violations["duplicate_memos"] = [[k, v] for k, v in list(duplicates.items())[:20]]

    emails_per_memo = Counter(email["creditmemo_id"] for email in emails)
    notified = [r for r in succeeded if r.notify_customer]
    wrong_emails = [
        (r.id, emails_per_memo[r.creditmemo_id])
        for r in notified
        if emails_per_memo[r.creditmemo_id] != 1
    ]
    stray_emails = [
        (r.id, emails_per_memo[r.creditmemo_id])
        for r in succeeded
        if not r.notify_customer and emails_per_memo[r.creditmemo_id]
    ]
    notification_status = Counter(r.notification_status for r in notified)
    violations["notified_without_exactly_one_email"] = wrong_emails[:20]
    violations["email_without_request"] = stray_emails[:20]

    ours_by_order: dict[int, list[Refund]] = defaultdict(list)
    for row in succeeded:
        if row.order_id is not None:  # a succeeded refund always has its order resolved
            ours_by_order[row.order_id].append(row)
    over = []
    for order in orders:
        if order.kind == "unknown":
            continue
        order_id = int(order.order["order_id"])
        magento = sim.order(order_id)
        magento_qty = sum(float(item.get("qty_refunded") or 0) for item in magento["items"])
        magento_money = float(magento.get("total_refunded") or 0)
        recorded = [
            memo_by_id[r.creditmemo_id]
            for r in ours_by_order[order_id]
            if r.creditmemo_id in memo_by_id
        ]
        our_qty = sum(float(i.get("qty") or 0) for memo in recorded for i in memo["items"])
        our_money = sum(float(memo.get("grand_total") or 0) for memo in recorded)
        if magento_qty > our_qty + 1e-6 or magento_money > our_money + 0.005:
            over.append(
                {
                    "order_id": order_id,
                    "magento_qty": magento_qty,
                    "our_qty": our_qty,
                    "magento_refunded": magento_money,
                    "our_refunded": our_money,
                }
            )
    violations["over_refunded_orders"] = over[:20]

    failures = Counter(failure_reason(r.last_error) for r in failed)
    refused = ("holded", "doesn't exist")
    unexpected_failures = [
        r for r in failed if not any(word in (r.last_error or "") for word in refused)
    ]
    settled_at = [r.settled_at.timestamp() for r in rows.values() if r.settled_at is not None]
    last_settled = round(max(settled_at) - started_wall, 1) if settled_at else None
    attempts = Counter(min(r.attempts, 10) for r in rows.values())

    checks = [
        Check("refunds accepted", accepted),
        Check("succeeded", len(succeeded)),
        Check("failed permanently", len(failed)),
        Check("  of which Magento refused (planned)", len(failed) - len(unexpected_failures)),
        Check("  of which other causes", len(unexpected_failures)),
        Check("credit memos in Magento", len(memos)),
        Check("reconciled by marker (no 2nd call)", int(reconciled or 0)),
        Check(
            "duplicate credit memos (must be 0)",
            sum(len(v) - 1 for v in duplicates.values()),
            not duplicates,
        ),
        Check("lost refunds (must be 0)", lost, lost == 0),
        Check("  accepted, never settled", len(unsettled) + len(missing)),
        Check("  succeeded, no memo in Magento", len(no_memo)),
        Check("  memo in Magento, not recorded", len(orphan)),
        Check("notified refunds (succeeded)", len(notified)),
        Check(
            "  with exactly 1 email (must be all)",
            len(notified) - len(wrong_emails),
            not wrong_emails and not stray_emails,
        ),
        Check("over-refunded orders (must be 0)", len(over), not over),
        Check("needing attention (must be 0: nothing forged)", len(attention), not attention),
        Check("time until last refund settled (s)", last_settled),
    ]
    figures = {
        "accepted": accepted,
        "succeeded": len(succeeded),
        "failed": len(failed),
        "failed_unexpected": len(unexpected_failures),
        "creditmemos": len(memos),
        "reconciled": int(reconciled or 0),
        "duplicate_creditmemos": sum(len(v) - 1 for v in duplicates.values()),
        "lost": lost,
        "notified": len(notified),
        "notified_with_one_email": len(notified) - len(wrong_emails),
        "emails": len(emails),
        "notification_status": dict(notification_status),
        "over_refunded_orders": len(over),
        "needs_attention": len(attention),
        "orders": len(orders),
        "last_settled_seconds": last_settled,
        "attempts_histogram": {str(k): v for k, v in sorted(attempts.items())},
    }
    return checks, figures, dict(failures.most_common()), dict(violations)


#: The event each settled state reports, and the refunds it applies to.
_EXPECTED_EVENTS: dict[str, Callable[[Refund], bool]] = {
    EventType.SUCCEEDED.value: lambda r: r.status == "succeeded",
    EventType.FAILED.value: lambda r: r.status == "failed",
    EventType.NEEDS_ATTENTION.value: lambda r: r.status == "needs_attention",
    EventType.NOTIFICATION_SENT.value: lambda r: r.notification_status == "sent",
}


def evaluate_webhooks(
    database: Database, receiver: Receiver, secret: str
) -> tuple[list[Check], dict[str, Any], dict[str, list[Any]]]:
    """The webhook invariants: every state change has exactly its one event in the outbox (none
    for a change that did not happen), every event reached the receiver (a 2xx for its id),
    every copy of an event carries the same id and body, every signature verifies."""
    with database.session_scope() as session:
        rows = list(session.scalars(select(Refund)))
        deliveries = list(session.scalars(select(WebhookDelivery)))
    events: dict[tuple[str, str], list[WebhookDelivery]] = defaultdict(list)
    for delivery in deliveries:
        events[(delivery.refund_id, delivery.event_type)].append(delivery)
    missing_events: list[list[str]] = []
    extra_events: list[list[str]] = []
    for row in rows:
        for event_type, applies in _EXPECTED_EVENTS.items():
            count = len(events.get((row.id, event_type), []))
            if applies(row) and count != 1:
                (missing_events if count == 0 else extra_events).append([row.id, event_type])
            elif not applies(row) and count:
                extra_events.append([row.id, event_type])
    received = list(receiver.received)
    bodies: dict[str, set[bytes]] = defaultdict(set)
    bad_signatures = 0
    for request in received:
        event_id = request.headers.get("webhook-id") or request.headers.get("Webhook-Id", "")
        bodies[event_id].add(request.body)
        try:
            verify(secret, request.headers, request.body, tolerance_seconds=3600)
        except WebhookVerificationError:
            bad_signatures += 1
    delivered_ids = {
        r.headers.get("webhook-id") or r.headers.get("Webhook-Id")
        for r in received
        if r.answered is not None and r.answered < 300
    }
    lost = [d.event_id for d in deliveries if d.event_id not in delivered_ids]
    unsettled = [d.id for d in deliveries if d.status != "delivered"]
    per_id = Counter(
        r.headers.get("webhook-id") or r.headers.get("Webhook-Id") for r in received
    )
    duplicates = sum(count - 1 for count in per_id.values() if count > 1)
    taken = Counter(
        r.headers.get("webhook-id") or r.headers.get("Webhook-Id")
        for r in received
        if r.answered is not None and r.answered < 300
    )
    taken_again = sum(count - 1 for count in taken.values() if count > 1)
    changed_bodies = [event_id for event_id, variants in bodies.items() if len(variants) > 1]
    unknown_ids = sorted(str(i) for i in set(per_id) - {d.event_id for d in deliveries})
    answered = Counter(str(r.answered) for r in received)
    checks = [
        Check("webhook events in the outbox", len(deliveries)),
        Check(
            "  state changes without their event (must be 0)",
            len(missing_events),
            not missing_events,
        ),
        Check("  events without their state change (must be 0)", len(extra_events),
              not extra_events),
        Check("webhook events lost (must be 0)", len(lost), not lost),
        Check("  deliveries not settled delivered", len(unsettled), not unsettled),
        Check("webhook requests received", len(received)),
        Check("  duplicates (same event again)", duplicates),
        Check("  of which after a 2xx (at least once)", taken_again),
        Check(
            "  duplicates with another body (must be 0)", len(changed_bodies), not changed_bodies
        ),
        Check("  ids the outbox never wrote (must be 0)", len(unknown_ids), not unknown_ids),
        Check("  bad signatures (must be 0)", bad_signatures, bad_signatures == 0),
    ]
    figures: dict[str, Any] = {
        "webhook_events": len(deliveries),
        "webhook_events_lost": len(lost),
        "webhook_requests": len(received),
        "webhook_duplicates": duplicates,
        "webhook_delivered_again": taken_again,
        "webhook_answers": dict(answered),
        "webhook_attempts_max": max((d.attempts for d in deliveries), default=0),
        "webhook_bad_signatures": bad_signatures,
    }
    violations: dict[str, list[Any]] = {
        "webhook_state_changes_without_event": missing_events[:20],
        "webhook_events_without_state_change": extra_events[:20],
        "webhook_events_lost": lost[:20],
        "webhook_duplicates_with_another_body": changed_bodies[:20],
        "webhook_unknown_ids": unknown_ids[:20],
    }
    return checks, figures, violations


def diagnose(
    database: Database, sim: SimControl, violations: dict[str, list[Any]], path: Path
) -> None:
    """Everything known about the refunds and credit memos behind a violation, as JSON."""
    memos = {memo["entity_id"]: memo for memo in sim.creditmemos()}
    memo_ids = set(violations.get("memo_without_succeeded_refund", []))
    for pair in violations.get("duplicate_memos", []):
        memo_ids.update(pair[1])
    refund_ids = set(violations.get("unsettled", [])) | set(
        violations.get("succeeded_without_memo", [])
    )
    order_ids = {memos[m]["order_id"] for m in memo_ids if m in memos}
    order_ids |= {o["order_id"] for o in violations.get("over_refunded_orders", [])}
    for memo_id in memo_ids:
        for comment in memos.get(memo_id, {}).get("comments") or []:
            refund_ids.update(MARKER.findall(comment.get("comment", "")))
    with database.session_scope() as session:
        rows = session.scalars(
            select(Refund).where(Refund.id.in_(refund_ids) | Refund.order_id.in_(order_ids))
        ).all()
        found = []
        for row in rows:
            calls = session.scalars(
                select(MagentoCall).where(MagentoCall.refund_id == row.id).order_by(MagentoCall.id)
            ).all()
            events = session.scalars(
                select(RefundEvent).where(RefundEvent.refund_id == row.id)
            ).all()
            found.append(
                {
                    **{c.name: getattr(row, c.name) for c in Refund.__table__.columns},
                    "calls": [
                        {c.name: getattr(call, c.name) for c in MagentoCall.__table__.columns}
                        for call in calls
                    ],
                    "events": [(e.kind, e.detail, e.created_at) for e in events],
                }
            )
    requests = [
        r
        for r in sim.requests(10_000)
        if any(
            f"/{order_id}" in r["path"] or f"={order_id}&" in r["path"] for order_id in order_ids
        )
    ]
    bodies = [
        b for b in sim.bodies(10_000) if any(f"/{order_id}/" in b["path"] for order_id in order_ids)
    ]
    path.write_text(
        json.dumps(
            {
                "violations": violations,
                "refunds": found,
                "memos": [memos[m] for m in memo_ids if m in memos]
                + [m for m in memos.values() if m["order_id"] in order_ids],
                "orders": {order_id: sim.order(order_id) for order_id in order_ids},
                "requests": requests,
                "bodies": bodies,
            },
            indent=1,
            default=str,
        )
    )


# ----------------------------------------------------------------------------- the run


def worker_env(
    config: FaultConfig, broker_url: str, database_url: str, magento_url: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_WORKER_")}
    env.update({f"REFUND_WORKER_{k}": v for k, v in config.timings.items()})
    env.update({f"REFUND_WORKER_{k}": v for k, v in config.webhook_timings.items()})
    env.update(
        {
            "REFUND_WORKER_BROKER_URL": broker_url,
            "REFUND_WORKER_DATABASE_URL": database_url,
            "REFUND_WORKER_MAGENTO_URL": magento_url,
            "REFUND_WORKER_MAGENTO_TOKEN": TOKEN,
            "REFUND_WORKER_LOG_LEVEL": config.log_level,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def settings_from_env(env: dict[str, str]) -> Settings:
    """The settings the processes get from ``env`` (a JSON list decoded as the environment's
    reader would)."""
    return Settings(
        **{
            k.removeprefix("REFUND_WORKER_").lower(): (  # type: ignore[arg-type]
                json.loads(v) if v.startswith("[") else v
            )
            for k, v in env.items()
            if k.startswith("REFUND_WORKER_")
        },
        _env_file=None,
    )


def _retrying(what: Callable[[], Any], log: ChaosLog, label: str, timeout: float = 120) -> Any:
    """Call ``what`` until it works: the database or Redis may be down for a moment."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            return what()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            log.note(f"{label} failed; retrying", error=type(exc).__name__)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _intake(
    config: FaultConfig,
    requests: list[dict[str, Any]],
    database: Database,
    publisher: DoublePublisher,
    log: ChaosLog,
    accepted: dict[str, str],
) -> None:
    """Submit the refunds in small batches spread over ``intake_seconds``."""
    batch_size = max(1, len(requests) // max(1, int(config.intake_seconds * 4)))
    batches = [requests[i : i + batch_size] for i in range(0, len(requests), batch_size)]
    pause = config.intake_seconds / max(1, len(batches))
    for number, batch in enumerate(batches):
        moment = number * pause
        while time.monotonic() - log.started < moment:
            time.sleep(0.01)
        validated = [validate_request(payload) for payload in batch]

        def submit(validated: list[Any] = validated) -> list[Any]:
            return enqueue_refunds(
                validated, database=database, publisher=publisher, created_by="fault-run"
            )

        for result in _retrying(submit, log, "intake batch"):
            if isinstance(result, IntakeRejection):
                raise RuntimeError(f"intake refused a planned refund: {result.error}")
            accepted[result.idempotency_key] = result.refund_id


def _settle(database: Database, fleet: Fleet, timeout: float, log: ChaosLog) -> float | None:
    """Seconds from the start until nothing is left to do, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.revive()
        try:
            with database.session_scope() as session:
                open_refunds = session.scalar(
                    select(func.count())
                    .select_from(Refund)
                    .where(
                        Refund.status.notin_(("succeeded", "failed"))
                        | Refund.notification_status.in_(UNSETTLED_NOTIFICATIONS)
                    )
                )
            with database.session_scope() as session:
                open_deliveries = session.scalar(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(WebhookDelivery.status.in_(UNSETTLED_DELIVERIES))
                )
            open_refunds = (open_refunds or 0) + (open_deliveries or 0)
        except Exception:
            open_refunds = -1
        if open_refunds == 0:
            return round(time.monotonic() - log.started, 1)
        time.sleep(0.5)
    return None


def run_fault_run(
    config: FaultConfig,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> FaultReport:
    """The whole run; returns the report (``report.ok`` tells whether every invariant held)."""
    rng = random.Random(config.seed)
    run_id = f"fault{config.seed}-{uuid.uuid4().hex[:6]}"
    workdir = workdir or Path(tempfile.mkdtemp(prefix="refund-fault-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with (
        private_redis(workdir) as redis_server,
        contextlib.ExitStack() as stack,
        private_pg_database(config.pg_admin_url) as (database_url, db_name),
        simulator_subprocess(
            workdir, ["--token", TOKEN, "--fault-seed", str(config.seed)]
        ) as simulator,
    ):
        broker: PrivateRedis | PrivateRabbit = redis_server
        if config.broker == "amqp":
            broker = stack.enter_context(private_rabbit(workdir))
        sim = SimControl(simulator.url)
        env = worker_env(config, broker.url(), database_url, simulator.url)
        if config.broker == "amqp":  # the shared rate limiter lives in Redis
            env["REFUND_WORKER_REDIS_URL"] = redis_server.url()
        settings = settings_from_env(env)
        database = Database.from_url(database_url)
        fleet = Fleet(env, workdir, config.concurrency)
        receiver = Receiver(mode=f"flaky:{config.webhook_failure_share}", seed=config.seed)
        webhook_secret = ""
        if config.webhooks:
            receiver.start()
        try:
            if config.webhooks:
                _, secret = register(
                    database, settings,
                    EndpointRequest(url=receiver.url, event_types=list(EventType)),
                    tenant="default", created_by="fault-run",
                )  # fmt: skip
                webhook_secret = secret.get_secret_value()
            orders = plan(config, rng)
            made = sim.add_orders([order.spec for order in orders])
            for order, summary in zip(orders, made, strict=True):
                order.order = summary
            requests = payloads(orders, run_id)
            progress(f"{len(requests)} refunds on {len(orders)} orders planned")
            for index in range(config.workers):
                fleet.start_worker(f"w{index + 1}")
            fleet.start_beat()
            fleet.wait_ready()
            progress(f"{config.workers} workers and beat ready; logs in {workdir}")
            for fault in refund_call_faults(config, config.seed):
                sim.add_fault(fault)

            log = ChaosLog(started=time.monotonic())
            started_wall = time.time()
            publisher = DoublePublisher(
                CeleryPublisher(create_app(settings)), 2 if config.duplicate_messages else 1
            )
            chaos = Chaos(
                config, fleet, broker, sim, db_name, log, rng,
                receiver=receiver if config.webhooks else None,
            )  # fmt: skip
            chaos.start()
            accepted: dict[str, str] = {}
            _intake(config, requests, database, publisher, log, accepted)
            log.note("intake done", accepted=len(accepted))
            progress(
                f"intake done: {len(accepted)} accepted at t={time.monotonic() - log.started:.0f}s"
            )
            ids = list(accepted.values())

            def publish_all_again() -> None:  # every refund and email id once more
                publisher.inner.publish_refunds(ids)
                publisher.inner.publish_notifications(ids)

            if config.duplicate_messages:  # mid-chaos, with many refunds in flight
                _retrying(publish_all_again, log, "re-publish")
                log.note("re-published every refund id", count=len(ids))
            while time.monotonic() - log.started < config.chaos_seconds:
                time.sleep(0.2)
            chaos.finish()  # the commit-then-fail faults stay on until the end
            log.note("chaos over")
            if config.duplicate_messages:  # and again, with the stragglers in flight
                _retrying(publish_all_again, log, "re-publish")
            progress(f"chaos over at t={time.monotonic() - log.started:.0f}s; settling")
            settled = _settle(database, fleet, config.settle_timeout, log)
            log.note("settled" if settled is not None else "settle timeout", t=settled)
            progress(f"settled at t={settled}s" if settled else "NOT settled")

            # Publish every id (refund, email, delivery) once more: settled work must stay.
            before = (len(sim.creditmemos()), len(sim.emails()), len(receiver.received))
            publish_all_again()
            if config.webhooks:
                with database.session_scope() as session:
                    delivery_ids = list(session.scalars(select(WebhookDelivery.id)))
                publisher.inner.publish_webhooks(delivery_ids)
            time.sleep(4)
            _settle(database, fleet, 30, log)
            after = (len(sim.creditmemos()), len(sim.emails()), len(receiver.received))
            chaos.finish_watching()

            checks, figures, failures, violations = evaluate(
                database, sim, orders, accepted, started_wall
            )
            if config.webhooks:
                hook_checks, hook_figures, hook_violations = evaluate_webhooks(
                    database, receiver, webhook_secret
                )
                checks.extend(hook_checks)
                figures.update(hook_figures)
                violations.update(hook_violations)
            if any(violations.values()):
                diagnose(database, sim, violations, workdir / "diagnostics.json")
            checks.append(
                Check(
                    "late redelivery of all ids: new memos/emails/webhooks",
                    f"{after[0] - before[0]}/{after[1] - before[1]}/{after[2] - before[2]}",
                    after == before,
                )
            )
            checks.append(
                Check("settled within the bound", settled is not None, settled is not None)
            )
            routes = sim.stats()["by_route"]
            refund_calls = sum(sum(routes.get(route, {}).values()) for route in REFUND_ROUTES)
            commit_faults = sum(log.faults_seen[kind] for kind in COMMIT_KINDS)
            figures["refund_calls"] = refund_calls
            figures["commit_then_fail_faults"] = commit_faults
            figures["commit_then_fail_share"] = round(commit_faults / max(1, refund_calls), 3)
            logs = fleet.log_counts(
                {
                    "tracebacks": "Traceback",
                    "lease lost before the refund call": "lease lost before the refund call",
                    "lease lost before recording": "lease lost before recording",
                    "sweeper re-published": "sweeper re-published",
                    "database unavailable": "database unavailable",
                    "unexpected error": "unexpected error",
                }
            )
            chaos_summary = {
                "kills": dict(log.kills),
                "worker_starts": dict(fleet.starts),
                "unexpected_exits": fleet.unexpected_exits,
                "broker": config.broker,
                "redis_restarts": broker.restarts,
                "db_connections_terminated": log.db_connections_terminated,
                "faults_fired": dict(log.faults_seen),
                "messages_published_by_intake": publisher.published,
                "log_counts": logs,
                "everything_settled_at_seconds": settled,
                "timeline": log.events,
            }
            return FaultReport(
                config=asdict(config),
                figures=figures,
                checks=checks,
                failures=failures,
                violations=violations,
                chaos=chaos_summary,
                workdir=str(workdir),
            )
        finally:
            fleet.stop()
            receiver.stop()
            sim.close()
            database.dispose()


# ----------------------------------------------------------------------------- several shops


@dataclass
class ShopsConfig:
    """A run across several shops served by one simulator under /s1, /s2, ...: the last shop
    answers ``sick_status`` to every call for ``sick_seconds`` (from the workers' start) when
    ``sick``; without it, that shop gets no refunds at all (the run to compare with)."""

    shops: int = 3
    refunds_per_shop: int = 300
    workers: int = 2
    concurrency: int = 8
    sick: bool = True
    sick_seconds: float = 60.0
    sick_status: int = 503
    #: Refunds of one shop in flight at once (the shop's ``max_in_flight``).
    max_in_flight: int = 6
    settle_timeout: float = 300.0
    seed: int = 7
    duplicate_messages: bool = True
    timings: dict[str, str] = field(
        default_factory=lambda: {
            "LEASE_SECONDS": "15",
            "RETRY_BACKOFF_BASE": "0.5",
            "RETRY_BACKOFF_MAX": "30",
            "IN_DOUBT_GRACE_SECONDS": "1",
            "REPUBLISH_AFTER_SECONDS": "60",
            "SWEEP_INTERVAL_SECONDS": "5",
            "VISIBILITY_TIMEOUT": "180",
            "MAX_ATTEMPTS": "10",
            "NOTIFICATION_MAX_ATTEMPTS": "10",
        }
    )
    pg_admin_url: str = PG_ADMIN_URL
    log_level: str = "INFO"

    @property
    def names(self) -> list[str]:
        return [f"s{number}" for number in range(1, self.shops + 1)]

    @property
    def sick_shop(self) -> str:
        return self.names[-1]


def shops_env(
    config: ShopsConfig, broker_url: str, database_url: str, simulator_url: str
) -> dict[str, str]:
    """The workers' environment: REFUND_WORKER_SHOPS, one entry per simulator shop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_WORKER_")}
    env.update({f"REFUND_WORKER_{k}": v for k, v in config.timings.items()})
    shops = [
        {
            "name": name,
            "url": f"{simulator_url}/{name}",
            "token": TOKEN,
            "timeout": 2,
            "rate_limit": 400,
            "max_in_flight": config.max_in_flight,
        }
        for name in config.names
    ]
    env.update(
        {
            "REFUND_WORKER_BROKER_URL": broker_url,
            "REFUND_WORKER_DATABASE_URL": database_url,
            "REFUND_WORKER_SHOPS": json.dumps(shops),
            "REFUND_WORKER_MAGENTO_TIMEOUT": "2",
            "REFUND_WORKER_LOG_LEVEL": config.log_level,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def _open_count(database: Database, shops: Sequence[str]) -> int:
    with database.session_scope() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Refund)
                .where(
                    Refund.shop.in_(list(shops)),
                    Refund.status.notin_(("succeeded", "failed", "needs_attention"))
                    | Refund.notification_status.in_(UNSETTLED_NOTIFICATIONS),
                )
            )
            or 0
        )


def _wait_settled(
    database: Database, fleet: Fleet, shops: Sequence[str], timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.revive()
        with contextlib.suppress(Exception):
            if _open_count(database, shops) == 0:
                return True
        time.sleep(0.25)
    return False


def _throughput(database: Database, shops: Sequence[str], started_wall: float) -> dict[str, Any]:
    """Refunds/s of ``shops``: their refunds over the time from ``started_wall`` (the workers
    ready, every refund already queued) to the last one's settling (its row's timestamp)."""
    with database.session_scope() as session:
        count, last = session.execute(
            select(func.count(), func.max(Refund.settled_at)).where(
                Refund.shop.in_(list(shops))
            )
        ).one()
    if not count or last is None:
        return {"refunds": 0, "seconds": None, "refunds_per_second": None}
    seconds = max(1e-3, last.timestamp() - started_wall)
    return {
        "refunds": int(count),
        "seconds": round(seconds, 2),
        "refunds_per_second": round(count / seconds, 1),
    }


def run_shops_run(
    config: ShopsConfig,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> FaultReport:
    """One run across ``config.shops`` shops; the report's figures hold the healthy shops'
    refunds/s and each shop's invariants (0 lost, 0 duplicate credit memos, one email each)."""
    rng = random.Random(config.seed)
    run_id = f"shops{config.seed}-{uuid.uuid4().hex[:6]}"
    workdir = workdir or Path(tempfile.mkdtemp(prefix="refund-shops-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    names = config.names
    busy = names if config.sick else names[:-1]
    healthy = names[:-1]
    shop_args = [arg for name in names for arg in ("--shop", name)]
    with (
        private_redis(workdir) as broker,
        private_pg_database(config.pg_admin_url, "rw_shops") as (database_url, _),
        simulator_subprocess(
            workdir, ["--token", TOKEN, "--fault-seed", str(config.seed), *shop_args]
        ) as simulator,
    ):
        sims = {name: SimControl(f"{simulator.url}/{name}") for name in names}
        env = shops_env(config, broker.url(), database_url, simulator.url)
        settings = settings_from_env(env)
        database = Database.from_url(database_url)
        fleet = Fleet(env, workdir, config.concurrency)
        log = ChaosLog(started=time.monotonic())
        try:
            planned: dict[str, list[PlannedOrder]] = {}
            requests: list[dict[str, Any]] = []
            for name in busy:
                orders = plan(FaultConfig(refunds=config.refunds_per_shop), rng)
                made = sims[name].add_orders([order.spec for order in orders])
                for order, summary in zip(orders, made, strict=True):
                    order.order = summary
                planned[name] = orders
                for payload in payloads(orders, f"{run_id}-{name}"):
                    requests.append({**payload, "shop": name})
            rng.shuffle(requests)  # the shops' refunds interleaved in the queue
            progress(f"{len(requests)} refunds planned over shops {', '.join(busy)}")
            sick_fault: int | None = None
            if config.sick:
                sick_fault = sims[config.sick_shop].add_fault(
                    {"route": "*", "kind": "status", "status": config.sick_status}
                )
            publisher = DoublePublisher(
                CeleryPublisher(create_app(settings)), 2 if config.duplicate_messages else 1
            )
            accepted: dict[str, str] = {}
            for start in range(0, len(requests), 500):
                batch = [validate_request(r) for r in requests[start : start + 500]]
                for result in enqueue_refunds(
                    batch,
                    database=database,
                    publisher=publisher,
                    created_by="shops-run",
                    shops=settings.intake_shops,
                ):
                    if isinstance(result, IntakeRejection):
                        raise RuntimeError(f"intake refused a planned refund: {result.error}")
                    accepted[result.idempotency_key] = result.refund_id
            progress(f"intake done: {len(accepted)} accepted")
            # The workers start on a full queue: the clock runs from their start, so the intake
            # (the sick shop's refunds too, in the same process) is not measured as theirs.
            for index in range(config.workers):
                fleet.start_worker(f"w{index + 1}")
            fleet.start_beat()
            fleet.wait_ready()
            log = ChaosLog(started=time.monotonic())
            started_wall = time.time()
            progress(f"{config.workers} workers x {config.concurrency} threads ready; {workdir}")

            healthy_settled = _wait_settled(database, fleet, healthy, config.settle_timeout)
            healthy_at = round(time.monotonic() - log.started, 1)
            progress(f"healthy shops settled at t={healthy_at}s")
            if sick_fault is not None:
                while time.monotonic() - log.started < config.sick_seconds:
                    time.sleep(0.2)
                sims[config.sick_shop].remove_fault(sick_fault)
                log.note("sick shop healthy again")
                progress(f"{config.sick_shop} answers again at t={config.sick_seconds:.0f}s")
            settled = _wait_settled(database, fleet, busy, config.settle_timeout)
            settled_at = round(time.monotonic() - log.started, 1)
            progress(f"all settled at t={settled_at}s" if settled else "NOT settled")

            ids = list(accepted.values())
            before = {name: len(sims[name].creditmemos()) for name in busy}
            publisher.inner.publish_refunds(ids)  # late redelivery of every id: no new memo
            publisher.inner.publish_notifications(ids)
            time.sleep(4)
            _wait_settled(database, fleet, busy, 30)
            after = {name: len(sims[name].creditmemos()) for name in busy}

            checks: list[Check] = []
            figures: dict[str, Any] = {"shops": {}}
            violations: dict[str, list[Any]] = {}
            failures: dict[str, int] = {}
            for name in busy:
                keys = {k: v for k, v in accepted.items() if k.startswith(f"{run_id}-{name}-")}
                shop_checks, shop_figures, shop_failures, shop_violations = evaluate(
                    database, sims[name], planned[name], keys, started_wall, shop=name
                )
                role = "sick" if config.sick and name == config.sick_shop else "healthy"
                shop_figures["throughput"] = _throughput(database, [name], started_wall)
                figures["shops"][name] = {"role": role, **shop_figures}
                for check in shop_checks:
                    if check.ok is not None or check.label in ("succeeded", "refunds accepted"):
                        checks.append(Check(f"{name}: {check.label}", check.value, check.ok))
                for key, value in shop_violations.items():
                    if value:
                        violations[f"{name}:{key}"] = value
                for reason, count in shop_failures.items():
                    failures[f"{name}: {reason}"] = count
            figures["healthy"] = _throughput(database, healthy, started_wall)
            figures["healthy_settled_at_seconds"] = healthy_at if healthy_settled else None
            figures["all_settled_at_seconds"] = settled_at if settled else None
            figures["lost"] = sum(figures["shops"][n]["lost"] for n in busy)
            figures["duplicate_creditmemos"] = sum(
                figures["shops"][n]["duplicate_creditmemos"] for n in busy
            )
            checks.append(
                Check(
                    "healthy shops' refunds/s",
                    figures["healthy"]["refunds_per_second"],
                )
            )
            checks.append(Check("lost refunds, all shops (must be 0)", figures["lost"],
                                figures["lost"] == 0))
            checks.append(
                Check(
                    "duplicate credit memos, all shops (must be 0)",
                    figures["duplicate_creditmemos"],
                    figures["duplicate_creditmemos"] == 0,
                )
            )
            checks.append(Check("late redelivery: new memos", sum(after.values()) -
                                sum(before.values()), after == before))
            checks.append(Check("settled within the bound", settled, settled))
            with database.session_scope() as session:
                calls = dict(
                    session.execute(
                        select(Refund.shop, func.count())
                        .select_from(MagentoCall)
                        .join(Refund, Refund.id == MagentoCall.refund_id)
                        .group_by(Refund.shop)
                    ).all()
                )
            figures["magento_calls_by_shop"] = calls
            logs = fleet.log_counts(
                {
                    "tracebacks": "Traceback",
                    "deferred (shop paused)": "is paused for",
                    "unexpected error": "unexpected error",
                }
            )
            return FaultReport(
                config=asdict(config),
                figures=figures,
                checks=checks,
                failures=failures,
                violations=violations,
                chaos={"log_counts": logs, "timeline": log.events,
                       "worker_starts": dict(fleet.starts),
                       "unexpected_exits": fleet.unexpected_exits},
                workdir=str(workdir),
            )
        finally:
            fleet.stop()
            for sim in sims.values():
                sim.close()
            database.dispose()


def run_shops_comparison(
    config: ShopsConfig,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
    rounds: int = 1,
) -> dict[str, Any]:
    """The healthy shops' refunds/s without the sick shop's refunds, then with them while it
    answers ``sick_status``, ``rounds`` times in alternation (the machine's noise hits both
    alike); ``ok`` when every run kept every invariant and the median of the rounds' ratios
    (with ÷ without) is at least 0.9."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="refund-shops-"))
    reports: dict[str, FaultReport] = {}
    ratios: list[float] = []
    rates: dict[str, list[float]] = {"without_sick_shop": [], "with_sick_shop": []}
    for round_ in range(1, rounds + 1):
        for label, sick in (("without_sick_shop", False), ("with_sick_shop", True)):
            progress(f"--- round {round_}: run {label}")
            run = ShopsConfig(**{**asdict(config), "sick": sick})
            name = f"{label}_{round_}"
            reports[name] = run_shops_run(run, workdir / name, progress)
            rate = reports[name].figures["healthy"]["refunds_per_second"]
            rates[label].append(rate or 0.0)
        base, sick_rate = rates["without_sick_shop"][-1], rates["with_sick_shop"][-1]
        ratios.append(round(sick_rate / base, 3) if base else 0.0)
    ratio = statistics.median(ratios)
    within = ratio >= 0.9
    return {
        "ok": within and all(report.ok for report in reports.values()),
        "healthy_refunds_per_second_without_sick_shop": statistics.median(
            rates["without_sick_shop"]
        ),
        "healthy_refunds_per_second_with_sick_shop": statistics.median(rates["with_sick_shop"]),
        "ratio": ratio,
        "ratios": ratios,
        "rates": rates,
        "within_10_percent": within,
        "runs": {label: report.to_json() for label, report in reports.items()},
        "tables": {label: report.table() for label, report in reports.items()},
    }
