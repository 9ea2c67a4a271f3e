"""PostgreSQL connections cut under the pool (a restart, ``pg_terminate_backend``): with no
pre-ping, the first unit of work on a dead connection fails as ``DatabaseUnavailable``
(retryable), the pool replaces the others, and a refund whose outcome could not be recorded is
found by its marker once its lease expires: one credit memo."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text

from refund_worker.db import Database
from refund_worker.errors import DatabaseUnavailable
from tests.services.conftest import Env

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def cut_connections(database: Database) -> int:
    """Terminate every other connection to the database, as a restart would."""
    admin = create_engine(database.engine.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return int(connection.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalar_one())
    finally:
        admin.dispose()


def select_one(database: Database) -> int:
    with database.session_scope() as session:
        return int(session.execute(text("SELECT 1")).scalar_one())


def test_a_cut_pooled_connection_fails_one_unit_of_work_as_retryable(database: Database) -> None:
    pooled = [database.sessions() for _ in range(3)]
    for session in pooled:  # three connections in the pool
        session.execute(text("SELECT 1"))
    for session in pooled:
        session.close()
    assert cut_connections(database) >= 3

    with pytest.raises(DatabaseUnavailable):
        select_one(database)
    # The failure invalidated the pool: the other dead connections are replaced, not handed out.
    assert [select_one(database) for _ in range(5)] == [1] * 5


def insert_then_fail(scope: Any) -> None:
    with scope() as connection:
        connection.execute(text("INSERT INTO autocommit_probe VALUES (1)"))
        raise RuntimeError("after the statement")


def probe_rows_after_a_failed_unit(database: Database, scope: Any) -> int:
    with database.connection_scope() as connection:
        connection.execute(text("CREATE TABLE autocommit_probe (n int)"))
    with pytest.raises(RuntimeError):
        insert_then_fail(scope)
    with database.connection_scope() as connection:
        rows = int(connection.execute(text("SELECT count(*) FROM autocommit_probe")).scalar_one())
        connection.execute(text("DROP TABLE autocommit_probe"))
    return rows


def test_a_single_statement_on_a_cut_connection_is_retryable_and_commits_alone(
    database: Database,
) -> None:
    with database.statement_scope() as connection:  # one pooled connection, then cut
        assert connection.execute(text("SELECT 1")).scalar_one() == 1
    assert cut_connections(database) >= 1
    with pytest.raises(DatabaseUnavailable), database.statement_scope() as connection:
        connection.execute(text("SELECT 1"))
    # Each statement commits as it runs, so a failure later in the scope undoes nothing, while
    # connection_scope, on the same pool, still rolls back.
    assert probe_rows_after_a_failed_unit(database, database.statement_scope) == 1
    assert probe_rows_after_a_failed_unit(database, database.connection_scope) == 0


def test_a_refund_recorded_on_a_cut_connection_is_found_by_its_marker(env: Env) -> None:
    order = env.order()
    refund_id = env.enqueue(order_id=order["order_id"])
    service = env.refunds()

    def commit_then_cut(original: Any, *args: Any, **kwargs: Any) -> Any:
        answer = original(*args, **kwargs)
        assert cut_connections(env.database) >= 1  # the pooled one the claim used
        return answer

    env.overrides["refund_order"] = commit_then_cut
    with pytest.raises(DatabaseUnavailable):  # the task retries it after the grace period
        service.process(refund_id)
    env.overrides.clear()
    assert env.row(refund_id).status == "processing"  # its next claim reconciles first
    assert service.process(refund_id).detail == "in flight in another worker"

    env.clock.advance(env.settings.lease_seconds + 1)  # the sweeper re-publishes it
    result = service.process(refund_id)
    assert result.status == "succeeded"
    assert result.detail.startswith("reconciled")
    assert env.refund_calls() == 1
    assert len(env.memos()) == 1
