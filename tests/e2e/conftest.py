"""End-to-end fixtures: the simulator on a real socket, real `refund-worker worker` processes on
the machine's Redis or RabbitMQ, and SQLite or PostgreSQL. Nothing here runs in eager mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from refund_worker.celery_app import create_app
from refund_worker.db import Database
from refund_worker.intake import IntakeRejection, enqueue_refunds, validate_request
from refund_worker.publishing import CeleryPublisher
from refund_worker.queries import refund_view
from refund_worker.schemas import SETTLED_STATUSES, RefundReceipt, RefundView
from refund_worker.settings import Settings
from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import RunningSimulator, running_simulator
from tests.magento_schema import OPERATIONS, body_errors

SIM_TOKEN = "e2e-token"

#: Fast timings for tests: short backoff, short grace, a lease just above the minimum.
FAST = {
    "REFUND_WORKER_MAGENTO_TIMEOUT": "2",
    "REFUND_WORKER_RETRY_BACKOFF_BASE": "0.2",
    "REFUND_WORKER_RETRY_BACKOFF_MAX": "2",
    "REFUND_WORKER_LEASE_SECONDS": "15",
    "REFUND_WORKER_IN_DOUBT_GRACE_SECONDS": "1",
    "REFUND_WORKER_REPUBLISH_AFTER_SECONDS": "5",
    "REFUND_WORKER_SWEEP_INTERVAL_SECONDS": "2",
    "REFUND_WORKER_VISIBILITY_TIMEOUT": "60",
    "REFUND_WORKER_MAX_ATTEMPTS": "6",
    "REFUND_WORKER_MAGENTO_RATE_LIMIT": "0",
}


@dataclass
class Stack:
    """One end-to-end environment: settings shared by the test and its worker processes."""

    env: dict[str, str]
    settings: Settings
    database: Database
    simulator: RunningSimulator
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def state(self) -> SimulatorState:
        return self.simulator.state

    def publisher(self) -> CeleryPublisher:
        return CeleryPublisher(create_app(self.settings))

    def enqueue(self, *payloads: dict[str, Any]) -> list[RefundReceipt]:
        results = enqueue_refunds(
            [validate_request(p) for p in payloads], database=self.database,
            publisher=self.publisher(), shops=self.settings.intake_shops,
        )
        receipts = []
        for result in results:
            assert not isinstance(result, IntakeRejection), result.error
            receipts.append(result)
        return receipts

    def start(self, *args: str, name: str = "worker") -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "refund_worker.cli", *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.processes.append(process)
        return process

    def start_worker(self, concurrency: int = 8, *extra: str) -> subprocess.Popen[bytes]:
        hostname = f"w{len(self.processes)}-{os.getpid()}@%h"
        return self.start("worker", "--concurrency", str(concurrency), "-n", hostname,
                          "--without-gossip", "--without-mingle", *extra)

    def view(self, refund_id: str) -> RefundView:
        with self.database.session_scope() as session:
            view = refund_view(session, refund_id)
        assert view is not None
        return view

    def wait_for(
        self, refund_ids: list[str], done: Callable[[RefundView], bool], timeout: float = 60
    ) -> dict[str, RefundView]:
        deadline = time.monotonic() + timeout
        while True:
            views = {refund_id: self.view(refund_id) for refund_id in refund_ids}
            if all(done(view) for view in views.values()):
                return views
            if time.monotonic() > deadline:
                pending = {k: (v.status, v.notification_status, v.last_error)
                           for k, v in views.items() if not done(v)}
                raise AssertionError(f"not done after {timeout}s: {pending}\n{self.logs()}")
            for process in self.processes:
                if process.poll() is not None and process.returncode not in (0, -9, -15):
                    raise AssertionError(f"a process died ({process.returncode}):\n{self.logs()}")
            time.sleep(0.2)

    def wait_settled(self, refund_ids: list[str], timeout: float = 60) -> dict[str, RefundView]:
        return self.wait_for(refund_ids, lambda view: view.status in SETTLED_STATUSES
                             and view.notification_status.value not in ("pending", "sending",
                                                                        "retrying"), timeout)

    def request_bodies(self) -> list[dict[str, Any]]:
        """JSON bodies of the Magento POSTs the simulator received (its body log)."""
        return list(self.state.request_bodies())

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
                         for path in sorted(self.log_dir.glob("*.log")))

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def make_stack(database_url: str, broker_url: str, tmp_path: Path,
               state: SimulatorState) -> Iterator[Stack]:
    with running_simulator(state) as simulator:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REFUND_WORKER_")},
            **FAST,
            "REFUND_WORKER_BROKER_URL": broker_url,
            "REFUND_WORKER_DATABASE_URL": database_url,
            "REFUND_WORKER_MAGENTO_URL": simulator.url,
            "REFUND_WORKER_MAGENTO_TOKEN": SIM_TOKEN,
            "REFUND_WORKER_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        settings = Settings(**{k.removeprefix("REFUND_WORKER_").lower(): v
                               for k, v in env.items() if k.startswith("REFUND_WORKER_")})
        database = Database.from_url(database_url)
        if database.is_sqlite:
            database.prepare()
        else:
            from refund_worker.db import upgrade

            upgrade(database.engine)
        log_dir = tmp_path / "logs"
        log_dir.mkdir()
        stack = Stack(env=env, settings=settings, database=database, simulator=simulator,
                      log_dir=log_dir)
        try:
            yield stack
        finally:
            stack.stop_all()
            database.dispose()
        assert_bodies_match_schema(stack)


def assert_bodies_match_schema(stack: Stack) -> None:
    """Every refund body the worker sent during the test validates against Adobe's schema."""
    for body in stack.request_bodies():
        if body["route"] in OPERATIONS:
            errors = body_errors(body["route"], body["body"])
            assert errors == [], f"{body['route']} body breaks the schema: {errors}"


@pytest.fixture
def sim_state() -> SimulatorState:
    return SimulatorState(tokens={SIM_TOKEN: None})


#: Database and broker of each run of a ``stack`` test: both databases on Redis, and RabbitMQ
#: with PostgreSQL (its production pairing).
STACKS = ["sqlite+redis", "postgresql+redis", "postgresql+amqp"]


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest, tmp_path: Path,
          sim_state: SimulatorState) -> Iterator[Stack]:
    """The whole pipeline on SQLite and PostgreSQL, on Redis and RabbitMQ (no worker started
    yet)."""
    database, broker = request.param.split("+")
    database_url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "pg_url")
    broker_url = request.getfixturevalue(f"{broker}_url")
    yield from make_stack(database_url, broker_url, tmp_path, sim_state)


@pytest.fixture
def sqlite_stack(sqlite_url: str, redis_url: str, tmp_path: Path,
                 sim_state: SimulatorState) -> Iterator[Stack]:
    """The whole pipeline on SQLite only (for the slower fault tests)."""
    yield from make_stack(sqlite_url, redis_url, tmp_path, sim_state)
