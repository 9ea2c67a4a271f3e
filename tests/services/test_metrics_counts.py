"""The event metrics count what the services did (one attempt, one reconciliation, one call at a
time), and the state gauges say what the database holds; neither ever carries an id, a key, a
tenant or any other value an order system or a Magento could choose."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import REGISTRY, generate_latest
from sqlalchemy import update

from refund_worker import metrics
from refund_worker.exporter import StateCollector, state_registry
from refund_worker.models import Refund, utcnow
from tests.services.conftest import Env


def value(name: str, **labels: str) -> float:
    """A sample's value; ``shop`` is ``default`` unless named (webhooks are of no one shop)."""
    if name != "refund_worker_webhook_deliveries_total":
        labels = {"shop": "default", **labels}
    return REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the package's own metrics, to compare before and after."""
    found = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name.startswith("refund_worker_") and not sample.name.endswith("_created"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A sample's key in ``snapshot``; ``shop`` is ``default`` unless named."""
    return name, tuple(sorted({"shop": "default", **labels}.items()))


def delta(before: dict, after: dict) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {key: after[key] - before.get(key, 0.0) for key in after
            if after[key] != before.get(key, 0.0) and not key[0].endswith("_sum")
            and "_bucket" not in key[0]}


def test_an_in_doubt_refund_and_its_email_are_counted_once_each(env: Env) -> None:
    order = env.order()
    env.state.add_fault({"route": "order_refund", "kind": "commit_then_500", "count": 1})
    refund_id = env.enqueue(order_id=order["order_id"], notify_customer=True)
    service = env.refunds()
    before = snapshot()
    first = service.process(refund_id)
    assert first.retry_in is not None
    env.clock.advance(first.retry_in)
    assert service.process(refund_id).detail.startswith("reconciled")
    assert env.notifications().send(refund_id).status == "sent"
    calls = "refund_worker_magento_calls_total"
    seconds = "refund_worker_magento_call_duration_seconds_count"
    assert delta(before, snapshot()) == {
        key("refund_worker_refund_attempts_total", outcome="retrying", service="order"): 1,
        # found by the search: routing never ran in this attempt
        key("refund_worker_refund_attempts_total", outcome="succeeded", service="unknown"): 1,
        key("refund_worker_reconciliations_total", outcome="found"): 1,
        key(calls, operation="order_get", status="200"): 1,
        key(calls, operation="order_refund", status="500"): 1,
        key(calls, operation="creditmemo_search", status="200"): 1,
        key(calls, operation="creditmemo_emails", status="200"): 1,
        key(seconds, operation="order_get"): 1,
        key(seconds, operation="order_refund"): 1,
        key(seconds, operation="creditmemo_search"): 1,
        key(seconds, operation="creditmemo_emails"): 1,
        key("refund_worker_emails_total", outcome="sent"): 1,
    }


def test_a_rejected_refund_and_a_duplicate_delivery(env: Env) -> None:
    held = env.enqueue(order_id=env.order(state="holded")["order_id"])
    service = env.refunds()
    failed = value("refund_worker_refund_attempts_total", service="order", outcome="failed")
    skipped = value("refund_worker_refund_attempts_total", service="unknown", outcome="skipped",
                    shop="unknown")  # not claimed: its row was not read
    rejected = value("refund_worker_magento_calls_total", operation="order_refund", status="400")
    assert service.process(held).status == "failed"
    assert service.process(held).status == "failed"  # delivered again: not claimed, skipped
    assert value("refund_worker_refund_attempts_total", service="order", outcome="failed") == (
        failed + 1)
    assert value("refund_worker_refund_attempts_total", service="unknown",
                 outcome="skipped", shop="unknown") == skipped + 1
    assert value("refund_worker_magento_calls_total", operation="order_refund",
                 status="400") == rejected + 1


def test_labels_are_folded_to_values_the_code_chose() -> None:
    assert metrics.status_label(None) == "none"
    assert metrics.status_label(503) == "503"
    assert metrics.status_label(418) == "4xx"
    assert metrics.status_label(299) == "2xx"
    assert metrics.status_label(999) == "other"
    hostile = "order 42 <script>rma-1042"
    metrics.magento_call(hostile, 200, 0.01)
    metrics.refund_attempt(hostile, hostile)
    metrics.email(hostile)
    metrics.reconciliation(hostile)
    metrics.webhook_delivery(hostile)
    metrics.magento_call("order_get", 200, 0.01, shop=hostile)  # a shop nobody configured
    text = generate_latest(REGISTRY).decode()
    assert "rma-1042" not in text
    assert value("refund_worker_magento_calls_total", operation="other", status="200") >= 1
    assert value("refund_worker_magento_calls_total", operation="order_get", status="200",
                 shop="other") >= 1
    assert value("refund_worker_refund_attempts_total", service="other", outcome="other",
                 shop="unknown") >= 1
    assert value("refund_worker_webhook_deliveries_total", outcome="other") >= 1


def test_the_state_gauges_read_the_database(env: Env) -> None:
    now = utcnow()
    queued = [env.enqueue(order_id=env.order()["order_id"], idempotency_key=f"rma-secret-{n}")
              for n in range(3)]
    with env.database.engine.begin() as connection:
        connection.execute(update(Refund).where(Refund.id == queued[0]).values(
            status="needs_attention", service="invoice"))
        connection.execute(update(Refund).where(Refund.id == queued[1]).values(
            status="retrying", in_doubt=True, created_at=now - timedelta(minutes=30)))
        connection.execute(update(Refund).where(Refund.id == queued[2]).values(
            status="succeeded", notify_customer=True, notification_status="failed"))
    collector = StateCollector(env.database, clock=lambda: now, cache_seconds=0)
    registry = state_registry(collector)

    def gauge(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert gauge("refund_worker_state_up") == 1
    assert gauge("refund_worker_refunds", shop="default", status="needs_attention",
                 service="invoice") == 1
    assert gauge("refund_worker_refunds", shop="default", status="retrying", service="auto") == 1
    assert gauge("refund_worker_refunds", shop="default", status="succeeded",
                 service="auto") is None  # not read
    assert gauge("refund_worker_refunds_in_doubt") == 1
    oldest = gauge("refund_worker_oldest_unsettled_refund_age_seconds")
    assert oldest is not None
    assert 1799 <= oldest <= 1801
    assert gauge("refund_worker_emails", status="failed") == 1
    assert gauge("refund_worker_emails", status="pending") == 0
    text = generate_latest(registry).decode()
    assert "rma-secret" not in text
    assert queued[0] not in text
    env.database.dispose()
    broken = StateCollector(_Unreachable(), cache_seconds=0)  # type: ignore[arg-type]
    assert state_registry(broken).get_sample_value("refund_worker_state_up") == 0


class _Unreachable:
    def connection_scope(self) -> object:
        raise OSError("database down")


def test_a_deferred_refund_is_counted_as_deferred_not_as_an_attempt_outcome(env: Env) -> None:
    refund_id = env.enqueue(order_id=env.order()["order_id"])
    with env.database.engine.begin() as connection:  # a shop this worker does not know
        connection.execute(update(Refund).where(Refund.id == refund_id).values(shop="uk"))
    before = snapshot()
    assert env.refunds().process(refund_id).status == "retrying"
    assert delta(before, snapshot()) == {  # counted under no shop name: "uk" is not one
        key("refund_worker_refund_attempts_total", outcome="deferred", service="unknown",
            shop="other"): 1,
    }
