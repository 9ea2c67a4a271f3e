"""Authentication and ACLs: bearer tokens, admin tokens, OAuth 1.0a (HMAC-SHA256)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, SIGNATURE_HMAC_SHA256, Client

from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import RunningSimulator
from tests.simulator.sim_support import LIMITED_TOKEN, OAUTH, TOKEN, Clock

NOT_AUTHORIZED = "The consumer isn't authorized to access %resources."


def denied(resource: str) -> dict[str, Any]:
    return {"message": NOT_AUTHORIZED, "parameters": {"resources": resource}}


@pytest.mark.parametrize(
    ("method", "path", "resource"),
    [
        ("GET", "/V1/orders/1", "Magento_Sales::actions_view"),
        ("GET", "/V1/invoices/1", "Magento_Sales::sales_invoice"),
        ("GET", "/V1/invoices", "Magento_Sales::sales_invoice"),
        ("POST", "/V1/invoice/1/refund", "Magento_Sales::sales_invoice"),
        ("POST", "/V1/order/1/refund", "Magento_Sales::creditmemo"),
        ("POST", "/V1/creditmemo/refund", "Magento_Sales::sales_creditmemo"),
        ("POST", "/V1/creditmemo", "Magento_Sales::sales_creditmemo"),
        ("GET", "/V1/creditmemo/1", "Magento_Sales::sales_creditmemo"),
        ("GET", "/V1/creditmemos", "Magento_Sales::sales_creditmemo"),
        ("PUT", "/V1/creditmemo/1", "Magento_Sales::sales_creditmemo"),
        ("POST", "/V1/creditmemo/1/emails", "Magento_Sales::sales_creditmemo"),
        ("GET", "/V1/creditmemo/1/comments", "Magento_Sales::sales_creditmemo"),
        ("POST", "/V1/creditmemo/1/comments", "Magento_Sales::sales_creditmemo"),
    ],
)
def test_no_credentials(anon: httpx.Client, method: str, path: str, resource: str) -> None:
    response = anon.request(method, path)
    assert (response.status_code, response.json()) == (401, denied(resource))


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong", "Bearer", f"Bearer {TOKEN} extra", f"Basic {TOKEN}", TOKEN, ""],
)
def test_bad_bearer_headers(anon: httpx.Client, header: str) -> None:
    response = anon.get("/V1/orders/1", headers={"Authorization": header})
    assert (response.status_code, response.json()) == (401, denied("Magento_Sales::actions_view"))


def test_bearer_scheme_is_case_insensitive(anon: httpx.Client) -> None:
    assert anon.get("/V1/orders/1", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_acl_limited_token(anon: httpx.Client, state: SimulatorState) -> None:
    limited = {"Authorization": f"Bearer {LIMITED_TOKEN}"}
    assert anon.get("/V1/orders/1", headers=limited).status_code == 200
    response = anon.post("/V1/order/2/refund", json={}, headers=limited)
    assert (response.status_code, response.json()) == (401, denied("Magento_Sales::creditmemo"))
    response = anon.get("/V1/creditmemo/1", headers=limited)
    assert response.json() == denied("Magento_Sales::sales_creditmemo")
    assert len(state.creditmemos()) == 2


def test_admin_token(anon: httpx.Client, clock: Clock) -> None:
    clock.frozen = time.time()
    response = anon.post(
        "/V1/integration/admin/token", json={"username": "admin", "password": "admin123"}
    )
    assert response.status_code == 200
    token = response.json()
    assert isinstance(token, str)
    assert len(token) >= 32
    bearer = {"Authorization": f"Bearer {token}"}
    assert anon.get("/V1/orders/1", headers=bearer).status_code == 200
    clock.frozen += 3601  # admin tokens expire after an hour
    assert anon.get("/V1/orders/1", headers=bearer).status_code == 401


@pytest.mark.parametrize(
    "credentials", [{"username": "admin", "password": "wrong"}, {"username": "x", "password": "y"}]
)
def test_admin_token_bad_credentials(anon: httpx.Client, credentials: dict[str, str]) -> None:
    response = anon.post("/V1/integration/admin/token", json=credentials)
    assert (response.status_code, response.json()) == (
        401,
        {
            "message": "The account sign-in was incorrect or your account is disabled "
            "temporarily. Please wait and try again later."
        },
    )


# ---------------------------------------------------------------------- OAuth 1.0a


def oauth_client(**overrides: Any) -> Client:
    options: dict[str, Any] = {
        "client_secret": OAUTH.consumer_secret,
        "resource_owner_key": OAUTH.access_token,
        "resource_owner_secret": OAUTH.access_token_secret,
        "signature_method": SIGNATURE_HMAC_SHA256,
    }
    options.update(overrides)
    key = options.pop("client_key", OAUTH.consumer_key)
    return Client(key, **options)


def signed(
    http: httpx.Client,
    sim: RunningSimulator,
    method: str,
    path: str,
    params: dict[str, str] | None = None,
    body: Any = None,
    client: Client | None = None,
) -> httpx.Response:
    request = httpx.Request(method, f"{sim.url}/rest{path}", params=params)
    url = str(request.url)
    content = None if body is None else json.dumps(body)
    headers = {"Content-Type": "application/json"} if content is not None else {}
    _, signed_headers, _ = (client or oauth_client()).sign(
        url, http_method=method, body=content, headers=headers
    )
    return http.request(method, url, content=content, headers=signed_headers)


def test_oauth_get_with_signed_query(sim: RunningSimulator, anon: httpx.Client) -> None:
    params = {
        "searchCriteria[filter_groups][0][filters][0][field]": "order_id",
        "searchCriteria[filter_groups][0][filters][0][value]": "4",
    }
    response = signed(anon, sim, "GET", "/V1/creditmemos", params)
    assert response.status_code == 200, response.text
    assert response.json()["total_count"] == 1


def test_oauth_post_with_unsigned_json_body(sim: RunningSimulator, anon: httpx.Client) -> None:
    response = signed(anon, sim, "POST", "/V1/order/2/refund", body={"items": []})
    assert (response.status_code, response.json()) == (200, 3)


def test_oauth_store_code_path(sim: RunningSimulator, anon: httpx.Client) -> None:
    assert signed(anon, sim, "GET", "/default/V1/orders/1").status_code == 200


def test_oauth_bad_signature(sim: RunningSimulator, anon: httpx.Client) -> None:
    url = f"{sim.url}/rest/V1/orders/1"
    _, headers, _ = oauth_client(client_secret="not-the-secret").sign(url)
    response = anon.get(url, headers=headers)
    assert (response.status_code, response.json()) == (
        401,
        {"message": "The signature is invalid. Verify and try again."},
    )


def test_oauth_query_changed_after_signing(sim: RunningSimulator, anon: httpx.Client) -> None:
    url = f"{sim.url}/rest/V1/creditmemos?searchCriteria%5BpageSize%5D=1"
    _, headers, _ = oauth_client().sign(url)
    response = anon.get(url.replace("=1", "=2"), headers=headers)
    assert response.status_code == 401


def test_oauth_nonce_reuse(sim: RunningSimulator, anon: httpx.Client) -> None:
    client = oauth_client(nonce="n0nce0000000001", timestamp=str(int(time.time())))
    assert signed(anon, sim, "GET", "/V1/orders/1", client=client).status_code == 200
    again = signed(anon, sim, "GET", "/V1/orders/2", client=client)
    assert (again.status_code, again.json()) == (
        401,
        {
            "message": "The nonce is already being used by the consumer with ID %1",
            "parameters": ["1"],
        },
    )


def test_oauth_only_hmac_sha256(sim: RunningSimulator, anon: httpx.Client) -> None:
    response = signed(
        anon, sim, "GET", "/V1/orders/1", client=oauth_client(signature_method=SIGNATURE_HMAC_SHA1)
    )
    assert (response.status_code, response.json()) == (
        400,
        {"message": "Signature method %1 is not supported", "parameters": ["HMAC-SHA1"]},
    )


def test_oauth_timestamp_rules(sim: RunningSimulator, anon: httpx.Client) -> None:
    future = oauth_client(timestamp=str(int(time.time()) + 3600))
    response = signed(anon, sim, "GET", "/V1/orders/1", client=future)
    assert (response.status_code, response.json()) == (
        401,
        {"message": "Incorrect timestamp value in the oauth_timestamp parameter"},
    )
    # Magento only refuses timestamps in the future: an old one is fine.
    old = oauth_client(timestamp=str(int(time.time()) - 86400))
    assert signed(anon, sim, "GET", "/V1/orders/1", client=old).status_code == 200


def test_oauth_unknown_consumer_and_token(sim: RunningSimulator, anon: httpx.Client) -> None:
    unknown = signed(anon, sim, "GET", "/V1/orders/1", client=oauth_client(client_key="nobody"))
    assert (unknown.status_code, unknown.json()) == (
        401,
        {"message": "A consumer having the specified key does not exist"},
    )
    wrong_token = signed(
        anon, sim, "GET", "/V1/orders/1", client=oauth_client(resource_owner_key="x")
    )
    assert (wrong_token.status_code, wrong_token.json()) == (
        401,
        {"message": "Specified token does not exist"},
    )


def test_oauth_missing_parameter(sim: RunningSimulator, anon: httpx.Client) -> None:
    header = 'OAuth oauth_consumer_key="consumer-key", oauth_signature_method="HMAC-SHA256"'
    response = anon.get(f"{sim.url}/rest/V1/orders/1", headers={"Authorization": header})
    assert (response.status_code, response.json()) == (
        400,
        {
            "message": '"%fieldName" is required. Enter and try again.',
            "parameters": {"fieldName": "oauth_signature"},
        },
    )


def test_no_secret_reaches_the_logs(
    sim: RunningSimulator, anon: httpx.Client, control: httpx.Client
) -> None:
    anon.post("/V1/integration/admin/token", json={"username": "admin", "password": "admin123"})
    anon.get("/V1/orders/1", headers={"Authorization": f"Bearer {TOKEN}"})
    signed(anon, sim, "POST", "/V1/order/2/refund", body={})
    logged = control.get("/requests").text + control.get("/bodies").text
    assert "/V1/order/2/refund" in logged
    for secret in (TOKEN, "admin123", OAUTH.consumer_secret, OAUTH.access_token, "oauth_"):
        assert secret not in logged
