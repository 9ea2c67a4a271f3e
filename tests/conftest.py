"""Shared fixtures: the machine's services (skipped by hand, required in CI), databases, Redis,
RabbitMQ.

``REFUND_WORKER_REQUIRE_SERVICES=1`` (set by ``.ci/run``) turns a missing PostgreSQL, Redis or
RabbitMQ from a skip into a failure. ``REFUND_WORKER_TEST_AMQP_URL`` names the RabbitMQ
(default ``amqp://guest:guest@127.0.0.1:5672``); each test gets a virtual host of its own, made
with ``rabbitmqctl`` (on the broker's machine) and deleted after the session.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

PG_ADMIN_URL = os.environ.get(
    "REFUND_WORKER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_HOST = os.environ.get("REFUND_WORKER_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("REFUND_WORKER_TEST_REDIS_PORT", "6379"))
AMQP_URL = os.environ.get("REFUND_WORKER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
REQUIRE_SERVICES = os.environ.get("REFUND_WORKER_REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (by hand) or fail (in CI) when a machine service is down."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (REFUND_WORKER_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def need_binary(available: bool, message: str) -> None:
    """Skip (by hand) or fail (in CI) when a program a test runs is not installed."""
    if available:
        return
    if REQUIRE_SERVICES:
        pytest.fail(message + " (REFUND_WORKER_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    """A fresh SQLite database file for this test."""
    return f"sqlite:///{tmp_path}/refunds.db"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The machine's PostgreSQL admin URL (database ``test``)."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A private PostgreSQL database for this test, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"rw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn: SQLite, then the machine's PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


def _test_redis_dbs() -> range:
    """Databases 9-15 of the machine's Redis are the tests' (``REFUND_WORKER_TEST_REDIS_DBS=2-8``
    gives a second suite run its own); each test flushes its own before and after."""
    first, _, last = os.environ.get("REFUND_WORKER_TEST_REDIS_DBS", "9-15").partition("-")
    return range(int(first), int(last or first) + 1)


_redis_dbs = itertools.cycle(_test_redis_dbs())


@pytest.fixture(scope="session")
def redis_server() -> tuple[str, int]:
    """(host, port) of the machine's Redis."""
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    return REDIS_HOST, REDIS_PORT


@pytest.fixture
def redis_url(redis_server: tuple[str, int]) -> Iterator[str]:
    """A Redis database number of our own, flushed before and after the test."""
    import redis

    host, port = redis_server
    db = next(_redis_dbs)
    url = f"redis://{host}:{port}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


class VhostPool:
    """Virtual hosts on the machine's RabbitMQ, made a dozen at a time (``rabbitmqctl`` takes
    seconds per call) and deleted together at the end of the session; each test takes a fresh
    one, so parallel runs and tests never see each other's queues."""

    BATCH = 12

    def __init__(self, user: str) -> None:
        self.user = user
        self.prefix = f"rw-test-{uuid.uuid4().hex[:8]}"
        self.made: list[str] = []
        self.free: list[str] = []

    @staticmethod
    def _eval(expression: str) -> None:
        subprocess.run(["rabbitmqctl", "eval", expression], check=True, capture_output=True,
                       timeout=120)

    @staticmethod
    def _binaries(names: list[str]) -> str:
        return "[" + ", ".join(f'<<"{name}">>' for name in names) + "]"

    def take(self) -> str:
        if not self.free:
            names = [f"{self.prefix}-{len(self.made) + n}" for n in range(self.BATCH)]
            self._eval(
                f"[begin rabbit_vhost:add(V, <<\"tests\">>), "
                f"rabbit_auth_backend_internal:set_permissions(<<\"{self.user}\">>, V, "
                f"<<\".*\">>, <<\".*\">>, <<\".*\">>, <<\"tests\">>) end "
                f"|| V <- {self._binaries(names)}], ok."
            )
            self.made += names
            self.free += names
        return self.free.pop(0)

    def delete_all(self) -> None:
        if self.made:
            self._eval(f"[rabbit_vhost:delete(V, <<\"tests\">>) || V <- "
                       f"{self._binaries(self.made)}], ok.")


@pytest.fixture(scope="session")
def amqp_server() -> Iterator[tuple[str, VhostPool]]:
    """(URL without a vhost, the pool of test vhosts) of the machine's RabbitMQ."""
    parts = urlsplit(AMQP_URL)
    need_service("RabbitMQ", parts.hostname or "127.0.0.1", parts.port or 5672)
    need_binary(shutil.which("rabbitmqctl") is not None,
                "rabbitmqctl is not installed: the tests make vhosts with it")
    pool = VhostPool(parts.username or "guest")
    try:
        yield AMQP_URL.rstrip("/"), pool
    finally:
        pool.delete_all()


@pytest.fixture
def amqp_url(amqp_server: tuple[str, VhostPool]) -> str:
    """A RabbitMQ virtual host of this test's own."""
    base, pool = amqp_server
    return f"{base}/{pool.take()}"


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each broker in turn: the machine's Redis (a database of its own), then its RabbitMQ (a
    vhost of its own)."""
    return str(request.getfixturevalue(f"{request.param}_url"))
