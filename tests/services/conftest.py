"""Service tier: RefundService and NotificationService against the simulator on a real socket,
a real MagentoClient, SQLite and PostgreSQL, and a clock the test moves. No Celery here."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, select, text

from refund_worker.db import Database, upgrade
from refund_worker.intake import enqueue_refund
from refund_worker.magento import BearerAuth, CallRecord, MagentoClient
from refund_worker.models import Base, Refund, utcnow
from refund_worker.notifications import NotificationService
from refund_worker.refunds import MagentoAPI, RefundService
from refund_worker.settings import Settings
from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import RunningSimulator, running_simulator
from refund_worker.store import EmailStore, RefundStore

TOKEN = "services-token"
REFUND_ROUTES = frozenset({"order_refund", "invoice_refund", "creditmemo_refund",
                           "creditmemo_save"})


class FakeClock:
    """``utcnow`` that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


T = TypeVar("T")


def at_once(call: Callable[[], T], times: int = 2) -> list[T]:
    """``call`` in ``times`` threads released together (two deliveries of one message, two
    workers); their results, in the order they finished."""
    start = threading.Barrier(times)
    results: list[T] = []

    def run() -> None:
        start.wait()
        results.append(call())

    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


class Killed(BaseException):
    """Raised by a test client to stand for the worker process dying at that point."""


class Recorder:
    """A publisher that remembers what it was asked to publish."""

    def __init__(self) -> None:
        self.refunds: list[str] = []
        self.notifications: list[str] = []

    def publish_refunds(self, refund_ids: Sequence[str]) -> None:
        self.refunds.extend(refund_ids)

    def publish_notifications(self, refund_ids: Sequence[str]) -> None:
        self.notifications.extend(refund_ids)


class Wrapped:
    """A MagentoClient whose methods can be replaced, one by one, by the test."""

    def __init__(self, client: MagentoClient, overrides: dict[str, Callable[..., Any]]) -> None:
        self._client = client
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        original = getattr(self._client, name)
        override = self._overrides.get(name)
        if override is None:
            return original
        return lambda *args, **kwargs: override(original, *args, **kwargs)


class _TestMagento:
    """The env's shared client, handing each attempt a recording, overridable view of it."""

    def __init__(self, env: Env) -> None:
        self._env = env

    def recording(self, on_call: Callable[[CallRecord], None]) -> MagentoAPI:
        env = self._env

        def record(call: CallRecord) -> None:
            env.calls.append(call)
            on_call(call)

        if not env.clients:
            env.clients.append(MagentoClient(env.sim.url, auth=BearerAuth(TOKEN),
                                             timeout=env.settings.magento_timeout))
        return Wrapped(env.clients[0].recording(record), env.overrides)  # type: ignore[return-value]


@dataclass
class Env:
    """Everything a service test needs."""

    sim: RunningSimulator
    database: Database
    settings: Settings
    clock: FakeClock
    publisher: Recorder
    overrides: dict[str, Callable[..., Any]] = field(default_factory=dict)
    clients: list[MagentoClient] = field(default_factory=list)
    #: Every HTTP call any client made, as the client reported it (before it returned).
    calls: list[CallRecord] = field(default_factory=list)

    @property
    def state(self) -> SimulatorState:
        return self.sim.state

    @property
    def magento(self) -> MagentoAPI:
        """What the services call: each attempt's ``recording`` client reports to ``calls``
        too, and its methods can be replaced through ``overrides``."""
        return _TestMagento(self)

    def refunds(self, **changes: Any) -> RefundService:
        settings = self.settings.model_copy(update=changes) if changes else self.settings
        return RefundService(RefundStore(self.database), self.magento, settings, clock=self.clock)

    def notifications(self) -> NotificationService:
        return NotificationService(EmailStore(self.database), self.magento, self.settings,
                                   clock=self.clock)

    def order(self, **spec: Any) -> dict[str, Any]:
        spec.setdefault("payment_method", "checkmo")
        spec.setdefault("items", [{"sku": "SHIRT", "qty": 2, "price": 20},
                                  {"sku": "MUG", "qty": 1, "price": 8}])
        return self.state.add_order(spec)

    def enqueue(self, **payload: Any) -> str:
        payload.setdefault("idempotency_key", f"key-{len(self.publisher.refunds)}")
        receipt = enqueue_refund(payload, database=self.database, publisher=self.publisher)
        # Intake stamps rows with the real time; keep the fake clock from lagging behind it, so a
        # slow machine never makes a fresh refund look "not due yet" to the service.
        self.clock.now = max(self.clock.now, utcnow())
        return receipt.refund_id

    def row(self, refund_id: str) -> Refund:
        with self.database.session_scope() as session:
            row = session.get(Refund, refund_id)
            assert row is not None
            session.expunge(row)
            return row

    def rows(self) -> list[Refund]:
        with self.database.session_scope() as session:
            rows = list(session.scalars(select(Refund)))
            session.expunge_all()
            return rows

    def refund_calls(self) -> int:
        """Money-moving requests sent to Magento (whatever their answer)."""
        return sum(1 for call in self.calls if call.operation in REFUND_ROUTES)

    def requests(self) -> int:
        """Requests sent to Magento. (The simulator logs a request only after it answered, so
        its own log can lag behind the client that already has the answer.)"""
        return len(self.calls)

    def memos(self, order_id: int | None = None) -> list[dict[str, Any]]:
        return [memo for memo in self.state.creditmemos()
                if order_id is None or memo["order_id"] == order_id]


def fast_settings(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "magento_url": "http://unused", "magento_token": TOKEN, "magento_timeout": 1,
        "lease_seconds": 9, "in_doubt_grace_seconds": 0.5, "retry_backoff_base": 0.1,
        "retry_backoff_max": 1, "max_attempts": 4, "notification_max_attempts": 3,
        "visibility_timeout": 60, "magento_rate_limit": 0, "_env_file": None,
    }
    values.update(changes)
    return Settings(**values)


@pytest.fixture(scope="session")
def services_pg(pg_server: str) -> Iterator[str]:
    """One PostgreSQL database at the schema head for the whole session (emptied per test)."""
    name = f"rw_services_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_server.rsplit("/", 1)[0] + f"/{name}"
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the schema head, copied for each test (migrating it each time is slow)."""
    path = tmp_path_factory.mktemp("services-template") / "refunds.db"
    database = Database.from_url(f"sqlite:///{path}")
    database.prepare()
    database.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend in turn, empty and at the schema head (overrides the root fixture)."""
    if request.param == "sqlite":
        path = tmp_path / "refunds.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = str(request.getfixturevalue("services_pg"))
    engine = create_engine(url)
    with engine.begin() as connection:
        tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {tables} CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A ``Database`` on this test's (migrated) database, for tests below the services."""
    database = Database.from_url(database_url)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    database = Database.from_url(database_url)
    state = SimulatorState(tokens={TOKEN: None})
    with running_simulator(state) as sim:
        environment = Env(sim, database, fast_settings(), FakeClock(), Recorder())
        try:
            yield environment
        finally:
            for client in environment.clients:
                client.close()
            database.dispose()
