"""The webhook outbox on SQLite and PostgreSQL: every state change with an event writes one
delivery per subscribed endpoint of the refund's tenant, in its own transaction; nothing for an
unsubscribed type, another tenant or a disabled endpoint; nothing for a change that did not
happen (a duplicate success, a lost lease) or rolled back."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from refund_worker.models import WebhookDelivery
from refund_worker.outbox import EventType
from refund_worker.replay import replay
from refund_worker.webhooks.endpoints import EndpointRequest, register, set_enabled
from tests.services.conftest import Env

SECRET_KEY = "k" * 40


def endpoint(env: Env, *types: EventType, tenant: str = "default") -> str:
    settings = env.settings.model_copy(
        update={"secret_key": env.settings.secret_key or _secret(),
                "webhook_allowed_hosts": ["127.0.0.1"]})
    view, _ = register(
        env.database, settings,
        EndpointRequest(url="http://127.0.0.1:9/hooks", event_types=list(types)),
        tenant=tenant, created_by="test",
    )
    return view.id


def _secret() -> Any:
    from pydantic import SecretStr

    return SecretStr(SECRET_KEY)


def deliveries(env: Env) -> list[WebhookDelivery]:
    with env.database.session_scope() as session:
        rows = list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        session.expunge_all()
        return rows


def test_a_success_writes_one_delivery_per_subscribed_endpoint(env: Env) -> None:
    wanted = endpoint(env, EventType.SUCCEEDED, EventType.FAILED)
    also = endpoint(env, EventType.SUCCEEDED)
    endpoint(env, EventType.FAILED)  # not subscribed to successes
    endpoint(env, EventType.SUCCEEDED, tenant="someone-else")  # another tenant's
    disabled = endpoint(env, EventType.SUCCEEDED)
    set_enabled(env.database, disabled, enabled=False, tenant=None, actor="test", reason="off")

    refund_id = env.enqueue(order_id=env.order()["order_id"])
    result = env.refunds().process(refund_id)

    assert result.status == "succeeded"
    rows = deliveries(env)
    assert {row.endpoint_id for row in rows} == {wanted, also}
    assert sorted(result.webhooks) == sorted(row.id for row in rows)  # to publish after commit
    assert len({row.event_id for row in rows}) == 1  # one event, one id, for every endpoint
    assert rows[0].event_id.startswith("msg_")
    assert len(rows[0].event_id) == 36
    assert {row.event_type for row in rows} == {"refund.succeeded"}
    assert all(row.status == "pending" and row.refund_id == refund_id for row in rows)
    data = json.loads(rows[0].data_json)
    assert data["status"] == "succeeded"
    assert data["creditmemo_id"] == env.row(refund_id).creditmemo_id
    # Delivered again, the settled refund changes nothing and reports nothing.
    again = env.refunds().process(refund_id)
    assert again.webhooks == ()
    assert len(deliveries(env)) == 2


def test_no_endpoint_no_delivery(env: Env) -> None:
    refund_id = env.enqueue(order_id=env.order()["order_id"])
    assert env.refunds().process(refund_id).webhooks == ()
    assert deliveries(env) == []


def test_a_failure_and_needs_attention_write_their_events(env: Env) -> None:
    endpoint(env, EventType.FAILED, EventType.NEEDS_ATTENTION)
    failing = env.enqueue(order_id=env.order(state="holded")["order_id"])
    assert env.refunds().process(failing).status == "failed"
    rows = deliveries(env)
    assert [(row.event_type, row.refund_id) for row in rows] == [("refund.failed", failing)]
    data = json.loads(rows[0].data_json)
    assert data["status"] == "failed"
    assert "holded" in data["error"]


def test_a_retry_writes_nothing(env: Env) -> None:
    endpoint(env, *EventType)
    order = env.order()
    env.state.add_fault({"route": "order_refund", "kind": "status", "status": 503, "count": 1})
    refund_id = env.enqueue(order_id=order["order_id"])
    assert env.refunds().process(refund_id).status == "retrying"
    assert deliveries(env) == []


def test_a_rolled_back_success_leaves_no_event(env: Env) -> None:
    """The outbox rows live and die with the outcome: a success naming a credit memo that
    already backs another refund is rolled back (the unique constraint), so its
    ``refund.succeeded`` goes too; the needs-attention it becomes is reported instead."""
    endpoint(env, EventType.SUCCEEDED, EventType.NEEDS_ATTENTION)
    first = env.enqueue(order_id=env.order()["order_id"])
    assert env.refunds().process(first).status == "succeeded"
    taken = env.row(first).creditmemo_id

    def answer_with_the_taken_memo(original: Any, *args: Any, **kwargs: Any) -> int:
        original(*args, **kwargs)
        assert taken is not None
        return taken

    env.overrides["refund_order"] = answer_with_the_taken_memo
    second = env.enqueue(order_id=env.order()["order_id"])
    assert env.refunds().process(second).status == "needs_attention"
    assert [(row.refund_id, row.event_type) for row in deliveries(env)] == [
        (first, "refund.succeeded"), (second, "refund.needs_attention")]


def test_the_email_and_a_replay_write_their_events(env: Env) -> None:
    endpoint(env, EventType.NOTIFICATION_SENT, EventType.REPLAYED)
    sent = env.enqueue(order_id=env.order()["order_id"], notify_customer=True)
    assert env.refunds().process(sent).status == "succeeded"
    result = env.notifications().send(sent)
    assert result.status == "sent"
    assert [row.event_type for row in deliveries(env)] == ["refund.notification_sent"]
    assert list(result.webhooks) == [deliveries(env)[0].id]

    failing = env.enqueue(order_id=env.order(state="holded")["order_id"])
    env.refunds().process(failing)
    report = replay(env.database, env.publisher, [failing], reason="order released", actor="ops")
    assert report.replayed == [failing]
    replayed = [row for row in deliveries(env) if row.event_type == "refund.replayed"]
    assert [row.refund_id for row in replayed] == [failing]
    assert report.webhooks == [replayed[0].id]
    data = json.loads(replayed[0].data_json)
    assert (data["replayed_by"], data["reason"]) == ("ops", "order released")
