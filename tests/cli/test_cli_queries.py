"""queries.py: time parsing, percentiles, filters and statistics, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from refund_worker.models import utcnow
from refund_worker.queries import (
    RefundFilter,
    list_refunds,
    parse_duration,
    parse_moment,
    percentile,
    refund_stats,
)
from tests.cli.conftest import Cli

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("30m", NOW - timedelta(minutes=30)),
        ("3d", NOW - timedelta(days=3)),
        ("1w", NOW - timedelta(days=7)),
        ("90s", NOW - timedelta(seconds=90)),
        ("1.5H", NOW - timedelta(minutes=90)),
        ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
        ("2025-03-01T08:30", datetime(2025, 3, 1, 8, 30, tzinfo=UTC)),
        ("2025-03-01T08:30:00+02:00", datetime(2025, 3, 1, 6, 30, tzinfo=UTC)),
    ],
)
def test_parse_moment(text: str, expected: datetime) -> None:
    moment = parse_moment(text, NOW)
    assert moment == expected
    assert moment.tzinfo is not None


@pytest.mark.parametrize("text", ["", "yesterday", "2h ago", "-2h", "2025-13-01", "5y"])
def test_parse_moment_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="relative time"):
        parse_moment(text, NOW)


def test_parse_duration() -> None:
    assert parse_duration("45m") == timedelta(minutes=45)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("2025-01-01")


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.95) == pytest.approx(95.05)
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 100.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile(values, 1.5)


def test_filter_criteria(any_cli: Cli) -> None:
    now = utcnow()
    old = any_cli.add(
        "old",
        order_id=1,
        status="failed",
        last_error="Magento said: HOLD",
        created_at=now - timedelta(days=3),
    )
    new = any_cli.add(
        "new",
        order_id=2,
        status="failed",
        last_error="The order is on hold",
        service="order",
        created_at=now - timedelta(hours=3),
    )
    done = any_cli.add(
        "done",
        order_id=2,
        status="succeeded",
        service="invoice",
        created_at=now - timedelta(hours=2),
    )
    percent = any_cli.add(
        "percent",
        order_id=3,
        status="failed",
        last_error="100% wrong_stuff",
        created_at=now - timedelta(hours=1),
    )

    def ids(**criteria: object) -> list[str]:
        with any_cli.database.session_scope() as session:
            return [view.id for view in list_refunds(session, RefundFilter(**criteria))]  # type: ignore[arg-type]

    assert ids(status="failed") == [percent, new, old]  # newest first
    assert ids(order_id=2) == [done, new]
    assert ids(service="invoice") == [done]
    assert ids(service="auto") == [percent, old]  # not routed yet: the requested service
    assert ids(error_contains="hold") == [new, old]  # case-insensitive on both backends
    assert ids(error_contains="%") == [percent]  # LIKE wildcards are literal
    assert ids(error_contains="g_s") == [percent]
    assert ids(since=now - timedelta(days=1)) == [percent, done, new]
    assert ids(until=now - timedelta(days=1)) == [old]
    assert ids(ids=(new, "old")) == [new]  # ids only: "old" is a key
    assert ids(keys=("old", new)) == [old]  # keys only
    assert ids(status="failed", limit=2) == [percent, new]


def test_stats(any_cli: Cli) -> None:
    now = utcnow()
    waiting = any_cli.add(
        "waiting", status="retrying", attempts=3, created_at=now - timedelta(hours=5)
    )
    any_cli.add("queued", status="queued", created_at=now - timedelta(hours=1), in_doubt=True)
    done = any_cli.add(
        "done",
        status="succeeded",
        attempts=1,
        notify_customer=True,
        notification_status="sent",
        created_at=now - timedelta(days=2),
    )
    any_cli.add("failed", status="failed", attempts=2)
    for duration in range(1, 21):  # 1..20 ms
        any_cli.add_call(done, "order_get", float(duration))
    any_cli.add_call(waiting, "order_refund", 300.0, http_status=503)
    any_cli.add_call(waiting, "order_refund", 100.0, http_status=None)
    any_cli.add_call(done, "order_get", 9999.0, created_at=now - timedelta(hours=3))  # too old

    with any_cli.database.session_scope() as session:
        stats = refund_stats(session, now, latency_window=timedelta(hours=1))

    assert stats.total == 4
    assert stats.by_status == {"failed": 1, "queued": 1, "retrying": 1, "succeeded": 1}
    assert stats.notifications_by_status == {"not_requested": 3, "sent": 1}
    assert stats.oldest_unsettled_id == waiting
    assert stats.oldest_unsettled_age_seconds == pytest.approx(5 * 3600, abs=5)
    assert (stats.attempts_total, stats.attempts_max, stats.retried) == (6, 3, 2)
    assert stats.in_doubt == 1
    assert stats.latency.calls == 22
    assert stats.latency.failed == 2
    by_operation = {latency.operation: latency for latency in stats.latency_by_operation}
    assert by_operation["order_get"].p50_ms == pytest.approx(10.5)
    assert by_operation["order_get"].p95_ms == pytest.approx(19.05)
    assert by_operation["order_get"].max_ms == 20.0
    assert by_operation["order_refund"].failed == 2
    assert by_operation["order_refund"].p50_ms == pytest.approx(200.0)


def test_stats_bounds_the_latency_sample(cli_run: Cli) -> None:
    refund_id = cli_run.add("many", status="succeeded")
    now = utcnow()
    for index in range(30):  # the 10 newest are the slow ones
        cli_run.add_call(
            refund_id,
            "order_get",
            500.0 if index >= 20 else 1.0,
            created_at=now - timedelta(seconds=60 - index),
        )
    with cli_run.database.session_scope() as session:
        stats = refund_stats(session, now, sample_limit=10)
    assert stats.latency.calls == 10
    assert stats.latency.p50_ms == 500.0


@pytest.mark.postgres
def test_python_percentiles_match_postgresql(pg_cli: Cli) -> None:
    refund_id = pg_cli.add("latency", status="succeeded")
    durations = [3.0, 250.5, 12.25, 12.25, 80.0, 1.0, 999.0, 45.5, 7.75, 33.0, 61.0]
    for duration in durations:
        pg_cli.add_call(refund_id, "invoice_refund", duration)
    with pg_cli.database.session_scope() as session:
        stats = refund_stats(session, utcnow())
        p50, p95 = session.execute(
            text(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), "
                "percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FROM magento_calls"
            )
        ).one()
    assert stats.latency.p50_ms == pytest.approx(p50)
    assert stats.latency.p95_ms == pytest.approx(p95)
