"""API keys: 401 without a valid one (touching nothing), 403 for a producer on replay, no leaks."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
from click.testing import CliRunner

from refund_worker.api.cli import api_key_command
from refund_worker.api.keys import KeyRing, generate_api_key, key_digest
from refund_worker.settings import ApiKey
from tests.api.support import Api, refund


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, "Bearer"),
        ({"Authorization": "Bearer rwk_not-a-key"}, 'Bearer error="invalid_token"'),
        ({"Authorization": "Bearer"}, "Bearer"),
        ({"Authorization": "Basic ZXJwOnNlY3JldA=="}, "Bearer"),
        ({"Authorization": "Token whatever"}, "Bearer"),
    ],
)
def test_no_valid_key_is_401_and_touches_nothing(
    api: Api, headers: dict[str, str], challenge: str
) -> None:
    for method, path, body in [
        ("POST", "/v1/refunds", json.dumps(refund("anon")).encode()),
        ("POST", "/v1/refunds", b"{not json"),
        ("POST", "/v1/refunds:batch", json.dumps([refund("anon")]).encode()),
        ("GET", "/v1/refunds", None),
        ("GET", "/v1/refunds/anon", None),
        ("POST", "/v1/refunds/anon/replay", b'{"reason": "x"}'),
    ]:
        response = api.anonymous.request(method, path, content=body, headers=headers)

        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == challenge
        assert "rwk_not-a-key" not in response.text
        assert "ZXJwOnNlY3JldA" not in response.text
    assert api.stored() == 0
    assert api.publisher.refunds == []


def test_the_scheme_is_case_insensitive(api: Api) -> None:
    headers = {"Authorization": f"bearer {api.keys.producer}"}
    response = api.anonymous.post("/v1/refunds", json=refund("lower"), headers=headers)

    assert response.status_code == 202


def test_a_key_of_a_removed_holder_no_longer_works(start_api: object, keys: object) -> None:
    api = start_api(api_keys=[])  # type: ignore[operator]

    assert api.producer.get("/v1/refunds").status_code == 401


def test_producer_cannot_replay(api: Api) -> None:
    receipt = api.producer.post("/v1/refunds", json=refund("mine")).json()

    response = api.producer.post(
        f"/v1/refunds/{receipt['refund_id']}/replay", json={"reason": "please"}
    )

    assert response.status_code == 403
    assert api.row("mine").status == "queued"
    assert len(api.publisher.refunds) == 1


def test_health_and_openapi_are_open(api: Api) -> None:
    assert api.anonymous.get("/healthz").status_code == 200
    document = api.anonymous.get("/openapi.json")
    assert document.status_code == 200
    assert document.json()["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    docs = api.anonymous.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_keys_never_reach_the_logs(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api.client("rwk_wrong-key-in-log").get("/v1/refunds")
    api.producer.post("/v1/refunds", json=refund("logged"))
    api.publisher.failing = True
    api.producer.post("/v1/refunds", json=refund("logged-2"))

    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "publishing 1 committed messages failed" in text
    for secret in (api.keys.producer, "rwk_wrong-key-in-log", "hunter2"):
        assert secret not in text
        assert secret not in caplog.text


def test_generated_keys_are_random_and_their_digest_is_sha256() -> None:
    key, digest = generate_api_key()
    other, _ = generate_api_key()

    assert key.startswith("rwk_")
    assert len(key) >= 40
    assert key != other
    assert digest == hashlib.sha256(key.encode()).hexdigest() == key_digest(key)


def test_keyring_finds_the_holder_by_digest() -> None:
    key, digest = generate_api_key()
    ring = KeyRing([
        ApiKey(name="a", sha256="0" * 64),
        ApiKey(name="b", role="operator", sha256=digest),
    ])

    holder = ring.holder(key)
    assert holder is not None
    assert (holder.name, holder.role) == ("b", "operator")
    assert ring.holder(key + "x") is None
    assert ring.holder("") is None
    assert ring.holder(None) is None
    assert ring.holder(digest) is None  # the digest itself is not a key


def test_api_key_command_prints_the_key_once_and_the_settings_entry() -> None:
    result = CliRunner().invoke(api_key_command, ["erp-berlin", "--role", "operator"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    key = next(line for line in lines if line.startswith("rwk_"))
    entry = json.loads(next(line for line in lines if line.startswith("{")))
    assert entry == {"name": "erp-berlin", "role": "operator", "sha256": key_digest(key)}
    assert ApiKey.model_validate(entry)


def test_api_key_command_refuses_a_bad_name() -> None:
    result = CliRunner().invoke(api_key_command, ["not a name"])

    assert result.exit_code == 2
    assert "rwk_" not in result.output
