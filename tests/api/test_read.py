"""GET /v1/refunds/{id_or_key} and GET /v1/refunds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from refund_worker.models import MagentoCall, Refund
from tests.api.support import Api, refund


def test_one_refund_by_id_with_its_magento_calls(api: Api) -> None:
    receipt = api.producer.post("/v1/refunds", json=refund("rma/42#1")).json()
    with api.database.session_scope() as session:
        session.add(MagentoCall(
            refund_id=receipt["refund_id"], attempt=1, operation="get_order", method="GET",
            path="/V1/orders/42", http_status=200, duration_ms=12.5, error=None,
        ))

    by_id = api.producer.get(f"/v1/refunds/{receipt['refund_id']}")
    by_key = api.producer.get("/v1/refunds", params={"idempotency_key": "rma/42#1"})

    assert by_id.status_code == by_key.status_code == 200
    assert [row["id"] for row in by_key.json()["refunds"]] == [receipt["refund_id"]]
    assert api.producer.get("/v1/refunds/rma%2F42%231").status_code == 404  # ids only
    view = by_id.json()
    assert (view["id"], view["idempotency_key"], view["status"]) == (
        receipt["refund_id"], "rma/42#1", "queued"
    )
    assert view["calls"] == [{
        "attempt": 1, "operation": "get_order", "http_status": 200, "duration_ms": 12.5,
        "error": None, "created_at": view["calls"][0]["created_at"],
    }]


@pytest.mark.parametrize("path", ["nope", "x" * 300, "nul%00byte", "%20"])
def test_unknown_refund_is_404(api: Api, path: str) -> None:
    response = api.producer.get(f"/v1/refunds/{path}")

    assert response.status_code == 404
    assert "\x00" not in response.text


def _age(api: Api, key: str, created_at: datetime) -> None:
    with api.database.session_scope() as session:
        session.execute(
            update(Refund).where(Refund.idempotency_key == key).values(created_at=created_at)
        )


def test_list_is_newest_first_and_filtered(api: Api) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for n in range(5):
        api.producer.post("/v1/refunds", json=refund(f"list-{n}", order_id=100 + n % 2))
        _age(api, f"list-{n}", start + timedelta(minutes=n))
    with api.database.session_scope() as session:
        session.execute(
            update(Refund).where(Refund.idempotency_key == "list-4").values(status="failed")
        )

    everything = api.producer.get("/v1/refunds").json()
    assert [row["idempotency_key"] for row in everything["refunds"]] == [
        "list-4", "list-3", "list-2", "list-1", "list-0"
    ]
    assert "calls" not in everything["refunds"][0]

    def keys(**params: object) -> list[str]:
        response = api.producer.get("/v1/refunds", params=params)
        assert response.status_code == 200, response.text
        return [row["idempotency_key"] for row in response.json()["refunds"]]

    assert keys(order_id=101) == ["list-3", "list-1"]
    assert keys(status="failed") == ["list-4"]
    assert keys(status="queued", limit=2) == ["list-3", "list-2"]
    assert keys(since="2030-01-01T00:02:00Z") == ["list-4", "list-3", "list-2"]
    assert keys(since="2030-01-01T00:02:00") == ["list-4", "list-3", "list-2"]  # naive is UTC
    assert keys(since="2030-01-01T01:02:00+01:00") == ["list-4", "list-3", "list-2"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"status": "lost"}, "status"),
        ({"order_id": 2**31}, "order_id"),
        ({"since": "yesterday"}, "since"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "since"),
    ],
)
def test_bad_list_parameters_are_422_naming_the_parameter(
    api: Api, params: dict[str, object], field: str
) -> None:
    response = api.producer.get("/v1/refunds", params=params)

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["detail"]] == [field]


def test_reading_needs_a_key(api: Api) -> None:
    assert api.anonymous.get("/v1/refunds").status_code == 401
    assert api.anonymous.get("/v1/refunds/whatever").status_code == 401
