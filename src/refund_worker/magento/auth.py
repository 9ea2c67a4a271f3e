"""The two ways refund-worker authenticates to Magento's REST API (docs/magento.md §11).

Both are :class:`httpx.Auth` flows, so they run on every send, including a second send of the
same request object. Neither ever shows its secrets in ``repr``.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx
from oauthlib import oauth1

from refund_worker.errors import ConfigurationError

__all__ = ["BearerAuth", "OAuth1Auth"]


def _require_secret(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"Magento credential {name} is empty")
    if value != value.strip() or any(ch in value for ch in "\r\n"):
        raise ConfigurationError(
            f"Magento credential {name} has surrounding whitespace or a line break"
        )
    return value


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>``: an admin token, or an integration access token.

    An integration token used this way only works when the shop enables
    ``oauth/consumer/enable_integration_as_bearer``; otherwise Magento ignores it and answers 401.
    """

    def __init__(self, token: str) -> None:
        self._token = _require_secret("token", token)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(token=***)"


class OAuth1Auth(httpx.Auth):
    """OAuth 1.0a with HMAC-SHA256, the only signature method Magento accepts (§11.2).

    The signature covers the method, the full URL and its query-string parameters (such as the
    whole ``searchCriteria[...]`` set). A JSON body is not signed. Each send gets a fresh nonce
    and timestamp, because Magento refuses a nonce it has seen before.
    """

    def __init__(
        self,
        consumer_key: str,
        consumer_secret: str,
        access_token: str,
        access_token_secret: str,
    ) -> None:
        self._consumer_key = _require_secret("consumer_key", consumer_key)
        self._consumer_secret = _require_secret("consumer_secret", consumer_secret)
        self._access_token = _require_secret("access_token", access_token)
        self._access_token_secret = _require_secret("access_token_secret", access_token_secret)

    def authorization_header(self, method: str, url: str) -> str:
        """Return a freshly signed ``Authorization`` header value for ``method`` and ``url``."""
        # A new oauthlib client per request: it holds no nonce/timestamp, so sign() makes new
        # ones, and nothing is shared between the worker's threads.
        signer = oauth1.Client(
            self._consumer_key,
            client_secret=self._consumer_secret,
            resource_owner_key=self._access_token,
            resource_owner_secret=self._access_token_secret,
            signature_method=oauth1.SIGNATURE_HMAC_SHA256,
            signature_type=oauth1.SIGNATURE_TYPE_AUTH_HEADER,
        )
        # No body and no Content-Type: a JSON body is not part of the signature base string.
        _, headers, _ = signer.sign(url, http_method=method, body=None, headers={})
        header: str = headers["Authorization"]
        return header

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.authorization_header(
            request.method, str(request.url)
        )
        yield request

    def __repr__(self) -> str:
        return (
            "OAuth1Auth(consumer_key=***, consumer_secret=***, access_token=***, "
            "access_token_secret=***)"
        )
