"""Fixtures for the ``refund-worker`` command: a SQLite (or PostgreSQL) database of its own,
settings from the environment as in production, and a recording publisher."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.console import Console
from sqlalchemy import update

from refund_worker import cli
from refund_worker.db import Database, database_for, upgrade
from refund_worker.intake import IntakeRejection, enqueue_refunds, validate_request
from refund_worker.models import MagentoCall, Refund, RefundEvent
from refund_worker.settings import get_settings
from tests.fakes import RecordingPublisher


@dataclass
class Cli:
    """Runs ``refund-worker`` in-process against one database; seeds rows directly."""

    database: Database
    publisher: RecordingPublisher
    runner: CliRunner = field(default_factory=CliRunner)
    _orders: int = 1000

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(cli.main, list(args), input=input, catch_exceptions=False)

    def json(self, *args: str, input: str | None = None) -> Any:
        result = self(*args, "--json", input=input)
        return json.loads(result.stdout)

    def add(
        self, key: str, order_id: int | None = None, *, tenant: str = "default", **state: Any
    ) -> str:
        """Accept a refund through intake (for ``tenant``), then put its row in ``state``."""
        if order_id is None:
            self._orders += 1
            order_id = self._orders
        [result] = enqueue_refunds(
            [validate_request({"idempotency_key": key, "order_id": order_id})],
            database=self.database,
            publisher=RecordingPublisher(),
            tenant=tenant,
        )
        assert not isinstance(result, IntakeRejection)
        if state:
            with self.database.session_scope() as session:
                session.execute(update(Refund).where(Refund.id == result.refund_id).values(**state))
        return result.refund_id

    def add_call(
        self,
        refund_id: str,
        operation: str,
        duration_ms: float,
        *,
        http_status: int | None = 200,
        created_at: datetime | None = None,
    ) -> None:
        with self.database.session_scope() as session:
            call = MagentoCall(
                refund_id=refund_id,
                attempt=1,
                operation=operation,
                method="GET",
                path="/V1/x",
                http_status=http_status,
                duration_ms=duration_ms,
            )
            if created_at is not None:
                call.created_at = created_at
            session.add(call)

    def row(self, refund_id: str) -> Refund:
        with self.database.session_scope() as session:
            row = session.get(Refund, refund_id)
            assert row is not None
            session.expunge(row)
            return row

    def events(self, refund_id: str) -> list[RefundEvent]:
        from sqlalchemy import select

        with self.database.session_scope() as session:
            rows = list(
                session.scalars(select(RefundEvent).where(RefundEvent.refund_id == refund_id))
            )
            session.expunge_all()
            return rows


def make_cli(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    broker_url: str,
    *,
    record: bool = True,
) -> Iterator[Cli]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(os.environ):
        if name.startswith(("REFUND_WORKER_", "FLOWER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("REFUND_WORKER_DATABASE_URL", database_url)
    monkeypatch.setenv("REFUND_WORKER_BROKER_URL", broker_url)
    monkeypatch.setattr(cli, "console", Console(width=250, color_system=None))
    monkeypatch.setattr(cli, "err_console", Console(width=250, stderr=True, color_system=None))
    get_settings.cache_clear()
    database = Database.from_url(database_url)
    upgrade(database.engine)
    publisher = RecordingPublisher()
    if record:
        monkeypatch.setattr(cli, "_publisher", lambda: publisher)
    try:
        yield Cli(database, publisher)
    finally:
        database.dispose()
        database_for(database_url).dispose()
        get_settings.cache_clear()


@pytest.fixture
def cli_run(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """The command on a fresh SQLite database, publishing to a recorder."""
    yield from make_cli(sqlite_url, tmp_path, monkeypatch, "memory://")


@pytest.fixture
def any_cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """The command on SQLite, then on the machine's PostgreSQL."""
    yield from make_cli(database_url, tmp_path, monkeypatch, "memory://")


@pytest.fixture
def pg_cli(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """The command on the machine's PostgreSQL only."""
    yield from make_cli(pg_url, tmp_path, monkeypatch, "memory://")


@pytest.fixture
def redis_cli(
    sqlite_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cli]:
    """The command on SQLite, publishing to the machine's Redis (a database of its own)."""
    yield from make_cli(sqlite_url, tmp_path, monkeypatch, redis_url, record=False)
