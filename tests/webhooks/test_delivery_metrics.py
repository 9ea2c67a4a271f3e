"""Each webhook delivery attempt is counted by its outcome (``refund_worker_webhook_deliveries_
total``), and an endpoint switched off for failing is counted once as ``disabled``."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.webhooks.conftest import Hooks


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("refund_worker_webhook_deliveries_total",
                                     {"outcome": outcome}) or 0.0


def test_each_delivery_attempt_is_counted_by_its_outcome(hooks: Hooks) -> None:
    before = {outcome: counted(outcome)
              for outcome in ("delivered", "retrying", "failed", "disabled")}
    hooks.endpoint()
    refund_id = hooks.refund()
    service = hooks.service()
    [ok] = hooks.event(refund_id)
    assert service.deliver(ok).status == "delivered"
    assert service.deliver(ok).status == "delivered"  # a second copy sends nothing: not counted
    hooks.receiver.mode = "status:500"
    [first] = hooks.event(refund_id)
    assert service.deliver(first).status == "retrying"
    hooks.clock.advance(hooks.settings.webhook_disable_after_seconds + 1)
    [second] = hooks.event(refund_id)
    service.deliver(second)  # fails again: the endpoint is disabled
    hooks.clock.advance(3600)
    assert service.deliver(first).status == "failed"
    after = {outcome: counted(outcome) - before[outcome] for outcome in before}
    assert after == {"delivered": 1, "retrying": 2, "failed": 1, "disabled": 1}
