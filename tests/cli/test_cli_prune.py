"""``refund-worker db prune`` and the scheduled prune: only the history of settled refunds that
nothing touched since the cutoff goes, in batches; a refund in flight or in doubt keeps all of it;
the dry run counts exactly what the prune then removes; the archive holds every removed row."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from refund_worker.celery_app import PRUNE_TASK, beat_schedule
from refund_worker.errors import ConfigurationError
from refund_worker.models import (
    MagentoCall,
    Refund,
    RefundEvent,
    WebhookDelivery,
    WebhookEndpoint,
    utcnow,
)
from refund_worker.retention import HISTORY_TABLES, MIN_RETENTION, Archive, prune
from refund_worker.settings import MIN_RETENTION_DAYS, load_settings
from tests.cli.conftest import Cli

NOW = utcnow()
OLD = NOW - timedelta(days=200)  # before a 180-day cutoff
RECENT = NOW - timedelta(days=10)
CUTOFF = NOW - timedelta(days=180)


def _refund(cli: Cli, key: str, *, updated_at: Any = OLD, calls: int = 2, **state: Any) -> str:
    """A refund in ``state``, last changed at ``updated_at``, with ``calls`` audit rows and one
    event written at the same old moment."""
    refund_id = cli.add(key, created_at=OLD - timedelta(days=1), **state)
    for _ in range(calls):
        cli.add_call(refund_id, "invoice_refund", 12.0, created_at=OLD - timedelta(hours=1))
    with cli.database.session_scope() as session:
        session.add(RefundEvent(refund_id=refund_id, kind="reconciled", detail=key,
                                created_at=OLD - timedelta(hours=1)))
    # Last, so nothing above bumps it.
    with cli.database.session_scope() as session:
        session.execute(Refund.__table__.update().where(Refund.id == refund_id)
                        .values(updated_at=updated_at))
    return refund_id


def _history(cli: Cli) -> dict[str, tuple[int, int]]:
    """Per refund key: (audit rows, events) left."""
    with cli.database.session_scope() as session:
        keys = dict(session.execute(select(Refund.id, Refund.idempotency_key)).all())
        calls = dict(session.execute(
            select(MagentoCall.refund_id, func.count()).group_by(MagentoCall.refund_id)).all())
        events = dict(session.execute(
            select(RefundEvent.refund_id, func.count()).group_by(RefundEvent.refund_id)).all())
    return {key: (calls.get(rid, 0), events.get(rid, 0)) for rid, key in keys.items()}


def _seed(cli: Cli) -> tuple[set[str], set[str]]:
    """Refunds whose history goes at a 180-day cutoff, and refunds that keep theirs."""
    goes = {
        _refund(cli, "succeeded-old", status="succeeded", creditmemo_id=1,
                notification_status="sent"),
        _refund(cli, "failed-old", status="failed", last_error="no"),
        _refund(cli, "attention-old", status="needs_attention", attention="look"),
        _refund(cli, "email-failed-old", status="succeeded", creditmemo_id=2,
                notification_status="failed"),
    }
    keeps = {
        # In flight, even when abandoned long ago.
        _refund(cli, "received-old", status="received"),
        _refund(cli, "queued-old", status="queued"),
        _refund(cli, "processing-old", status="processing"),
        _refund(cli, "retrying-old", status="retrying"),
        # Settled, but in doubt, or with an email on its way.
        _refund(cli, "failed-in-doubt", status="failed", in_doubt=True),
        _refund(cli, "email-pending", status="succeeded", creditmemo_id=3,
                notification_status="pending"),
        _refund(cli, "email-retrying", status="succeeded", creditmemo_id=4,
                notification_status="retrying"),
        _refund(cli, "email-sending", status="succeeded", creditmemo_id=5,
                notification_status="sending"),
        # Settled with old history, but changed since the cutoff (replayed, failed again).
        _refund(cli, "failed-recently", status="failed", updated_at=RECENT),
    }
    return _keys(cli, goes), _keys(cli, keeps)


def _keys(cli: Cli, refund_ids: set[str]) -> set[str]:
    with cli.database.session_scope() as session:
        return set(session.scalars(
            select(Refund.idempotency_key).where(Refund.id.in_(refund_ids))))


def test_only_the_history_of_settled_refunds_older_than_the_cutoff_goes(any_cli: Cli) -> None:
    # A row written after the cutoff stays, even of a prunable refund and below the newest id
    # written before the cutoff (ids follow the clock only roughly).
    recent = _refund(any_cli, "succeeded-recent", calls=0, status="succeeded", creditmemo_id=9)
    any_cli.add_call(recent, "invoice_refund", 5.0, created_at=RECENT)
    goes, keeps = _seed(any_cli)

    result = any_cli("db", "prune", "--older-than", "180d", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["removed"] == {"magento_calls": 8, "refund_events": 5, "webhook_deliveries": 0}
    assert document["dry_run"] is False
    history = _history(any_cli)
    assert {key for key, left in history.items() if left == (0, 0)} == goes
    assert all(history[key] == (2, 1) for key in keeps)
    assert history["succeeded-recent"] == (1, 0)  # its old event went, its recent call stays
    assert len(history) == len(goes) + len(keeps) + 1  # the refund rows all stay


def test_batches_are_short_transactions_keyset_by_id(any_cli: Cli) -> None:
    for n in range(5):
        _refund(any_cli, f"old-{n}", calls=5, status="failed")
    deletes: list[int] = []
    commits: list[int] = []

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM MAGENTO_CALLS"):
            deletes.append(1)

    engine = any_cli.database.engine
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "commit", lambda conn: commits.append(1))
    slept: list[float] = []
    try:
        report = prune(any_cli.database, cutoff=CUTOFF, batch=10, pause=0.25, sleep=slept.append)
    finally:
        event.remove(engine, "after_cursor_execute", after)
    # 25 calls in batches of 10 (the last with 5), then 5 events in one batch.
    assert len(deletes) == 3
    assert report.removed == {"magento_calls": 25, "refund_events": 5, "webhook_deliveries": 0}
    assert report.batches == 4
    assert slept == [0.25, 0.25]  # between full batches only
    assert len(commits) >= 4  # each batch its own transaction
    assert all(left == (0, 0) for left in _history(any_cli).values())


def test_the_dry_run_counts_what_the_prune_then_removes(any_cli: Cli) -> None:
    _seed(any_cli)
    before = _history(any_cli)

    dry = any_cli.json("db", "prune", "--older-than", "180d", "--dry-run", "--include-refunds")
    assert _history(any_cli) == before  # nothing changed
    assert dry["dry_run"] is True
    assert dry["removed"] == {"magento_calls": 8, "refund_events": 4, "webhook_deliveries": 0,
                              "refunds": 4}

    done = any_cli.json("db", "prune", "--older-than", "180d", "--include-refunds")
    assert done["removed"] == dry["removed"]
    again = any_cli.json("db", "prune", "--older-than", "180d", "--dry-run", "--include-refunds")
    assert again["removed"] == {"magento_calls": 0, "refund_events": 0, "webhook_deliveries": 0,
                                "refunds": 0}


def test_include_refunds_removes_settled_rows_with_all_their_history(any_cli: Cli) -> None:
    _, keeps = _seed(any_cli)
    # A prunable refund with an event written after the cutoff: it goes with its refund.
    late = _refund(any_cli, "failed-late-event", status="failed")
    with any_cli.database.session_scope() as session:
        session.add(RefundEvent(refund_id=late, kind="note", created_at=RECENT))

    report = prune(any_cli.database, cutoff=CUTOFF, batch=2, include_refunds=True)

    assert report.removed == {"magento_calls": 10, "refund_events": 6, "webhook_deliveries": 0,
                              "refunds": 5}
    history = _history(any_cli)
    assert set(history) == keeps
    assert all(left == (2, 1) for left in history.values())


def test_the_archive_holds_every_removed_row(any_cli: Cli, tmp_path: Path) -> None:
    _seed(any_cli)
    with any_cli.database.session_scope() as session:
        expected_calls = {
            row.id: row for row in session.scalars(select(MagentoCall))
        }
    archive = tmp_path / "history.jsonl.gz"

    done = any_cli.json("db", "prune", "--older-than", "26w", "--archive", str(archive),
                        "--include-refunds", "--batch", "3")

    with any_cli.database.session_scope() as session:
        left_calls = set(session.scalars(select(MagentoCall.id)))
    with gzip.open(archive, "rt") as lines_read:
        lines = [json.loads(line) for line in lines_read]
    by_table: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_table.setdefault(line["table"], []).append(line["row"])
    assert {name: len(rows) for name, rows in by_table.items()} == {
        name: count for name, count in done["removed"].items() if count}
    archived_calls = {row["id"]: row for row in by_table["magento_calls"]}
    assert set(archived_calls) == set(expected_calls) - left_calls
    one = archived_calls[min(archived_calls)]
    original = expected_calls[one["id"]]
    assert one["refund_id"] == original.refund_id
    assert one["operation"] == "invoice_refund"
    assert one["duration_ms"] == 12.0
    assert one["created_at"].startswith(original.created_at.date().isoformat())
    refunds = {row["idempotency_key"]: row for row in by_table["refunds"]}
    assert set(refunds) == {"succeeded-old", "failed-old", "attention-old", "email-failed-old"}
    assert refunds["failed-old"]["last_error"] == "no"
    assert json.loads(refunds["failed-old"]["request_json"])["idempotency_key"] == "failed-old"

    again = any_cli("db", "prune", "--older-than", "180d", "--archive", str(archive))
    assert again.exit_code == 2
    assert "never overwritten" in again.output


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("7d", f"history younger than {MIN_RETENTION_DAYS} days is never pruned"),
        ("29d", "got 29 days"),
        ("180", "is not a duration"),
        ("-5d", "is not a duration"),
        ("99999999999d", "out of range"),
    ],
)
def test_bad_older_than_values_are_usage_errors(cli_run: Cli, value: str, why: str) -> None:
    _refund(cli_run, "failed-old", status="failed")

    result = cli_run("db", "prune", "--older-than", value)

    assert result.exit_code == 2
    assert why in result.output
    assert "Traceback" not in result.output
    assert _history(cli_run)["failed-old"] == (2, 1)


def test_archive_and_dry_run_do_not_go_together(cli_run: Cli, tmp_path: Path) -> None:
    result = cli_run("db", "prune", "--older-than", "180d", "--dry-run",
                     "--archive", str(tmp_path / "a.jsonl.gz"))
    assert result.exit_code == 2
    assert not (tmp_path / "a.jsonl.gz").exists()


def test_the_table_output_names_each_table(cli_run: Cli) -> None:
    _seed(cli_run)
    result = cli_run("db", "prune", "--older-than", "180d", "--dry-run")
    assert result.exit_code == 0
    for history in HISTORY_TABLES:
        assert history.name in result.stdout
    assert "would remove 12 rows" in result.stderr


def test_an_archive_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError), Archive.create(path):
        pass
    assert path.read_bytes() == b"keep"


# -- the scheduled prune ---------------------------------------------------------------------


def test_the_scheduled_prune_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFUND_WORKER_PRUNE_AFTER_DAYS", raising=False)
    settings = load_settings()
    assert settings.prune_after_days is None
    assert PRUNE_TASK not in {entry["task"] for entry in beat_schedule(settings).values()}


def test_the_scheduled_prune_runs_daily_once_set() -> None:
    settings = load_settings(prune_after_days=180)
    [entry] = [e for e in beat_schedule(settings).values() if e["task"] == PRUNE_TASK]
    assert entry["schedule"] == 24 * 3600
    assert entry["options"]["queue"] == "refunds.sweep"


@pytest.mark.parametrize("days", [0, 7, MIN_RETENTION_DAYS - 1])
def test_a_prune_setting_below_the_minimum_is_refused(days: int) -> None:
    with pytest.raises(ConfigurationError, match="REFUND_WORKER_PRUNE_AFTER_DAYS") as caught:
        load_settings(prune_after_days=days)
    assert f"must be at least {MIN_RETENTION_DAYS}" in str(caught.value)
    assert load_settings(prune_after_days=MIN_RETENTION_DAYS).prune_after_days == MIN_RETENTION_DAYS
    assert timedelta(days=MIN_RETENTION_DAYS) == MIN_RETENTION


def test_beat_refuses_to_start_on_a_prune_setting_below_the_minimum(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REFUND_WORKER_")},
        "REFUND_WORKER_DATABASE_URL": sqlite_url,
        "REFUND_WORKER_BROKER_URL": "memory://",
        "REFUND_WORKER_PRUNE_AFTER_DAYS": "7",
    }
    result = subprocess.run(
        [sys.executable, "-m", "refund_worker.cli", "beat", "--schedule", f"{tmp_path}/s"],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "REFUND_WORKER_PRUNE_AFTER_DAYS (7) must be at least 30" in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1


def test_the_prune_task_uses_the_setting(
    any_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from refund_worker import tasks

    goes, _ = _seed(any_cli)

    class Runtime:
        database = any_cli.database
        settings = load_settings(prune_after_days=180)

    monkeypatch.setattr(tasks, "get_runtime", lambda: Runtime)
    monkeypatch.setattr(tasks, "PRUNE_PAUSE_SECONDS", 0)
    assert tasks.prune_history() == {"magento_calls": 8, "refund_events": 4,
                                     "webhook_deliveries": 0}
    history = _history(any_cli)
    assert {key for key, left in history.items() if left == (0, 0)} == goes
    Runtime.settings = load_settings(prune_after_days=None)  # type: ignore[assignment]
    assert tasks.prune_history() == {}


def test_a_history_table_can_keep_rows_and_so_its_refund(any_cli: Cli) -> None:
    """The extension point for tables such as an outbox: rows it ``keep``s stay whatever their
    age, and a refund holding one is not removed either."""
    from refund_worker.retention import HistoryTable

    events = RefundEvent.__table__
    tables = (
        HISTORY_TABLES[0],
        HistoryTable(events, keep=events.c.kind == "undelivered"),  # type: ignore[arg-type]
    )
    kept = _refund(any_cli, "failed-undelivered", status="failed")
    _refund(any_cli, "failed-delivered", status="failed")
    with any_cli.database.session_scope() as session:
        session.add(RefundEvent(refund_id=kept, kind="undelivered", created_at=OLD))

    dry = prune(any_cli.database, cutoff=CUTOFF, include_refunds=True, dry_run=True,
                tables=tables)
    report = prune(any_cli.database, cutoff=CUTOFF, include_refunds=True, tables=tables)

    assert report.removed == dry.removed == {
        "magento_calls": 4, "refund_events": 2, "refunds": 1}
    assert _history(any_cli) == {"failed-undelivered": (0, 1)}
    with any_cli.database.session_scope() as session:
        [(kind,)] = session.execute(select(RefundEvent.kind)).all()
    assert kind == "undelivered"


def test_webhook_deliveries_go_once_delivered_or_given_up(any_cli: Cli) -> None:
    """The outbox is history too: a settled refund's delivered and failed events go; one still on
    its way (pending, delivering, retrying) stays, and keeps its refund."""
    with any_cli.database.session_scope() as session:
        session.add(WebhookEndpoint(id="ep-1", tenant="default", url="https://erp.test/hook",
                                    event_types=",refund.failed,", secret_salt="s", key_id="k"))
    by_status = {status: _refund(any_cli, f"failed-{status}", status="failed")
                 for status in ("delivered", "failed", "pending", "delivering", "retrying")}
    with any_cli.database.session_scope() as session:
        for status, refund_id in by_status.items():
            session.add(WebhookDelivery(event_id=f"msg_{status}", event_type="refund.failed",
                                        refund_id=refund_id, endpoint_id="ep-1", data_json="{}",
                                        status=status, created_at=OLD))
    with any_cli.database.session_scope() as session:  # written at OLD bumped nothing; be sure
        session.execute(Refund.__table__.update().values(updated_at=OLD))

    dry = prune(any_cli.database, cutoff=CUTOFF, include_refunds=True, dry_run=True)
    report = prune(any_cli.database, cutoff=CUTOFF, include_refunds=True)

    assert report.removed == dry.removed == {
        "magento_calls": 10, "refund_events": 5, "webhook_deliveries": 2, "refunds": 2}
    with any_cli.database.session_scope() as session:
        left = set(session.scalars(select(WebhookDelivery.status)))
        refunds = set(session.scalars(select(Refund.idempotency_key)))
    assert left == {"pending", "delivering", "retrying"}
    assert refunds == {"failed-pending", "failed-delivering", "failed-retrying"}
