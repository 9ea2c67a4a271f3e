"""Bearer and OAuth 1.0a auth, the OAuth signature checked without trusting our own signer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import httpx
import pytest
from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint

from refund_worker.errors import ConfigurationError
from refund_worker.magento import BearerAuth, MagentoClient, OAuth1Auth

CONSUMER_KEY = "ck" + "a" * 30
CONSUMER_SECRET = "cs-secret-" + "b" * 22
ACCESS_TOKEN = "at" + "c" * 30
ACCESS_TOKEN_SECRET = "ats-secret-" + "d" * 21
SECRETS = (CONSUMER_SECRET, ACCESS_TOKEN_SECRET)


def oauth() -> OAuth1Auth:
    return OAuth1Auth(CONSUMER_KEY, CONSUMER_SECRET, ACCESS_TOKEN, ACCESS_TOKEN_SECRET)


class MagentoLikeValidator(RequestValidator):  # type: ignore[misc]
    """Accepts our one consumer and token over plain http, remembering nonces like Magento."""

    def __init__(self) -> None:
        super().__init__()
        self.nonces: set[tuple[str, str]] = set()

    enforce_ssl = False
    allowed_signature_methods = ("HMAC-SHA256",)
    client_key_length = (20, 40)
    access_token_length = (20, 40)
    nonce_length = (8, 64)
    dummy_client = "dummy" + "x" * 20
    dummy_access_token = "dummy" + "y" * 20

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return client_key == CONSUMER_KEY

    def get_client_secret(self, client_key: str, request: Any) -> str:
        return CONSUMER_SECRET if client_key == CONSUMER_KEY else "dummy"

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        return ACCESS_TOKEN_SECRET if token == ACCESS_TOKEN else "dummy"

    def validate_timestamp_and_nonce(
        self, client_key: str, timestamp: str, nonce: str, request: Any, **kwargs: Any
    ) -> bool:
        if (nonce, timestamp) in self.nonces:
            return False
        self.nonces.add((nonce, timestamp))
        return True


def oauth_params(header: str) -> dict[str, str]:
    assert header.startswith("OAuth ")
    return {
        key: unquote(value)
        for key, value in re.findall(r'(\w+)="([^"]*)"', header[len("OAuth ") :])
    }


def rfc5849_signature(request: httpx.Request, consumer_secret: str, token_secret: str) -> str:
    """HMAC-SHA256 signature per RFC 5849 §3.4, written out by hand (no oauthlib)."""

    def enc(value: str) -> str:
        return quote(value, safe="~")

    url = urlsplit(str(request.url))
    params = [
        (key, value)
        for key, value in oauth_params(request.headers["Authorization"]).items()
        if key not in ("oauth_signature", "realm")
    ]
    params += parse_qsl(url.query, keep_blank_values=True)
    normalized = "&".join(f"{k}={v}" for k, v in sorted((enc(k), enc(v)) for k, v in params))
    port = url.port
    default_port = {"http": 80, "https": 443}[url.scheme]
    host = url.hostname or ""
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    base_uri = f"{url.scheme}://{netloc}{url.path}"
    base_string = "&".join([request.method.upper(), enc(base_uri), enc(normalized)])
    key = f"{enc(consumer_secret)}&{enc(token_secret)}"
    digest = hmac.new(key.encode(), base_string.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def endpoint_accepts(endpoint: SignatureOnlyEndpoint, request: httpx.Request) -> bool:
    valid, _ = endpoint.validate_request(
        str(request.url), http_method=request.method, body=None, headers=dict(request.headers)
    )
    return bool(valid)


def json_handler(body: Any) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, json=body)


# ---------------------------------------------------------------- bearer


def test_bearer_header(make_client: Callable[..., MagentoClient], recorder: Any) -> None:
    client = make_client(json_handler({"entity_id": 5}), auth=BearerAuth("tok-123"))
    client.get_order(5)
    assert recorder.requests[0].headers["Authorization"] == "Bearer tok-123"


@pytest.mark.parametrize("token", ["", "   ", " padded", "line\nbreak"])
def test_bearer_refuses_an_unusable_token(token: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        BearerAuth(token)
    if token.strip():
        assert token.strip() not in str(caught.value)


def test_auth_repr_hides_secrets() -> None:
    assert "tok-123" not in repr(BearerAuth("tok-123"))
    text = repr(oauth())
    for secret in (CONSUMER_KEY, CONSUMER_SECRET, ACCESS_TOKEN, ACCESS_TOKEN_SECRET):
        assert secret not in text


def test_oauth_refuses_an_empty_credential() -> None:
    with pytest.raises(ConfigurationError, match="consumer_secret"):
        OAuth1Auth(CONSUMER_KEY, "", ACCESS_TOKEN, ACCESS_TOKEN_SECRET)


# ---------------------------------------------------------------- OAuth 1.0a


def test_oauth_header_has_magento_fields(
    make_client: Callable[..., MagentoClient], recorder: Any
) -> None:
    client = make_client(json_handler({"entity_id": 5}), auth=oauth())
    client.get_order(5)
    params = oauth_params(recorder.requests[0].headers["Authorization"])
    assert params["oauth_consumer_key"] == CONSUMER_KEY
    assert params["oauth_token"] == ACCESS_TOKEN
    assert params["oauth_signature_method"] == "HMAC-SHA256"
    assert params["oauth_version"] == "1.0"
    assert int(params["oauth_timestamp"]) > 0
    assert params["oauth_nonce"]


def test_oauth_signature_verifies_for_a_get(
    make_client: Callable[..., MagentoClient], recorder: Any
) -> None:
    client = make_client(json_handler({"entity_id": 5}), auth=oauth())
    client.get_order(5)
    request = recorder.requests[0]
    assert endpoint_accepts(SignatureOnlyEndpoint(MagentoLikeValidator()), request)
    signature = oauth_params(request.headers["Authorization"])["oauth_signature"]
    assert signature == rfc5849_signature(request, CONSUMER_SECRET, ACCESS_TOKEN_SECRET)


def test_oauth_signature_covers_the_search_criteria_query(
    make_client: Callable[..., MagentoClient], recorder: Any
) -> None:
    from datetime import UTC, datetime

    page = {"items": [], "total_count": 0}
    client = make_client(json_handler(page), auth=oauth())
    client.search_creditmemos(order_id=42, created_from=datetime(2025, 6, 1, tzinfo=UTC))
    request = recorder.requests[0]
    assert "searchCriteria" in str(request.url)
    validator = MagentoLikeValidator()
    assert endpoint_accepts(SignatureOnlyEndpoint(validator), request)
    signature = oauth_params(request.headers["Authorization"])["oauth_signature"]
    assert signature == rfc5849_signature(request, CONSUMER_SECRET, ACCESS_TOKEN_SECRET)

    # Tampering with one searchCriteria value breaks the signature: the query is signed.
    tampered_url = str(request.url).replace("value%5D=42", "value%5D=43")
    assert tampered_url != str(request.url)
    tampered = httpx.Request("GET", tampered_url, headers=request.headers)
    assert not endpoint_accepts(SignatureOnlyEndpoint(MagentoLikeValidator()), tampered)
    assert signature != rfc5849_signature(tampered, CONSUMER_SECRET, ACCESS_TOKEN_SECRET)


def test_oauth_does_not_sign_the_json_body(
    make_client: Callable[..., MagentoClient], recorder: Any
) -> None:
    client = make_client(json_handler(77), auth=oauth())
    client.refund_order(5, {"items": [{"order_item_id": 1, "qty": 1}], "notify": False})
    request = recorder.requests[0]
    assert request.content  # the body was sent ...
    # ... and the signature verifies without it, exactly as Magento checks it.
    assert endpoint_accepts(SignatureOnlyEndpoint(MagentoLikeValidator()), request)
    signature = oauth_params(request.headers["Authorization"])["oauth_signature"]
    assert signature == rfc5849_signature(request, CONSUMER_SECRET, ACCESS_TOKEN_SECRET)


def test_oauth_wrong_secret_does_not_verify(
    make_client: Callable[..., MagentoClient], recorder: Any
) -> None:
    auth = OAuth1Auth(CONSUMER_KEY, "another-secret", ACCESS_TOKEN, ACCESS_TOKEN_SECRET)
    client = make_client(json_handler({"entity_id": 5}), auth=auth)
    client.get_order(5)
    assert not endpoint_accepts(SignatureOnlyEndpoint(MagentoLikeValidator()), recorder.requests[0])


def test_oauth_fresh_nonce_per_request_and_per_resend(
    make_client: Callable[..., MagentoClient], recorder: Any
) -> None:
    validator = MagentoLikeValidator()
    endpoint = SignatureOnlyEndpoint(validator)
    client = make_client(json_handler({"entity_id": 5}), auth=oauth())
    client.get_order(5)
    client.get_order(5)
    nonces = {
        oauth_params(request.headers["Authorization"])["oauth_nonce"]
        for request in recorder.requests
    }
    assert len(nonces) == 2
    assert all(endpoint_accepts(endpoint, request) for request in recorder.requests)

    # Sending the very same request object again re-signs it with a new nonce.
    def handler(request: httpx.Request) -> httpx.Response:
        recorder.requests.append(request)
        return httpx.Response(200, json={})

    auth = oauth()
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as http:
        request = http.build_request("GET", "http://magento.test/rest/default/V1/orders/5")
        http.send(request)
        first = request.headers["Authorization"]
        http.send(request)
        second = request.headers["Authorization"]
    assert oauth_params(first)["oauth_nonce"] != oauth_params(second)["oauth_nonce"]
    assert endpoint_accepts(endpoint, recorder.requests[-1])


def test_oauth_secrets_never_reach_records_or_errors(
    make_client: Callable[..., MagentoClient], recorder: Any
) -> None:
    from refund_worker.errors import MagentoAuthError

    body = {"message": "The signature is invalid. Verify and try again."}
    client = make_client(lambda request: httpx.Response(401, json=body), auth=oauth())
    with pytest.raises(MagentoAuthError) as caught:
        client.get_order(5)
    for secret in (*SECRETS, ACCESS_TOKEN, CONSUMER_KEY):
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value.__reduce__())
        assert secret not in repr(recorder.records)
