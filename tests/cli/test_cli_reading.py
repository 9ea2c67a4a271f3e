"""``refund-worker list``, ``status``, ``stats`` and ``db upgrade``: tables and ``--json``."""

from __future__ import annotations

import json
from datetime import timedelta

from refund_worker.models import RefundEvent, utcnow
from tests.cli.conftest import Cli


def test_list_table_and_json(cli_run: Cli) -> None:
    now = utcnow()
    held = cli_run.add(
        "rma-held",
        order_id=7,
        status="failed",
        last_error="order 7 is on hold",
        created_at=now - timedelta(hours=3),
    )
    done = cli_run.add(
        "rma-done",
        order_id=8,
        status="succeeded",
        service="invoice",
        created_at=now - timedelta(minutes=5),
    )

    result = cli_run("list")
    assert result.exit_code == 0
    assert "2 refunds" in result.stdout
    assert held in result.stdout
    assert done in result.stdout
    assert "order 7 is on hold" in result.stdout
    assert "3h ago" in result.stdout
    assert result.stdout.index(done) < result.stdout.index(held)  # newest first

    listed = cli_run.json("list", "--status", "failed", "--since", "1d")
    assert [(row["id"], row["status"], row["last_error"]) for row in listed] == [
        (held, "failed", "order 7 is on hold")
    ]
    assert [row["id"] for row in cli_run.json("list", "--order", "8")] == [done]
    assert [row["id"] for row in cli_run.json("list", "--since", "1h")] == [done]
    assert [row["id"] for row in cli_run.json("list", "--until", "1h")] == [held]
    assert [row["id"] for row in cli_run.json("list", "--error", "HOLD")] == [held]
    assert [row["id"] for row in cli_run.json("list", "--service", "invoice")] == [done]
    assert [row["id"] for row in cli_run.json("list", "--limit", "1")] == [done]


def test_list_says_when_nothing_matches_and_when_limited(cli_run: Cli) -> None:
    result = cli_run("list", "--status", "failed")
    assert result.exit_code == 0
    assert "no refunds match" in result.stderr
    cli_run.add("a")
    cli_run.add("b")
    assert "use --limit to see more" in cli_run("list", "--limit", "2").stderr


def test_list_refuses_bad_filters(cli_run: Cli) -> None:
    result = cli_run("list", "--since", "last tuesday")
    assert result.exit_code == 2
    assert "neither a relative time" in result.stderr
    assert cli_run("list", "--status", "lost").exit_code == 2
    assert cli_run("list", "--order", "0").exit_code == 2


def test_status_shows_calls_and_events(cli_run: Cli) -> None:
    refund_id = cli_run.add("rma-9", status="failed", last_error="ACL missing")
    cli_run.add_call(refund_id, "order_get", 12.0)
    with cli_run.database.session_scope() as session:
        session.add(
            RefundEvent(refund_id=refund_id, kind="refund_replayed", detail="by alice: ACL fixed")
        )

    result = cli_run("status", "--key", "rma-9")
    assert result.exit_code == 0
    assert "ACL missing" in result.stdout
    assert "order_get" in result.stdout
    assert "by alice: ACL fixed" in result.stdout

    document = cli_run.json("status", refund_id)
    assert document["idempotency_key"] == "rma-9"
    assert [call["operation"] for call in document["calls"]] == ["order_get"]
    assert [event["kind"] for event in document["events"]] == ["refund_replayed"]
    assert "T" in document["events"][0]["created_at"]  # ISO 8601


def test_status_of_an_unknown_refund(cli_run: Cli) -> None:
    result = cli_run("status", "nope")
    assert result.exit_code == 2
    assert "no refund with id 'nope'" in result.stderr
    by_key = cli_run("status", "--key", "nope")
    assert by_key.exit_code == 2
    assert "no refund with idempotency key 'nope'" in by_key.stderr


def test_status_looks_up_ids_and_keys_apart_and_asks_for_the_tenant(cli_run: Cli) -> None:
    erp = cli_run.add("RMA-1", tenant="erp")
    returns = cli_run.add("RMA-1", tenant="returns")
    decoy = cli_run.add(erp, tenant="returns")  # a key that is another refund's id

    assert cli_run.json("status", erp)["id"] == erp  # by id: never the decoy
    ambiguous = cli_run("status", "--key", "RMA-1")
    assert ambiguous.exit_code == 2
    assert "tenants erp, returns each have a refund" in ambiguous.stderr
    assert cli_run.json("status", "--key", "RMA-1", "--tenant", "returns")["id"] == returns
    assert cli_run.json("status", "--key", erp)["id"] == decoy
    listed = cli_run.json("list", "--tenant", "erp")
    assert [(row["id"], row["tenant"]) for row in listed] == [(erp, "erp")]
    assert cli_run("status").exit_code == 2  # an id or --key is needed


def test_stats_table_and_json(cli_run: Cli) -> None:
    now = utcnow()
    stuck = cli_run.add("stuck", status="retrying", attempts=4, created_at=now - timedelta(days=2))
    cli_run.add("fine", status="succeeded", attempts=1)
    for duration in (10.0, 20.0, 30.0, 40.0):
        cli_run.add_call(stuck, "order_refund", duration)

    result = cli_run("stats")
    assert result.exit_code == 0
    assert "2 refunds" in result.stdout
    assert "retrying" in result.stdout
    assert "succeeded" in result.stdout
    assert f"2d ({stuck})" in result.stdout
    assert "order_refund" in result.stdout
    assert "25" in result.stdout  # p50 of 10..40

    document = cli_run.json("stats", "--window", "30m")
    assert document["by_status"] == {"retrying": 1, "succeeded": 1}
    assert document["oldest_unsettled_id"] == stuck
    assert document["oldest_unsettled_age_seconds"] > 2 * 86400 - 60
    assert document["attempts_total"] == 5
    assert document["latency"]["calls"] == 4
    assert document["latency"]["p50_ms"] == 25.0
    assert document["latency"]["p95_ms"] == 38.5

    assert cli_run("stats", "--window", "forever").exit_code == 2


def test_db_upgrade_json(cli_run: Cli) -> None:
    document = cli_run.json("db", "upgrade")
    assert document["revision"] == document["head"]
    assert document["revision"]


def test_enqueue_json_lines(cli_run: Cli) -> None:
    lines = "\n".join(
        [
            json.dumps({"idempotency_key": "rma-a", "order_id": 1}),
            json.dumps({"idempotency_key": "rma-b", "order_id": -3}),
            json.dumps({"idempotency_key": "rma-a", "order_id": 1}),
        ]
    )
    result = cli_run("enqueue", "-", input=lines)
    assert result.exit_code == 1  # line 2 was refused
    assert "line 2: refused: order_id" in result.stderr
    assert "2 accepted, 1 refused" in result.stderr
    assert "(duplicate: already accepted)" in result.stdout
    [refund_id] = {row["id"] for row in cli_run.json("list")}
    assert cli_run.publisher.refunds == [refund_id]


def test_enqueue_and_show_an_order_by_increment_id(cli_run: Cli) -> None:
    lines = "\n".join([
        json.dumps({"idempotency_key": "rma-inc", "order_increment_id": "000000123"}),
        json.dumps({"idempotency_key": "rma-bad", "order_increment_id": "000 123"}),
    ])
    result = cli_run("enqueue", "-", input=lines)
    assert result.exit_code == 1
    assert "line 2: refused: order_increment_id" in result.stderr
    shown = cli_run.json("status", "--key", "rma-inc")
    shown = shown[0] if isinstance(shown, list) else shown
    assert (shown["order_id"], shown["order_increment_id"]) == (None, "000000123")
    table = cli_run("list")
    assert "#000000123" in table.stdout
