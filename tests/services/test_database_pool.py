"""A worker keeps one database connection per task thread: with the engine's default pool of 10,
a 16-thread worker under load opened and closed a PostgreSQL connection (a backend fork and a
handshake) for every task beyond the tenth holding one (350 per 2,000 refunds in
``bench/scaleout.py``'s two-process run)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from refund_worker import runtime as runtime_module
from refund_worker.celery_app import _check_at_start
from refund_worker.runtime import Runtime, database_pool_size, get_runtime, set_task_slots
from refund_worker.settings import Settings
from tests.services.conftest import fast_settings


@pytest.fixture(autouse=True)
def _no_leftover_runtime() -> Iterator[None]:
    yield
    runtime = runtime_module._runtime
    if runtime is not None:
        runtime.close()
    runtime_module.set_runtime(None)
    set_task_slots(None)


def test_the_pool_follows_the_setting_then_the_worker_concurrency() -> None:
    assert database_pool_size(fast_settings(), None) is None  # outside a worker: the default
    assert database_pool_size(fast_settings(), 16) == 17  # each task thread, and the process
    assert database_pool_size(fast_settings(database_pool_size=4), 16) == 4
    with pytest.raises(ValueError, match="database_pool_size"):
        fast_settings(database_pool_size=0)


def _hold_and_return(runtime: Runtime, connections: int) -> int:
    """Check ``connections`` out at once, return them all; how many the pool kept open."""
    with ExitStack() as held:
        for _ in range(connections):
            held.enter_context(runtime.database.engine.connect()).execute(text("SELECT 1"))
    return int(runtime.database.engine.pool.checkedin())  # type: ignore[attr-defined]


def test_a_worker_runtime_keeps_a_connection_per_task_thread(database_url: str) -> None:
    settings = fast_settings(database_url=database_url)
    default = Runtime.from_settings(settings)
    try:
        pool_size = default.database.engine.pool.size()  # type: ignore[attr-defined]
        assert pool_size < 12  # SQLAlchemy's 5 on SQLite, our 10 on PostgreSQL
        assert _hold_and_return(default, 12) == pool_size  # the rest closed: reopened per task
    finally:
        default.close()
    set_task_slots(16)
    sized = Runtime.from_settings(settings)
    try:
        assert _hold_and_return(sized, 16) == 16
    finally:
        sized.close()


def test_worker_start_sizes_the_pool_from_its_concurrency(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    settings: Settings = fast_settings(database_url=database_url)
    monkeypatch.setattr(runtime_module, "get_settings", lambda: settings)
    _check_at_start(sender=SimpleNamespace(concurrency=24))
    assert get_runtime().database.engine.pool.size() == 25  # type: ignore[attr-defined]
