"""POST /v1/refunds/{id}/replay: operators re-queue failed refunds (or failed emails)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from refund_worker.models import Refund, RefundEvent
from tests.api.support import Api, refund


def _accepted(api: Api, key: str, **state: Any) -> str:
    refund_id: str = api.producer.post("/v1/refunds", json=refund(key)).json()["refund_id"]
    if state:
        with api.database.session_scope() as session:
            session.execute(update(Refund).where(Refund.id == refund_id).values(**state))
    return refund_id


def test_operator_replays_a_failed_refund(api: Api) -> None:
    refund_id = _accepted(api, "failed-1", status="failed", last_error="ACL missing", attempts=3)

    response = api.operator.post(
        f"/v1/refunds/{refund_id}/replay", json={"reason": "ACL granted"}
    )

    assert response.status_code == 202
    view = response.json()
    assert (view["id"], view["status"], view["last_error"], view["attempts"]) == (
        refund_id, "queued", None, 0
    )
    assert api.publisher.refunds == [refund_id, refund_id]
    assert api.row(refund_id).in_doubt is True
    with api.database.session_scope() as session:
        event = session.scalars(select(RefundEvent).where(RefundEvent.refund_id == refund_id)).one()
        assert event.kind == "refund_replayed"
        assert event.detail is not None
        assert "by alice: ACL granted" in event.detail


def test_replay_takes_a_refund_id_never_a_key(api: Api) -> None:
    refund_id = _accepted(api, "failed/2", status="failed", last_error="boom")

    by_key = api.operator.post("/v1/refunds/failed%2F2/replay", json={"reason": "retry"})
    by_id = api.operator.post(f"/v1/refunds/{refund_id}/replay", json={"reason": "retry"})

    assert by_key.status_code == 404
    assert by_id.status_code == 202
    assert by_id.json()["id"] == refund_id
    assert by_id.json()["replayed_by"] == "alice"


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"status": "succeeded", "creditmemo_id": 77}, "already succeeded (credit memo 77)"),
        ({}, "still in flight (queued)"),
        ({"status": "processing"}, "still in flight (processing)"),
    ],
)
def test_succeeded_or_in_flight_is_409_with_the_reason(
    api: Api, state: dict[str, Any], reason: str
) -> None:
    refund_id = _accepted(api, "busy", **state)

    response = api.operator.post(f"/v1/refunds/{refund_id}/replay", json={"reason": "again"})

    assert response.status_code == 409
    assert reason in response.json()["detail"][0]["message"]
    assert response.json()["refund_id"] == refund_id
    assert api.publisher.refunds == [refund_id]


def test_replaying_a_failed_email(api: Api) -> None:
    refund_id = _accepted(
        api, "email", status="succeeded", creditmemo_id=5, notification_status="failed",
        notification_error="SMTP down",
    )

    response = api.operator.post(
        f"/v1/refunds/{refund_id}/replay", json={"reason": "SMTP back", "notifications": True}
    )

    assert response.status_code == 202
    assert response.json()["notification_status"] == "pending"
    assert api.publisher.notifications == [refund_id]


def test_unknown_refund_is_404(api: Api) -> None:
    response = api.operator.post("/v1/refunds/missing/replay", json={"reason": "x"})

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["reason"]),
        ({"reason": "   "}, ["reason"]),
        ({"reason": "x", "notifications": "yes", "force": True}, ["notifications", "force"]),
        ([], [None]),
    ],
)
def test_bad_replay_body_is_422(api: Api, body: Any, fields: list[str | None]) -> None:
    refund_id = _accepted(api, "failed-3", status="failed")

    response = api.operator.post(f"/v1/refunds/{refund_id}/replay", json=body)

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["detail"]] == fields
    assert api.row(refund_id).status == "failed"
