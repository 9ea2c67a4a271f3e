"""``refund-worker webhooks``: add (the secret printed once), list, disable, enable,
deliveries, replay; bad input is one line naming the problem and stores nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from refund_worker import cli
from refund_worker.outbox import OUTBOX_INSERT, EventType, event_params
from tests.cli.conftest import Cli


@pytest.fixture
def hooks_cli(cli_run: Cli, monkeypatch: pytest.MonkeyPatch) -> Cli:
    from refund_worker.settings import get_settings

    monkeypatch.setenv("REFUND_WORKER_SECRET_KEY", "cli-webhook-tests-secret-key-0123456789")
    monkeypatch.setenv("REFUND_WORKER_WEBHOOK_ALLOWED_HOSTS", '["127.0.0.1"]')
    get_settings.cache_clear()
    return cli_run


def test_add_list_disable_enable(hooks_cli: Cli) -> None:
    added = hooks_cli.json("webhooks", "add", "http://127.0.0.1:9/h", "--tenant", "erp",
                           "--event", "refund.failed", "--event", "refund.replayed")
    assert added["secret"].startswith("whsec_")
    assert added["event_types"] == ["refund.failed", "refund.replayed"]
    shown = hooks_cli("webhooks", "add", "http://127.0.0.1:9/all", "--tenant", "erp")
    assert shown.exit_code == 0
    assert "secret (shown once" in shown.stdout
    listing = hooks_cli("webhooks", "list")
    assert added["id"] in listing.stdout
    assert "whsec_" not in listing.stdout
    assert [e["tenant"] for e in hooks_cli.json("webhooks", "list", "--tenant", "erp")] == [
        "erp", "erp"]

    off = hooks_cli.json("webhooks", "disable", added["id"], "--reason", "moving")
    assert off["enabled"] is False
    assert "moving" in off["disabled_reason"]
    on = hooks_cli.json("webhooks", "enable", added["id"])
    assert (on["enabled"], on["disabled_reason"]) == (True, None)
    missing = hooks_cli("webhooks", "enable", "nope")
    assert missing.exit_code == 1
    assert "no webhook endpoint with id 'nope'" in missing.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["ftp://x.example/h"], "url: must be an https:// URL"),
    (["http://x.example/h"], "must be https://"),
    (["https://192.168.1.1/h"], "private"),
    (["https://x.example/h", "--description", "x" * 201], "description"),
])
def test_bad_input_is_one_line_and_stores_nothing(
    hooks_cli: Cli, args: list[str], message: str
) -> None:
    result = hooks_cli("webhooks", "add", *args, "--tenant", "erp")
    assert result.exit_code == 1
    assert message in result.stderr
    assert hooks_cli.json("webhooks", "list") == []


def test_without_a_secret_key_it_names_the_setting(cli_run: Cli) -> None:
    result = cli_run.runner.invoke(
        cli.main, ["webhooks", "add", "https://x.example/h", "--tenant", "t"])
    assert result.exit_code != 0
    assert "REFUND_WORKER_SECRET_KEY" in str(result.exception or result.stderr)


def test_deliveries_and_replay(hooks_cli: Cli) -> None:
    endpoint = hooks_cli.json("webhooks", "add", "http://127.0.0.1:9/h", "--tenant", "erp")
    refund_id = hooks_cli.add("rma-1", tenant="erp")
    with hooks_cli.database.connection_scope() as connection:
        [delivery_id] = connection.execute(OUTBOX_INSERT[EventType.FAILED], {
            "p_refund_id": refund_id, "p_now": hooks_cli.row(refund_id).created_at,
            **event_params({"status": "failed"})}).scalars()
    [shown] = hooks_cli.json("webhooks", "deliveries", "--refund", refund_id)
    assert (shown["id"], shown["status"], shown["endpoint_id"]) == (
        delivery_id, "pending", endpoint["id"])
    assert hooks_cli("webhooks", "deliveries").stdout.count(shown["event_id"]) == 1

    refused = hooks_cli("webhooks", "replay", str(delivery_id))
    assert refused.exit_code == 1
    assert "still in flight (pending)" in refused.stderr
    with hooks_cli.database.connection_scope() as connection:
        connection.execute(text("UPDATE webhook_deliveries SET status = 'failed'"))
    replayed = hooks_cli.json("webhooks", "replay", "--endpoint", endpoint["id"],
                              "--status", "failed")
    assert replayed["replayed"] == [delivery_id]
    assert hooks_cli.publisher.webhooks == [delivery_id]
    usage = hooks_cli("webhooks", "replay", "--endpoint", endpoint["id"])
    assert usage.exit_code == 2
