"""``refund-worker replay``: re-run failed refunds (or emails) under the same idempotency key."""

from __future__ import annotations

import json
from datetime import timedelta

import click
import pytest
import redis

from refund_worker import cli
from refund_worker.cli import replay as cli_replay
from refund_worker.models import utcnow
from tests.cli.conftest import Cli


def test_replay_by_id_asks_then_requeues_in_doubt(cli_run: Cli) -> None:
    refund_id = cli_run.add(
        "rma-1",
        status="failed",
        attempts=3,
        last_error="ACL missing",
        last_error_kind="permanent",
        last_http_status=401,
    )

    declined = cli_run("replay", refund_id, "--reason", "ACL granted", input="n\n")
    assert declined.exit_code == 1
    assert "Replay 1 refunds?" in declined.stderr
    assert cli_run.row(refund_id).status == "failed"
    assert cli_run.publisher.refunds == []

    args = ("replay", "--key", "rma-1", "--reason", "ACL granted", "--actor", "alice")
    result = cli_run(*args, input="y\n")
    assert result.exit_code == 0, result.output
    assert "ACL missing" in result.stdout  # why it failed, shown before asking
    assert "replayed 1 refunds; refused 0" in result.stderr
    row = cli_run.row(refund_id)
    assert (row.status, row.attempts, row.last_error, row.last_http_status, row.in_doubt) == (
        "queued",
        0,
        None,
        None,
        True,
    )
    assert (row.idempotency_key, row.replayed_by) == ("rma-1", "alice")
    assert cli_run.publisher.refunds == [refund_id]
    [event] = cli_run.events(refund_id)
    assert event.kind == "refund_replayed"
    assert event.detail == "by alice: ACL granted (previous error: ACL missing)"


def test_succeeded_and_in_flight_are_refused_with_a_reason(cli_run: Cli) -> None:
    failed = cli_run.add("failed", status="failed", last_error="boom")
    done = cli_run.add("done", status="succeeded", creditmemo_id=77)
    busy = cli_run.add("busy", status="processing")

    result = cli_run("replay", failed, done, busy, "missing-key", "--reason", "retry", "--yes")

    assert result.exit_code == 1
    assert "already succeeded (credit memo 77); replaying would refund twice" in result.stdout
    assert "still in flight (processing)" in result.stdout
    assert "no such refund" in result.stdout
    assert cli_run.publisher.refunds == [failed]
    assert cli_run.row(done).status == "succeeded"
    assert cli_run.row(busy).status == "processing"
    assert cli_run.events(done) == []


def test_nothing_replayable_publishes_nothing(cli_run: Cli) -> None:
    done = cli_run.add("done", status="succeeded", creditmemo_id=5)
    document = cli_run.json("replay", done, "--reason", "x", "--yes")
    assert document["replayed"] == []
    assert "already succeeded" in document["refused"][done]
    assert cli_run("replay", done, "--reason", "x", "--yes").exit_code == 1
    assert cli_run.publisher.refunds == []


def test_dry_run_lists_what_would_run_and_changes_nothing(cli_run: Cli) -> None:
    now = utcnow()
    hold = cli_run.add(
        "hold",
        order_id=1,
        status="failed",
        last_error="The order is on hold",
        created_at=now - timedelta(hours=2),
    )
    acl = cli_run.add(
        "acl",
        order_id=2,
        status="failed",
        last_error="ACL missing",
        created_at=now - timedelta(hours=1),
    )
    cli_run.add("ok", order_id=3, status="succeeded", creditmemo_id=1)
    cli_run.add(
        "old",
        order_id=4,
        status="failed",
        last_error="on hold",
        created_at=now - timedelta(days=10),
    )

    result = cli_run("replay", "--status", "failed", "--since", "1d", "--dry-run")
    assert result.exit_code == 0
    assert hold in result.stdout
    assert acl in result.stdout
    assert "The order is on hold" in result.stdout
    assert "ACL missing" in result.stdout
    assert "dry run: 2 refunds would be replayed" in result.stderr

    document = cli_run.json(
        "replay", "--status", "failed", "--error", "on hold", "--since", "1d", "--dry-run"
    )
    assert [(c["refund_id"], c["error"]) for c in document["would_replay"]] == [
        (hold, "The order is on hold")
    ]
    assert document["refused"] == {}
    assert cli_run.row(hold).status == "failed"
    assert cli_run.events(hold) == []
    assert cli_run.publisher.refunds == []


def test_a_large_dry_run_shows_the_oldest_and_counts_every_one_by_error(
    cli_run: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_replay, "SHOWN_CANDIDATES", 2)
    monkeypatch.setattr(cli_replay, "SHOWN_ERRORS", 1)
    now = utcnow()
    ids = [
        cli_run.add(f"k{n}", status="failed", last_error="on hold" if n < 3 else f"error {n}",
                    created_at=now - timedelta(hours=10 - n))
        for n in range(5)
    ]

    result = cli_run("replay", "--status", "failed", "--dry-run")

    assert result.exit_code == 0
    assert [i for i in ids if i in result.stdout] == ids[:2]  # the oldest two
    assert "the oldest 2" in result.stdout
    assert "all 5 refunds, by error" in result.stdout
    assert "│ 3       │ on hold" in result.stdout
    assert "(2 other errors)" in result.stdout
    assert "dry run: 5 refunds would be replayed" in result.stderr
    document = cli_run.json("replay", "--status", "failed", "--dry-run")
    assert [c["refund_id"] for c in document["would_replay"]] == ids  # all, oldest first
    assert document["would_replay"][0]["error"] == "on hold"


def test_dry_run_by_id_exits_1_when_something_would_be_refused(cli_run: Cli) -> None:
    done = cli_run.add("done", status="succeeded", creditmemo_id=3)
    result = cli_run("replay", done, "--dry-run")
    assert result.exit_code == 1
    assert "already succeeded" in result.stdout


def test_bulk_replay_with_filters(cli_run: Cli) -> None:
    now = utcnow()
    replayed = [
        cli_run.add(
            f"hold-{n}",
            status="failed",
            last_error="order on hold",
            service="order",
            created_at=now - timedelta(minutes=n),
        )
        for n in range(1, 4)
    ]
    other = cli_run.add("other", status="failed", last_error="ACL missing", service="order")

    document = cli_run.json(
        "replay",
        "--status",
        "failed",
        "--error",
        "hold",
        "--service",
        "order",
        "--reason",
        "orders released",
        "--yes",
    )

    assert sorted(document["replayed"]) == sorted(replayed)
    assert document["refused"] == {}
    assert sorted(cli_run.publisher.refunds) == sorted(replayed)
    assert cli_run.row(other).status == "failed"
    assert all(cli_run.row(refund_id).in_doubt for refund_id in replayed)


def test_bulk_replay_runs_in_batches(cli_run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_replay, "REPLAY_BATCH", 2)
    ids = [cli_run.add(f"f-{n}", status="failed", last_error="x") for n in range(5)]
    result = cli_run("replay", "--status", "failed", "--reason", "batch", "--yes")
    assert result.exit_code == 0
    assert sorted(cli_run.publisher.refunds) == sorted(ids)


def test_broker_failure_after_commit_is_reported(
    cli_run: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_replay, "REPLAY_BATCH", 2)
    ids = [
        cli_run.add(
            f"f-{n}",
            status="failed",
            last_error="x",
            created_at=utcnow() - timedelta(minutes=10 - n),
        )
        for n in range(4)
    ]
    cli_run.publisher.failing = True

    document = cli_run.json("replay", "--status", "failed", "--reason", "r", "--yes")

    # The first batch is committed (the sweeper publishes it); the rest is left untouched.
    assert document["replayed"] == document["unpublished"] == ids[:2]
    assert set(document["refused"]) == set(ids[2:])
    assert "ConnectionRefusedError" in document["refused"][ids[2]]
    assert "hunter2" not in json.dumps(document)
    assert [cli_run.row(i).status for i in ids] == ["queued", "queued", "failed", "failed"]
    assert cli_run("replay", ids[2], "--reason", "r", "--yes").exit_code == 1  # still failing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "name refunds by id or --key KEY, or select them with --status failed"),
        (("abc", "--status", "failed"), "not both"),
        (("--order", "5"), "--status failed"),
        (("--status", "not_sent"), "add --notifications"),
        (("abc",), "a reason is required"),
        (("abc", "--reason", "   "), "a reason is required"),
        (("abc", "--reason", "x" * 501), "longer than 500"),
        (("abc", "--reason", "a\x00b"), "control characters"),
        (("--status", "succeeded", "--reason", "x"), "'succeeded' is not one of"),
    ],
)
def test_usage_errors(cli_run: Cli, args: tuple[str, ...], message: str) -> None:
    result = cli_run("replay", *args, "--yes")
    assert result.exit_code == 2
    assert message in result.stderr


def test_replaying_failed_emails(cli_run: Cli) -> None:
    email = cli_run.add(
        "email",
        status="succeeded",
        creditmemo_id=9,
        notify_customer=True,
        notification_status="failed",
        notification_error="SMTP down",
        notification_attempts=5,
    )
    unsent = cli_run.add(
        "unsent",
        status="succeeded",
        creditmemo_id=10,
        notify_customer=True,
        notification_status="not_sent",
        notification_error="emails are off",
    )
    not_done = cli_run.add("refund-failed", status="failed", last_error="boom")

    dry = cli_run.json("replay", "--notifications", "--status", "failed", "--dry-run")
    assert [(c["refund_id"], c["error"]) for c in dry["would_replay"]] == [(email, "SMTP down")]

    result = cli_run("replay", email, not_done, "--notifications", "--reason", "SMTP back", "--yes")
    assert result.exit_code == 1
    assert "only a succeeded refund has an email to send" in result.stdout
    assert cli_run.publisher.notifications == [email]
    assert cli_run.publisher.refunds == []
    row = cli_run.row(email)
    assert (row.status, row.notification_status, row.notification_error) == (
        "succeeded",
        "pending",
        None,
    )
    assert [event.kind for event in cli_run.events(email)] == ["notification_replayed"]

    document = cli_run.json(
        "replay",
        "--notifications",
        "--status",
        "not_sent",
        "--error",
        "OFF",
        "--reason",
        "emails on",
        "--yes",
    )
    assert document["replayed"] == [unsent]


@pytest.mark.redis
def test_replay_publishes_to_the_real_broker(redis_cli: Cli, redis_url: str) -> None:
    refund_id = redis_cli.add("rma-redis", status="failed", last_error="x")

    result = redis_cli("replay", refund_id, "--reason", "broker test", "--yes")

    assert result.exit_code == 0, result.output
    client = redis.Redis.from_url(redis_url)
    try:
        [message] = client.lrange("refunds", 0, -1)
    finally:
        client.close()
    headers = json.loads(message)["headers"]
    assert headers["task"] == "refunds.process"
    assert refund_id in headers["argsrepr"]


def test_a_refund_replayed_meanwhile_is_refused_not_replayed_twice(
    cli_run: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    refund_id = cli_run.add("race", status="failed", last_error="boom")

    def another_operator_first(*_: object, **__: object) -> bool:
        # While this operator reads the table, someone else replays the refund.
        other = cli_run.runner.invoke(cli.main, ["replay", refund_id, "--reason", "mine", "--yes"])
        assert other.exit_code == 0
        return True

    monkeypatch.setattr(click, "confirm", another_operator_first)
    result = cli_run("replay", refund_id, "--reason", "also mine")

    assert result.exit_code == 1
    assert "still in flight (queued)" in result.stdout
    assert cli_run.publisher.refunds == [refund_id]  # published once, by the first replay
    assert len(cli_run.events(refund_id)) == 1


def test_replay_by_key_asks_for_the_tenant_when_tenants_share_it(cli_run: Cli) -> None:
    erp = cli_run.add("RMA-7", tenant="erp", status="failed", last_error="x")
    returns = cli_run.add("RMA-7", tenant="returns", status="failed", last_error="y")

    ambiguous = cli_run("replay", "--key", "RMA-7", "--reason", "fixed", "--yes")
    assert ambiguous.exit_code == 2
    assert "tenants erp, returns each have key 'RMA-7'" in ambiguous.stderr
    assert cli_run.publisher.refunds == []

    chosen = cli_run("replay", "--key", "RMA-7", "--tenant", "returns", "--reason", "ok", "--yes")
    assert chosen.exit_code == 0, chosen.output
    assert cli_run.publisher.refunds == [returns]
    assert cli_run.row(erp).status == "failed"


def test_a_refund_that_needs_attention_can_be_replayed_once_looked_at(cli_run: Cli) -> None:
    refund_id = cli_run.add(
        "att-1", status="needs_attention", attention="credit memo 7 does not fit", in_doubt=True
    )

    listed = cli_run.json("list", "--status", "needs_attention")
    assert [(row["id"], row["attention"]) for row in listed] == [
        (refund_id, "credit memo 7 does not fit")
    ]
    result = cli_run("replay", refund_id, "--reason", "checked in Magento", "--yes")
    assert result.exit_code == 0, result.output
    row = cli_run.row(refund_id)
    assert (row.status, row.attention, row.in_doubt) == ("queued", None, True)
    [event] = cli_run.events(refund_id)
    assert event.kind == "refund_replayed"
    assert "previous error: credit memo 7 does not fit" in (event.detail or "")
