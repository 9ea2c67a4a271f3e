"""``GET /metrics`` on the API: the database's gauges for the metrics token or an operator key;
a producer key is refused (the counts span every tenant), and nothing in it names a tenant."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from refund_worker.models import Refund
from tests.api.support import Api, StartApi

TOKEN = "metrics-token-0123456789abcdef"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_need_the_token_or_an_operator_key(start_api: StartApi) -> None:
    api: Api = start_api(metrics_token=TOKEN)
    for n in range(2):
        created = httpx.post(f"{api.url}/v1/refunds", json={"order_id": 40 + n},
                             headers={"Authorization": f"Bearer {api.keys.producer}",
                                      "Idempotency-Key": f"tenant-secret-{n}"})
        assert created.status_code == 202, created.text
    with api.database.engine.begin() as connection:
        connection.execute(update(Refund).where(Refund.idempotency_key == "tenant-secret-1")
                           .values(status="needs_attention", service="invoice"))

    def scrape(credential: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        return httpx.get(f"{api.url}/metrics", headers=headers)

    assert scrape(None).status_code == 401
    assert scrape(None).headers["WWW-Authenticate"] == "Bearer"
    assert scrape(TOKEN + "x").status_code == 401
    assert scrape(api.keys.producer).status_code == 403
    by_token, by_operator = scrape(TOKEN), scrape(api.keys.operator)
    assert by_token.status_code == by_operator.status_code == 200
    assert by_token.headers["content-type"].startswith("text/plain; version=")
    found = samples(by_token.text)
    assert found[("refund_worker_refunds", (("service", "auto"), ("shop", "default"),
                                            ("status", "queued")))] == 1
    assert found[("refund_worker_refunds", (("service", "invoice"), ("shop", "default"),
                                            ("status", "needs_attention")))] == 1
    assert found[("refund_worker_state_up", ())] == 1
    for leaked in ("tenant-secret", "erp", TOKEN, api.keys.producer):
        assert leaked not in by_token.text
    assert "/metrics" not in httpx.get(f"{api.url}/openapi.json").text


def test_without_a_token_only_operator_keys_read_metrics(api: Api) -> None:
    assert httpx.get(f"{api.url}/metrics").status_code == 401
    assert httpx.get(f"{api.url}/metrics", headers={
        "Authorization": f"Bearer {api.keys.operator}"}).status_code == 200
