"""The fault run, small: ~150 refunds through two real workers and beat on a PRIVATE redis-server
and PostgreSQL while workers are SIGKILLed, Redis restarts empty, Magento commits then fails, 503
and 429 bursts hit, every message is published twice, the database connections are cut and
the webhook receiver fails a share of deliveries and goes down. Nothing may be lost, refunded
twice, over-refunded or emailed twice, and every webhook event must arrive, each copy with the
same id and body (``refund_worker.testing.faults``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from refund_worker.testing.faults import FaultConfig, PrivateRedis, run_fault_run
from tests.conftest import need_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

SMALL = FaultConfig(
    refunds=150,
    workers=2,
    concurrency=6,
    intake_seconds=8,
    chaos_seconds=18,
    settle_timeout=60,
    seed=11,
    notify_share=0.3,
    commit_fault_share=0.15,
    slow_commit_share=0.02,
    kill_every=(3.0, 6.0),
    kill_min_gap=3.0,
    kill_after_commit_fault=0.5,
    redis_restarts=(0.4,),
    redis_down_seconds=1.0,
    db_breaks=(0.6,),
    db_break_seconds=2.0,
    bursts=((0.2, 503, 1.5), (0.8, 429, 1.5)),
    timings={
        "MAGENTO_TIMEOUT": "1",
        "LEASE_SECONDS": "9",
        "RETRY_BACKOFF_BASE": "0.1",
        "RETRY_BACKOFF_MAX": "1",
        "IN_DOUBT_GRACE_SECONDS": "0.5",
        "REPUBLISH_AFTER_SECONDS": "3",
        "SWEEP_INTERVAL_SECONDS": "1",
        "VISIBILITY_TIMEOUT": "30",
        "MAX_ATTEMPTS": "10",
        "NOTIFICATION_MAX_ATTEMPTS": "10",
        "MAGENTO_RATE_LIMIT": "400",
    },
)


def test_nothing_is_lost_or_doubled_under_fire(pg_server: str, tmp_path: Path) -> None:
    need_binary(PrivateRedis.available(),
                "redis-server is not installed: the test restarts a private instance")
    config = FaultConfig(**{**SMALL.__dict__, "pg_admin_url": pg_server})
    report = run_fault_run(config, tmp_path / "run")
    broken = {name: found for name, found in report.violations.items() if found}
    assert report.ok, f"\n{report.table()}\nviolations: {broken}\nlogs: {report.workdir}"
    figures, chaos = report.figures, report.chaos
    # The run really was under fire, and every kind of fault really fired.
    assert figures["accepted"] >= 150
    assert figures["succeeded"] > 0.9 * figures["accepted"]
    assert figures["failed_unexpected"] == 0, report.failures
    assert figures["reconciled"] > 0
    assert sum(chaos["kills"].values()) >= 2
    assert chaos["redis_restarts"] == 1
    assert chaos["db_connections_terminated"] > 0
    fired = chaos["faults_fired"]
    assert fired.get("commit_then_500", 0) + fired.get("commit_then_drop", 0) > 0
    events = {event["event"] for event in chaos["timeline"]}
    assert {"503 burst starts", "429 burst starts", "database break starts",
            "redis back (empty)", "re-published every refund id"} <= events
    # Every refund's outcome reached the webhook receiver (down for a while, 500 to a share).
    assert figures["webhook_events"] >= figures["accepted"]
    assert figures["webhook_events_lost"] == 0
    assert figures["webhook_answers"].get("500", 0) > 0
    assert "webhook receiver down" in events
    # Every message twice (a batch cut short by the Redis restart is published by the sweeper).
    assert chaos["messages_published_by_intake"] >= 1.5 * figures["accepted"]
