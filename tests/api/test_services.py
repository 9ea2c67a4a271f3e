"""The API against the machine's PostgreSQL and, with the real CeleryPublisher, its Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from refund_worker.celery_app import PROCESS_TASK, QUEUE
from refund_worker.celery_app import create_app as create_celery_app
from refund_worker.db import Database, upgrade
from refund_worker.publishing import CeleryPublisher
from tests.api.support import Keys, StartApi, make_settings, refund


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[Database]:
    database = Database.from_url(pg_url)
    upgrade(database.engine)
    database.prepare()
    yield database
    database.dispose()


@pytest.mark.postgres
def test_intake_and_reads_on_postgresql(start_api: StartApi, pg_database: Database) -> None:
    api = start_api(database=pg_database)

    first = api.producer.post("/v1/refunds", json=refund("pg-1", order_id=2**31 - 1))
    again = api.producer.post("/v1/refunds", json=refund("pg-1", order_id=2**31 - 1))
    conflict = api.producer.post("/v1/refunds", json=refund("pg-1", order_id=5))
    invalid = api.producer.post("/v1/refunds", json=refund("pg-2", order_id=2**31))
    batch = api.producer.post(
        "/v1/refunds:batch", json=[refund(f"pg-batch-{n}") for n in range(600)] + [refund("pg-1")]
    )

    assert (first.status_code, again.status_code, conflict.status_code) == (202, 200, 409)
    assert invalid.status_code == 422
    assert batch.status_code == 200
    assert batch.json()["accepted"] == 600
    assert batch.json()["results"][-1]["result"] == "conflict"
    assert api.stored() == 601
    assert api.row("pg-1").created_by == "erp"
    by_key = api.producer.get("/v1/refunds", params={"idempotency_key": "pg-1"}).json()
    assert [row["id"] for row in by_key["refunds"]] == [first.json()["refund_id"]]
    assert api.producer.get("/v1/refunds/nul%00byte").status_code == 404
    listing = api.producer.get("/v1/refunds", params={"order_id": 2**31 - 1, "limit": 5})
    assert [row["idempotency_key"] for row in listing.json()["refunds"]] == ["pg-1"]
    assert api.anonymous.get("/healthz").json()["database"] == "ok"


@pytest.mark.redis
def test_refund_lands_in_the_refunds_list_through_celery(
    start_api: StartApi, redis_url: str, keys: Keys
) -> None:
    celery_app = create_celery_app(make_settings(keys, broker_url=redis_url))
    client = redis.Redis.from_url(redis_url)
    try:
        api = start_api(
            publisher=CeleryPublisher(celery_app), broker_check=None, broker_url=redis_url
        )

        response = api.producer.post("/v1/refunds", json=refund("celery-1"))
        messages = [json.loads(raw) for raw in client.lrange(QUEUE, 0, -1)]
        health = api.anonymous.get("/healthz")
    finally:
        client.close()
        celery_app.close()

    assert response.status_code == 202
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == PROCESS_TASK
    assert response.json()["refund_id"] in messages[0]["headers"]["argsrepr"]
    assert health.status_code == 200
    assert health.json() == {"database": "ok", "broker": "ok"}
