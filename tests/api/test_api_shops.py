"""Several shops over HTTP: a request names its shop (422 naming ``shop`` otherwise, nothing
stored); a key held to some shops cannot name another; GET /v1/refunds filters by shop."""

from __future__ import annotations

from typing import Any

from refund_worker.settings import ApiKey
from tests.api.support import Api, StartApi, refund

SHOPS = [
    {"name": "eu", "url": "https://eu.example.com", "token": "eu-s3cret", "timeout": 5},
    {"name": "us", "url": "https://us.example.com", "token": "us-s3cret", "timeout": 5},
]


def _start(start_api: StartApi, api_keys: list[ApiKey] | None = None) -> Api:
    options: dict[str, Any] = {"shops": SHOPS}
    if api_keys is not None:
        options["api_keys"] = api_keys
    return start_api(**options)


def _field(response: Any) -> list[str | None]:
    return [error["field"] for error in response.json()["detail"]]


def test_a_request_names_one_of_the_configured_shops(start_api: StartApi) -> None:
    api = _start(start_api)
    missing = api.producer.post("/v1/refunds", json=refund("rma-1"))
    assert missing.status_code == 422
    assert _field(missing) == ["shop"]
    assert "several shops are configured (eu, us)" in missing.text
    unknown = api.producer.post("/v1/refunds", json=refund("rma-1", shop="uk"))
    assert unknown.status_code == 422
    assert _field(unknown) == ["shop"]
    bad = api.producer.post("/v1/refunds", json=refund("rma-1", shop="../eu"))
    assert bad.status_code == 422
    assert _field(bad) == ["shop"]
    assert api.stored() == 0
    assert api.publisher.refunds == []

    eu = api.producer.post("/v1/refunds", json=refund("rma-1", shop="eu"))
    assert eu.status_code == 202
    # The same key for the same order id in the other shop is another payload: a conflict.
    assert api.producer.post("/v1/refunds", json=refund("rma-1", shop="us")).status_code == 409
    us = api.producer.post("/v1/refunds", json=refund("rma-2", shop="us"))
    assert api.row("rma-1").shop == "eu"
    assert api.row("rma-2").shop == "us"
    listed = api.operator.get("/v1/refunds", params={"shop": "us"}).json()["refunds"]
    assert [(row["id"], row["shop"]) for row in listed] == [(us.json()["refund_id"], "us")]
    assert api.operator.get("/v1/refunds", params={"shop": "EU"}).status_code == 422
    batch = api.producer.post("/v1/refunds:batch", json=[
        refund("rma-3", shop="eu"), refund("rma-4"), refund("rma-5", shop="uk")])
    results = batch.json()["results"]
    assert [result["result"] for result in results] == ["accepted", "invalid", "invalid"]
    assert [error["field"] for error in results[2]["errors"]] == ["shop"]
    assert "s3cret" not in batch.text


def test_a_key_held_to_one_shop_cannot_name_another(start_api: StartApi, keys: Any) -> None:
    entries = [entry if entry.name != "returns" else entry.model_copy(update={"shops": ["eu"]})
               for entry in keys.entries]
    api = _start(start_api, entries)
    # The returns system's key may refund in eu only: naming us is refused like an unknown shop.
    refused = api.other_producer.post("/v1/refunds", json=refund("r-1", shop="us"))
    assert refused.status_code == 422
    assert _field(refused) == ["shop"]
    assert "(configured: eu)" in refused.text  # it is not told which other shops exist
    # With one shop open to it, it may leave the shop out.
    alone = api.other_producer.post("/v1/refunds", json=refund("r-1"))
    assert alone.status_code == 202
    assert api.row("r-1").shop == "eu"
    assert api.producer.post("/v1/refunds", json=refund("e-1", shop="us")).status_code == 202
