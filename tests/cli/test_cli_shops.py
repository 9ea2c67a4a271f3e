"""``list``, ``stats`` and ``replay`` with ``--shop``; ``enqueue`` names the configured shops."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import Cli

SHOPS = json.dumps([
    {"name": "de", "url": "https://de.example.com", "token": "de-s3cret", "timeout": 5},
    {"name": "fr", "url": "https://fr.example.com", "token": "fr-s3cret", "timeout": 5},
])


def test_list_stats_and_replay_by_shop(cli_run: Cli) -> None:
    from sqlalchemy import update

    from refund_worker.models import Refund

    de = cli_run.add("rma-de", order_id=7, status="failed", last_error="no")
    fr = cli_run.add("rma-fr", order_id=7, status="failed", last_error="no")
    cli_run.add("rma-fr-2", order_id=8, status="succeeded")
    with cli_run.database.session_scope() as session:
        session.execute(update(Refund).where(Refund.id == de).values(shop="de"))
        session.execute(update(Refund).where(Refund.idempotency_key.like("rma-fr%")).values(
            shop="fr"))
    cli_run.add_call(de, "order_get", 40)
    cli_run.add_call(fr, "order_get", 900)

    listed = cli_run.json("list", "--shop", "fr")
    assert sorted(row["idempotency_key"] for row in listed) == ["rma-fr", "rma-fr-2"]
    assert {row["shop"] for row in listed} == {"fr"}
    assert "de" in cli_run("list", "--shop", "de").stdout
    stats = cli_run.json("stats", "--shop", "de")
    assert (stats["total"], stats["shop"], stats["by_shop"]) == (1, "de", {"de": 1})
    assert stats["latency"]["calls"] == 1
    assert stats["latency"]["max_ms"] == 40
    everything = cli_run.json("stats")
    assert everything["by_shop"] == {"de": 1, "fr": 2}
    dry = cli_run.json("replay", "--shop", "de", "--status", "failed", "--reason", "x",
                       "--dry-run")
    assert json.dumps(dry).count(de) >= 1
    assert fr not in json.dumps(dry)


def test_enqueue_names_a_configured_shop(cli_run: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from refund_worker.settings import get_settings

    monkeypatch.setenv("REFUND_WORKER_SHOPS", SHOPS)
    get_settings.cache_clear()
    lines = "\n".join([
        json.dumps({"idempotency_key": "a", "order_id": 1, "shop": "de"}),
        json.dumps({"idempotency_key": "b", "order_id": 1}),
        json.dumps({"idempotency_key": "c", "order_id": 1, "shop": "uk"}),
    ])
    result = cli_run("enqueue", "-", input=lines)
    assert result.exit_code == 1
    assert "line 2: refused: shop: required, since several shops are configured (de, fr)" in (
        result.stderr)
    assert "line 3: refused: shop: 'uk' is not a shop you may refund in" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    assert len(cli_run.publisher.refunds) == 1
