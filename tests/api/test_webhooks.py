"""``/v1/webhook-endpoints`` and ``/v1/webhook-deliveries`` over a real socket: a producer
registers for its own tenant and gets the secret once; bad input names its field and stores
nothing; another tenant's endpoints and deliveries are invisible; disable, enable, replay."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from refund_worker.models import WebhookEndpoint
from refund_worker.outbox import OUTBOX_INSERT, EventType, event_params
from tests.api.support import Api, StartApi, refund

SECRET_KEY = "api-webhook-tests-secret-key-0123456789"


@pytest.fixture
def hooks_api(start_api: StartApi) -> Api:
    return start_api(secret_key=SECRET_KEY, webhook_allowed_hosts=["127.0.0.1"])


def endpoints_stored(api: Api) -> int:
    with api.database.session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0)


def register(api: Api, client: Any = None, **body: Any) -> Any:
    body.setdefault("url", "http://127.0.0.1:9/hooks")
    body.setdefault("event_types", ["refund.succeeded", "refund.failed"])
    return (client or api.producer).post("/v1/webhook-endpoints", json=body)


def test_a_producer_registers_and_sees_the_secret_once(hooks_api: Api) -> None:
    answer = register(hooks_api, description="ERP")
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["secret"].startswith("whsec_")
    assert created["tenant"] == "erp"
    assert created["event_types"] == ["refund.succeeded", "refund.failed"]
    assert answer.headers["location"] == f"/v1/webhook-endpoints/{created['id']}"
    listed = hooks_api.producer.get("/v1/webhook-endpoints").json()["endpoints"]
    assert [e["id"] for e in listed] == [created["id"]]
    shown = hooks_api.producer.get(f"/v1/webhook-endpoints/{created['id']}")
    assert "secret" not in shown.json()
    assert created["secret"] not in shown.text + str(listed)
    with hooks_api.database.session_scope() as session:  # never stored
        row = session.get(WebhookEndpoint, created["id"])
        assert row is not None
        assert created["secret"] not in str([getattr(row, c.key) for c in row.__table__.columns])


BAD = [
    ({"url": "http://hooks.example.com/x"}, "url", "must be https"),
    ({"url": "https://10.0.0.1/x"}, "url", "private"),
    ({"event_types": []}, "event_types", "at least 1"),
    ({"event_types": ["refund.exploded"]}, "event_types.0", "refund.succeeded"),
    ({"event_types": ["refund.failed", "refund.failed"]}, "event_types", "twice"),
    ({"surprise": 1}, "surprise", "Extra inputs"),
    ({"description": "x" * 201}, "description", "at most 200"),
]


def test_bad_input_names_its_field_and_stores_nothing(hooks_api: Api) -> None:
    for body, field, message in BAD:
        answer = register(hooks_api, **body)
        assert answer.status_code == 422, answer.text
        [problem] = answer.json()["detail"]
        assert problem["field"] == field
        assert message in problem["message"]
    assert endpoints_stored(hooks_api) == 0


def test_tenancy(hooks_api: Api) -> None:
    mine = register(hooks_api).json()["id"]
    assert register(hooks_api, tenant="returns").status_code == 403
    assert register(hooks_api, client=hooks_api.operator).status_code == 422  # names a tenant
    theirs = register(hooks_api, client=hooks_api.operator, tenant="returns").json()["id"]
    other = hooks_api.other_producer
    assert [e["id"] for e in other.get("/v1/webhook-endpoints").json()["endpoints"]] == [theirs]
    assert other.get(f"/v1/webhook-endpoints/{mine}").status_code == 404
    assert other.delete(f"/v1/webhook-endpoints/{mine}").status_code == 404
    assert other.post(f"/v1/webhook-endpoints/{mine}/enable").status_code == 404
    everyone = hooks_api.operator.get("/v1/webhook-endpoints").json()["endpoints"]
    assert {e["id"] for e in everyone} == {mine, theirs}
    # The rotated key shares tenant erp: it sees erp's endpoint.
    rotated = hooks_api.rotated_producer.get("/v1/webhook-endpoints").json()["endpoints"]
    assert [e["id"] for e in rotated] == [mine]


def test_disable_enable_and_deliveries(hooks_api: Api) -> None:
    endpoint_id = register(hooks_api).json()["id"]
    disabled = hooks_api.producer.delete(
        f"/v1/webhook-endpoints/{endpoint_id}", params={"reason": "maintenance"})
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_reason"] == "disabled by erp: maintenance"
    enabled = hooks_api.producer.post(f"/v1/webhook-endpoints/{endpoint_id}/enable")
    assert (enabled.json()["enabled"], enabled.json()["disabled_reason"]) == (True, None)

    receipt = hooks_api.producer.post("/v1/refunds", json=refund("rma-1")).json()
    with hooks_api.database.connection_scope() as connection:
        [delivery_id] = connection.execute(OUTBOX_INSERT[EventType.FAILED], {
            "p_refund_id": receipt["refund_id"], "p_now": hooks_api.row("rma-1").created_at,
            **event_params({"status": "failed"})}).scalars()
    listed = hooks_api.producer.get("/v1/webhook-deliveries").json()["deliveries"]
    assert [(d["id"], d["status"], d["event_type"]) for d in listed] == [
        (delivery_id, "pending", "refund.failed")]
    assert hooks_api.other_producer.get("/v1/webhook-deliveries").json()["deliveries"] == []
    in_flight = hooks_api.producer.post(f"/v1/webhook-deliveries/{delivery_id}/replay")
    assert in_flight.status_code == 409
    assert "in flight" in in_flight.json()["detail"][0]["message"]
    assert hooks_api.other_producer.post(
        f"/v1/webhook-deliveries/{delivery_id}/replay").status_code == 404
    with hooks_api.database.connection_scope() as connection:
        from sqlalchemy import text

        connection.execute(text("UPDATE webhook_deliveries SET status = 'failed'"))
    replayed = hooks_api.producer.post(f"/v1/webhook-deliveries/{delivery_id}/replay")
    assert replayed.status_code == 202
    assert replayed.json()["status"] == "pending"
    assert hooks_api.publisher.webhooks == [delivery_id]  # type: ignore[attr-defined]


def test_without_a_secret_key_registration_is_refused_naming_the_setting(
    start_api: StartApi,
) -> None:
    api = start_api(webhook_allowed_hosts=["127.0.0.1"])
    answer = register(api)
    assert answer.status_code == 503
    assert "REFUND_WORKER_SECRET_KEY" in answer.json()["detail"][0]["message"]
    assert endpoints_stored(api) == 0
