"""Shared pieces of the refund-worker benchmarks: the stack, workers, timing, CPU, output.

Everything runs against the machine's Redis and PostgreSQL: a Redis db of our own (flushed
before and after, never FLUSHALL), a private PostgreSQL database per run (dropped after), and
the simulator as its own process. The broker is that Redis db, or (``broker="amqp"``, the
scripts' ``--broker amqp|both``) a private RabbitMQ node (``refund_worker.testing.rabbit``,
~9 s to start), the Redis db then serving the limiter and the shop gates only. Workers are
real processes started through ``bench/worker.py`` (the app of ``refund_worker.celery_app`` plus
a no-op task and optional prototype patches), with the same arguments ``refund-worker worker``
passes.

The machine is shared and noisy, so every figure is a ratio taken in the same run, and the
scripts repeat and report medians where it matters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import redis
from celery.utils.nodenames import host_format
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
#: The code measured: the working tree, or a snapshot (``BENCH_SRC=/tmp/snap/src``, e.g. from
#: ``git archive HEAD src | tar -x -C /tmp/snap``) while others edit the tree.
SRC = Path(os.environ.get("BENCH_SRC") or ROOT / "src").resolve()
sys.path.insert(0, str(SRC))
#: The Redis server (``BENCH_REDIS_PORT=6391`` for a private one); each script's ``--redis-db``
#: picks its database.
REDIS_PORT = int(os.environ.get("BENCH_REDIS_PORT") or 6379)

from refund_worker import celery_app as _celery_app  # noqa: E402
from refund_worker.celery_app import QUEUE, create_app  # noqa: E402
from refund_worker.db import Database, upgrade  # noqa: E402

try:
    from refund_worker.publishing import CeleryPublisher
except ImportError:  # a snapshot from before #19 (BENCH_SRC), when tasks.py published
    from refund_worker.tasks import CeleryPublisher  # type: ignore[attr-defined,no-redef]
from refund_worker.settings import Settings  # noqa: E402
from refund_worker.simulator.testing import SimulatorProcess, simulator_process  # noqa: E402

if TYPE_CHECKING:  # imported where used: a snapshot (BENCH_SRC) may predate RabbitMQ support
    from refund_worker.testing.rabbit import PrivateRabbit

console = Console(width=150)
#: The emails' queue (the refunds queue in a snapshot from before they had their own).
NOTIFY_QUEUE: str = getattr(_celery_app, "NOTIFY_QUEUE", QUEUE)
TOKEN = "bench-token"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NOOP_TASK = "bench.noop"
#: What ``--broker`` takes: one broker, or both alternating within one run.
BROKERS = {"redis": ("redis",), "amqp": ("amqp",), "both": ("redis", "amqp")}

#: Settings of the benchmarked workers: the shipped defaults, except no shared rate limit
#: (50 calls/s by default, which would be the only thing measured) and test-fast retries.
WORKER_ENV = {
    "REFUND_WORKER_MAGENTO_RATE_LIMIT": "0",
    "REFUND_WORKER_MAGENTO_TIMEOUT": "10",
    "REFUND_WORKER_LOG_LEVEL": "INFO",
}


# ---------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Redis db + private PostgreSQL database + simulator process (+ the private RabbitMQ node
    when ``rabbit`` is set: the broker), and the workers started."""

    redis_url: str
    database_url: str
    simulator: SimulatorProcess
    log_dir: Path
    env: dict[str, str]
    settings: Settings
    database: Database
    rabbit: PrivateRabbit | None = None
    workers: list[Worker] = field(default_factory=list)

    @property
    def broker(self) -> str:
        return "redis" if self.rabbit is None else "amqp"

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def publisher(self) -> CeleryPublisher:
        return CeleryPublisher(create_app(self.settings))

    def start_worker(
        self,
        *,
        pool: str = "threads",
        concurrency: int = 32,
        events: bool = True,
        patches: Sequence[str] = (),
        extra: Sequence[str] = (),
    ) -> Worker:
        worker = Worker.start(self, pool, concurrency, events, patches, extra)
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    def reset_broker(self) -> None:
        """Empty the queues (with no workers running: RabbitMQ keeps unacknowledged messages)."""
        if self.rabbit is None:
            self.redis.flushdb()
            return
        from refund_worker.celery_app import amqp_queues

        with create_app(self.settings).connection_for_write() as connection:
            channel = connection.default_channel
            for queue in amqp_queues():
                queue(channel).declare()
                queue(channel).purge()

    def truncate(self) -> None:
        with self.database.engine.begin() as connection:
            connection.execute(
                text("TRUNCATE refunds, magento_calls, refund_events, order_locks CASCADE")
            )


@contextlib.contextmanager
def stack(redis_db: int = 7, name: str = "bench", broker: str = "redis") -> Iterator[Stack]:
    """The whole environment; everything it created is removed on exit. ``broker``: ``redis``
    (the Redis db) or ``amqp`` (a private RabbitMQ node; the Redis db still backs the limiter
    and the shop gates, as ``REFUND_WORKER_REDIS_URL``)."""
    redis_url = f"redis://127.0.0.1:{REDIS_PORT}/{redis_db}"
    with (
        redis_database(redis_url),
        private_database(name) as database_url,
        simulator_process(seed=None, extra_args=["--token", TOKEN]) as simulator,
        tempfile.TemporaryDirectory(prefix=f"{name}-logs-") as log_dir,
        contextlib.ExitStack() as rabbit_context,
    ):
        rabbit = None
        broker_env = {"REFUND_WORKER_BROKER_URL": redis_url}
        if broker == "amqp":
            from refund_worker.testing.rabbit import private_rabbit

            rabbit = rabbit_context.enter_context(private_rabbit(Path(log_dir)))
            broker_env = {
                "REFUND_WORKER_BROKER_URL": rabbit.url(),
                "REFUND_WORKER_REDIS_URL": redis_url,
            }
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REFUND_WORKER_")},
            **WORKER_ENV,
            **broker_env,
            "REFUND_WORKER_DATABASE_URL": database_url,
            "REFUND_WORKER_MAGENTO_URL": simulator.url,
            "REFUND_WORKER_MAGENTO_TOKEN": TOKEN,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(SRC), str(BENCH)]),
        }
        settings = Settings(
            **{
                k.removeprefix("REFUND_WORKER_").lower(): v
                for k, v in env.items()
                if k.startswith("REFUND_WORKER_")
            }
        )
        database = Database.from_url(database_url)
        the_stack = Stack(
            redis_url, database_url, simulator, Path(log_dir), env, settings, database, rabbit
        )
        try:
            yield the_stack
        finally:
            the_stack.stop_workers()
            database.dispose()


@contextlib.contextmanager
def stacks(broker: str, redis_db: int = 7, name: str = "bench") -> Iterator[dict[str, Stack]]:
    """A stack per broker of ``--broker`` (``BROKERS``), all open before any worker starts (they
    share the Redis db, flushed as each opens). Scripts alternate between them within a run."""
    with contextlib.ExitStack() as context:
        yield {kind: context.enter_context(stack(redis_db, name, kind)) for kind in BROKERS[broker]}


@contextlib.contextmanager
def redis_database(url: str) -> Iterator[None]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield
    finally:
        client.flushdb()
        client.close()


@contextlib.contextmanager
def private_database(name: str) -> Iterator[str]:
    """A fresh PostgreSQL database at the schema head; dropped (FORCE) on exit."""
    db_name = f"{name}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{db_name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
    try:
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()


# ---------------------------------------------------------------------------- simulator


def create_orders(
    simulator: SimulatorProcess, count: int, payment: str = "online", chunk: int = 1000
) -> list[tuple[int, int, bool]]:
    """(order id, invoice id, online) for ``count`` invoiced orders, one per refund.

    ``payment`` is ``online`` (braintree: GET order + GET invoice + POST invoice refund),
    ``offline`` (checkmo: GET order + POST order refund) or ``mixed`` (alternating).
    """
    made: list[tuple[int, int, bool]] = []
    with httpx.Client(base_url=simulator.url, timeout=120) as client:
        for start in range(0, count, chunk):
            specs = []
            for index in range(start, min(count, start + chunk)):
                online = payment == "online" or (payment == "mixed" and index % 2 == 0)
                specs.append(
                    {
                        "payment_method": "braintree" if online else "checkmo",
                        "shipping": 5,
                        "items": [{"sku": "BENCH", "qty": 1, "price": 10}],
                    }
                )
            response = client.post("/_simulator/orders:batch", json={"orders": specs})
            response.raise_for_status()
            for spec, order in zip(specs, response.json()["orders"], strict=True):
                made.append(
                    (order["order_id"], order["invoice_id"], spec["payment_method"] != "checkmo")
                )
    return made


def set_latency(simulator: SimulatorProcess, ms: float) -> None:
    """Replace every fault by a fixed latency on every route (0 = none)."""
    with httpx.Client(base_url=simulator.url, timeout=30) as client:
        client.delete("/_simulator/faults").raise_for_status()
        if ms:
            client.post(
                "/_simulator/faults", json={"route": "*", "kind": "latency", "ms": ms}
            ).raise_for_status()


def refund_requests(
    orders: Sequence[tuple[int, int, bool]], run: str, notify: bool = True
) -> list[dict[str, Any]]:
    """One full refund per order, with the invoice id, notifying the customer."""
    return [
        {
            "idempotency_key": f"{run}-{index}",
            "order_id": order_id,
            "invoice_id": invoice_id,
            "notify_customer": notify,
        }
        for index, (order_id, invoice_id, _) in enumerate(orders)
    ]


def item_refunds(count: int, run: str) -> list[Any]:
    """``count`` validated partial refunds (one item each, customer notified) of orders 1..count,
    for scripts that drive the store without Magento."""
    from refund_worker.intake import validate_request

    return [
        validate_request(
            {
                "idempotency_key": f"{run}-{n}",
                "order_id": n + 1,
                "notify_customer": True,
                "items": [{"order_item_id": 1, "qty": 1}],
            }
        )
        for n in range(count)
    ]


class NoPublisher:
    """A publisher that publishes nothing: intake for scripts that need the rows, not messages."""

    def publish_refunds(self, refund_ids: Sequence[str]) -> None:
        pass

    def publish_notifications(self, refund_ids: Sequence[str]) -> None:
        pass


def calls_in_sequence(orders: Sequence[tuple[int, int, bool]], notify: bool = True) -> float:
    """Magento calls one refund makes one after the other (mean over the orders)."""
    per = [(3 if online else 2) + (1 if notify else 0) for _, _, online in orders]
    return sum(per) / len(per)


# ---------------------------------------------------------------------------- workers


@dataclass
class Worker:
    """One worker process (``bench/worker.py``), its log, and its argv."""

    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]
    name: str

    @classmethod
    def start(
        cls,
        the_stack: Stack,
        pool: str,
        concurrency: int,
        events: bool,
        patches: Sequence[str],
        extra: Sequence[str],
    ) -> Worker:
        index = len(the_stack.workers)
        log_path = the_stack.log_dir / f"worker-{index}-{time.monotonic_ns()}.log"
        argv = [
            sys.executable,
            str(BENCH / "worker.py"),
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--queues",
            QUEUE,
            "--loglevel",
            the_stack.env.get("REFUND_WORKER_LOG_LEVEL", "INFO"),
            "-n",
            name := host_format(f"bench{index}-{os.getpid()}@%h"),
            "--without-gossip",
            "--without-mingle",
            *(["-E"] if events else []),
            *extra,
        ]
        env = dict(the_stack.env)
        env["BENCH_PATCHES"] = ",".join(patches)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        worker = cls(process, log_path, argv, name)
        worker.wait_ready()
        return worker

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited {self.process.returncode}:\n{self.log()}")
            if " ready." in self.log():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mb(self) -> float:
        """Resident memory of the worker and its children (prefork), in MiB."""
        return sum(p.memory_info().rss for p in _tree(self.pid)) / 2**20

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


# ---------------------------------------------------------------------------- CPU accounting


def _cpu_seconds(processes: Sequence[psutil.Process]) -> dict[int, float]:
    found = {}
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            found[process.pid] = times.user + times.system
    return found


class CpuMeter:
    """CPU seconds spent during a window, by role: workers, simulator, our PostgreSQL backends,
    redis-server (shared with others), the private RabbitMQ node (if any), this process, and the
    whole machine. ``worker_main`` is
    the workers' main processes alone (with prefork, the consumer without its children); it is
    part of ``workers``."""

    def __init__(self, the_stack: Stack) -> None:
        self.stack = the_stack
        self.start_wall = 0.0
        self.start: dict[str, dict[int, float]] = {}
        self.start_machine: Any = None

    def _roles(self) -> dict[str, list[psutil.Process]]:
        workers = [p for w in self.stack.workers for p in _tree(w.pid)]
        return {
            "workers": workers,
            "worker_main": [p for p in workers if p.pid in {w.pid for w in self.stack.workers}],
            "simulator": _tree(self.stack.simulator.process.pid),
            "postgres": self._backends(),
            "redis": [p for p in psutil.process_iter(["name"]) if p.info["name"] == "redis-server"],
            "rabbit": self._rabbit(),
            "bench": [psutil.Process()],
        }

    def _rabbit(self) -> list[psutil.Process]:
        """The private RabbitMQ node (ours alone, unlike redis-server)."""
        node = self.stack.rabbit
        return _tree(node.process.pid) if node is not None and node.process is not None else []

    def _backends(self) -> list[psutil.Process]:
        db_name = self.stack.database_url.rsplit("/", 1)[1]
        with self.stack.database.engine.connect() as connection:
            pids = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": db_name}
            ).scalars()
            found = []
            for pid in pids:
                with contextlib.suppress(psutil.NoSuchProcess):
                    found.append(psutil.Process(pid))
            return found

    def __enter__(self) -> CpuMeter:
        self.start = {role: _cpu_seconds(ps) for role, ps in self._roles().items()}
        self.start_machine = psutil.cpu_times()
        self.start_wall = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.start_wall
        end_machine = psutil.cpu_times()
        self.seconds: dict[str, float] = {}
        for role, processes in self._roles().items():
            before = self.start.get(role, {})
            now = _cpu_seconds(processes)
            self.seconds[role] = sum(max(0.0, v - before.get(pid, 0.0)) for pid, v in now.items())
        busy = _busy(end_machine) - _busy(self.start_machine)
        self.seconds["machine"] = busy
        apart = ("machine", "redis", "worker_main")  # worker_main is counted in workers
        ours = sum(v for k, v in self.seconds.items() if k not in apart)
        self.seconds["others"] = max(0.0, busy - ours - self.seconds["redis"])

    def cores(self) -> dict[str, float]:
        """Average cores used by each role during the window."""
        return {role: round(seconds / self.wall, 2) for role, seconds in self.seconds.items()}


def _busy(times: Any) -> float:
    return float(times.user + times.nice + times.system + times.irq + times.softirq + times.steal)


# ---------------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def queue_drained(the_stack: Stack) -> Callable[[], bool]:
    """True once the refunds and emails queues and Redis's unacked hash are all empty (RabbitMQ:
    see ``_rabbit_drained``)."""
    if the_stack.rabbit is not None:
        return _rabbit_drained(the_stack)
    client = the_stack.redis

    def drained() -> bool:
        pipe = client.pipeline()
        pipe.llen(QUEUE)
        pipe.llen(NOTIFY_QUEUE)
        pipe.hlen("unacked")
        return sum(pipe.execute()) == 0

    return drained


def _rabbit_drained(the_stack: Stack) -> Callable[[], bool]:
    """True once the refunds and emails queues hold no ready message (a passive declare: the
    queue's own count, live) and no worker holds one unacknowledged (asked only then: the
    workers' reserved and active tasks, ``celery inspect``; the node's own unacknowledged count,
    ``rabbitmqctl list_queues``, lags by seconds)."""
    app = create_app(the_stack.settings)
    connection = app.connection_for_write()
    channel = connection.default_channel
    workers = [worker.name for worker in the_stack.workers]
    inspect = app.control.inspect(destination=workers, timeout=5, connection=connection)

    def drained() -> bool:
        for queue in (QUEUE, NOTIFY_QUEUE):
            if channel.queue_declare(queue=queue, passive=True).message_count:
                return False
        for held in (inspect.reserved(), inspect.active()):
            if held is None or len(held) < len(workers) or any(held.values()):
                return False
        connection.release()
        return True

    return drained


def count_done(the_stack: Stack) -> Callable[[], tuple[int, int]]:
    """(refunds fully done (refund settled and notification settled), failed) so far."""

    def count() -> tuple[int, int]:
        with the_stack.database.engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT count(*) FILTER (WHERE status IN ('succeeded','failed') AND "
                    "notification_status NOT IN ('pending','sending','retrying')), "
                    "count(*) FILTER (WHERE status = 'failed') FROM refunds"
                )
            ).one()
        return int(row[0]), int(row[1])

    return count


# ---------------------------------------------------------------------------- output


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "src": str(SRC),
        "git_head": _git_head(),
    }


def _git_head() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return ""


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def median_row(what: str, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """A row of the medians of ``rows``' numeric ``keys`` (None where a row has none)."""
    row: dict[str, Any] = {"what": what}
    for key in keys:
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        row[key] = round(median(values), 3) if values else None
    return row


def add_broker_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        choices=list(BROKERS),
        default="redis",
        help="redis, a private RabbitMQ node (amqp), or both alternating run by run",
    )


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] = ()) -> None:
    columns = list(columns) or list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title)
    for column in columns:
        text_column = column in ("what", "run", "note")
        table.add_column(column, justify="left" if text_column else "right", no_wrap=text_column)
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def by_broker(
    settings: dict[str, Any], sections: dict[str, dict[str, Any]], **shared: Any
) -> dict[str, Any]:
    """A run's JSON: the one broker's section inline (the shape from before ``--broker``), or a
    section per broker."""
    if len(sections) > 1:
        return {"settings": settings, **shared, **sections}
    return {"settings": settings, **next(iter(sections.values())), **shared}


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"command": " ".join(["python", *sys.argv]), "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    console.print(f"wrote {path.relative_to(ROOT)}")
    return path


# ---------------------------------------------------------------------------- measured runs


def publish_tasks(
    the_stack: Stack, task: str, args: Sequence[tuple[Any, ...]], chunk: int = 1000
) -> None:
    """One ``task`` message per argument tuple, pipelined like ``publishing.publish`` does. On
    RabbitMQ without publisher confirms: waiting for each one's (~2 ms here) would make this
    publisher, not the workers' drain, what ``run_tasks`` measures."""
    app = create_app(the_stack.settings)
    if the_stack.rabbit is not None:
        app.conf.broker_transport_options = {"confirm_publish": False}
    with app.producer_or_acquire() as producer:
        for start in range(0, len(args), chunk):
            with producer.batch():
                for task_args in args[start : start + chunk]:
                    app.send_task(task, args=task_args, producer=producer, queue=QUEUE)


def run_tasks(
    the_stack: Stack, task: str, args: Sequence[tuple[Any, ...]], timeout: float = 600
) -> dict[str, Any]:
    """``task`` messages (one per argument tuple) drained per second by the running workers,
    and their CPU per task. A task that publishes another must acknowledge late (after it
    published), or the queues may look drained before its child is done."""
    drained = queue_drained(the_stack)
    count = len(args)
    with CpuMeter(the_stack) as meter:
        publish_tasks(the_stack, task, args)
        published = time.perf_counter() - meter.start_wall
        wait_until(drained, timeout, 0.02, f"the {task} tasks to drain")
    return {
        "tasks": count,
        "seconds": round(meter.wall, 3),
        # the drain overlaps the publishing: near ``seconds``, the publisher is the bound
        "publish_s": round(published, 3),
        "tasks_per_s": round(count / meter.wall, 1),
        "worker_cpu_ms_per_task": round(1000 * meter.seconds["workers"] / count, 3),
        "main_cpu_ms_per_task": round(1000 * meter.seconds["worker_main"] / count, 3),
        "cpu_ms_per_task": {
            role: round(1000 * seconds / count, 3) for role, seconds in meter.seconds.items()
        },
        "cores": meter.cores(),
    }


def run_noop(the_stack: Stack, count: int, timeout: float = 600) -> dict[str, Any]:
    """Bare no-op tasks drained per second by the running workers, and their CPU per task."""
    return run_tasks(the_stack, NOOP_TASK, [()] * count, timeout)


def run_refunds(
    the_stack: Stack,
    requests: Sequence[dict[str, Any]],
    timeout: float = 3600,
    on_progress: Callable[[int], None] | None = None,
    stall: float = 60,
    publisher: Any = None,
) -> dict[str, Any]:
    """Enqueue ``requests`` (through ``intake.enqueue_refunds``) to the running workers and wait
    until every refund and its notification is settled (``publisher``: another than the
    stack's, e.g. one publishing ``bench/floor.py``'s tasks). Rates are per second of wall time from
    the start of the enqueue (notifications queue behind the refunds, FIFO, so a run ends with
    them: only the whole run's rate means anything)."""
    from refund_worker.intake import enqueue_refunds, validate_request

    the_stack.truncate()
    publisher = publisher or the_stack.publisher()
    count = count_done(the_stack)
    sessions_before = _sessions(the_stack)
    with CpuMeter(the_stack) as meter:
        results = enqueue_refunds(
            [validate_request(r) for r in requests],
            database=the_stack.database,
            publisher=publisher,
        )
        enqueued_at = time.perf_counter() - meter.start_wall
        done_failed = (0, 0)
        progress = [0, time.perf_counter()]  # refunds done, when that number last grew

        def finished() -> bool:
            nonlocal done_failed
            done_failed = count()
            if on_progress is not None:
                on_progress(done_failed[0])
            if done_failed[0] > progress[0]:
                progress[:] = [done_failed[0], time.perf_counter()]
            elif time.perf_counter() - progress[1] > stall:
                return True  # a lost message: report it instead of waiting for the sweeper
            return done_failed[0] >= len(requests)

        wait_until(finished, timeout, 0.1, "the refunds to settle")
    stalled = len(requests) - done_failed[0]
    sessions = _sessions(the_stack) - sessions_before
    wall = meter.wall
    if stalled:  # the rate of what got done, up to the last progress
        wall = progress[1] - meter.start_wall
        console.print(f"[red]{stalled} refunds not done after {stall:g}s without progress[/red]")
    accepted = sum(1 for r in results if not getattr(r, "duplicate", True))
    errors: list[str] = []
    if done_failed[1]:
        with the_stack.database.engine.connect() as connection:
            errors = list(
                connection.execute(
                    text("SELECT DISTINCT last_error FROM refunds WHERE status = 'failed' LIMIT 5")
                ).scalars()
            )
    n = len(requests)
    return {
        "refunds": n,
        "accepted": accepted,
        "failed": done_failed[1],
        "stalled": stalled,
        "errors": errors,
        "enqueue_s": round(enqueued_at, 3),
        "seconds": round(wall, 3),
        "refunds_per_s": round(done_failed[0] / wall, 1),
        "cpu_ms_per_refund": {
            role: round(1000 * seconds / n, 3) for role, seconds in meter.seconds.items()
        },
        "cores": meter.cores(),
        # PostgreSQL connections opened meanwhile (each costs a backend fork and a handshake)
        "db_connections_opened": sessions,
    }


def _sessions(the_stack: Stack) -> int:
    """Connections ever opened to the run's database (PostgreSQL's own count, as of now)."""
    with the_stack.database.engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(
            connection.execute(
                text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
        )


def parse_layout(text: str) -> tuple[str, int, int]:
    """``threads:2x32`` → (pool, processes, concurrency per process)."""
    pool, _, shape = text.partition(":")
    processes, _, concurrency = shape.partition("x")
    return pool, int(processes), int(concurrency)


def start_layout(
    the_stack: Stack, layout: str, events: bool = True, patches: Sequence[str] = ()
) -> None:
    pool, processes, concurrency = parse_layout(layout)
    for _ in range(processes):
        the_stack.start_worker(pool=pool, concurrency=concurrency, events=events, patches=patches)
