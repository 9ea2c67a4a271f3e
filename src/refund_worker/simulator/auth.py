"""Who may call which route: bearer tokens, admin tokens, OAuth 1.0a and ACL resources (§0, §11).

* ``Authorization: Bearer <token>`` — exactly two space-separated parts, scheme
  case-insensitive. Configured tokens carry a set of ACL resources (``None`` = all);
  admin tokens (``POST /V1/integration/admin/token``) carry all and expire.
* ``Authorization: OAuth ...`` — HMAC-SHA256 only; the signature covers the method, the URL
  and the OAuth + query parameters (a JSON body is not signed). Checked in Magento's order:
  version, required parameters, signature method, consumer, timestamp (> 0 and at most 600 s
  ahead), nonce (once per consumer, burnt even if the signature then fails), token, signature.
* A missing, unknown or expired credential is a guest: every protected route answers
  401 ``The consumer isn't authorized to access %resources.``.

Never stores or logs a credential anywhere but here.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import parse_qsl

from oauthlib.oauth1.rfc5849 import signature as oauth_signature
from oauthlib.oauth1.rfc5849 import utils as oauth_utils

from .errors import MagentoError, not_authorized

ALL_RESOURCES = "Magento_Backend::all"
SIGNATURE_METHOD = "HMAC-SHA256"
TIMESTAMP_DEVIATION_S = 600
ADMIN_SIGN_IN_FAILED = (
    "The account sign-in was incorrect or your account is disabled temporarily. "
    "Please wait and try again later."
)
_OAUTH_REQUIRED = (
    "oauth_consumer_key",
    "oauth_signature",
    "oauth_signature_method",
    "oauth_nonce",
    "oauth_timestamp",
    "oauth_token",
)


@dataclass(frozen=True)
class OAuthCredentials:
    """One Magento integration: its consumer key/secret and access token/secret."""

    consumer_key: str
    consumer_secret: str
    access_token: str
    access_token_secret: str

    def __repr__(self) -> str:
        return f"OAuthCredentials(consumer_key={self.consumer_key!r}, secrets=***)"


Allowed = frozenset[str] | None  # None: every resource
_GUEST: Allowed = frozenset()


def _allows(allowed: Allowed, resource: str) -> bool:
    return allowed is None or resource in allowed or ALL_RESOURCES in allowed


class AuthRegistry:
    """The credentials the simulator accepts, and the OAuth nonces already used."""

    def __init__(
        self,
        tokens: Mapping[str, Iterable[str] | None] | None = None,
        admin_users: Mapping[str, str] | None = None,
        oauth_credentials: Iterable[OAuthCredentials] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        admin_token_lifetime_s: float = 3600.0,
    ) -> None:
        source = {"sim-token": None} if tokens is None else tokens
        self._tokens: dict[str, Allowed] = {
            token: None if allowed is None else frozenset(allowed)
            for token, allowed in source.items()
        }
        self._admin_users = dict({"admin": "admin123"} if admin_users is None else admin_users)
        self._oauth = {cred.consumer_key: cred for cred in oauth_credentials or ()}
        self._consumer_ids = {key: index + 1 for index, key in enumerate(self._oauth)}
        self._clock = clock
        self.admin_token_lifetime_s = admin_token_lifetime_s
        self._admin_tokens: dict[str, float] = {}
        self._nonces: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget issued admin tokens and used nonces."""
        with self._lock:
            self._admin_tokens.clear()
            self._nonces.clear()

    def issue_admin_token(self, username: str, password: str) -> str:
        expected = self._admin_users.get(username)
        if expected is None or not secrets.compare_digest(expected, password):
            raise MagentoError(401, ADMIN_SIGN_IN_FAILED)
        token = secrets.token_hex(16)
        with self._lock:
            self._admin_tokens[token] = self._clock() + self.admin_token_lifetime_s
        return token

    def check(
        self,
        resource: str,
        authorization: str | None,
        *,
        method: str = "GET",
        url: str = "",
        query_string: str = "",
    ) -> None:
        """Raise the right 400/401 unless the caller may use ``resource``."""
        if not _allows(self._allowed(authorization, method, url, query_string), resource):
            raise not_authorized(resource)

    def _allowed(
        self, authorization: str | None, method: str, url: str, query_string: str
    ) -> Allowed:
        if not authorization:
            return _GUEST
        if authorization[:6].lower() == "oauth ":
            self._check_oauth(authorization, method, url, query_string)
            return None
        parts = authorization.split(" ")
        if len(parts) != 2 or parts[0].lower() != "bearer":
            return _GUEST
        token = parts[1]
        if token in self._tokens:
            return self._tokens[token]
        expires = self._admin_tokens.get(token)
        if expires is not None and expires > self._clock():
            return None
        return _GUEST

    def _check_oauth(self, header: str, method: str, url: str, query_string: str) -> None:
        try:
            pairs = [
                (oauth_utils.unescape(key), oauth_utils.unescape(value))
                for key, value in oauth_utils.parse_authorization_header(header)
            ]
        except ValueError:
            raise MagentoError(401, "The signature is invalid. Verify and try again.") from None
        params = dict(pairs)
        version = params.get("oauth_version")
        if version is not None and version != "1.0":
            raise MagentoError(401, "OAuth version %1 is not supported", [version])
        for name in _OAUTH_REQUIRED:
            if not params.get(name):
                raise MagentoError(
                    400, '"%fieldName" is required. Enter and try again.', {"fieldName": name}
                )
        method_name = params["oauth_signature_method"]
        if method_name != SIGNATURE_METHOD:
            raise MagentoError(400, "Signature method %1 is not supported", [method_name])
        credentials = self._oauth.get(params["oauth_consumer_key"])
        if credentials is None:
            raise MagentoError(401, "A consumer having the specified key does not exist")
        self._use_nonce(credentials.consumer_key, params["oauth_nonce"], params["oauth_timestamp"])
        if not secrets.compare_digest(params["oauth_token"], credentials.access_token):
            raise MagentoError(401, "Specified token does not exist")
        signed = [(k, v) for k, v in pairs if k not in ("oauth_signature", "realm")]
        signed += parse_qsl(query_string, keep_blank_values=True)
        base_string = oauth_signature.signature_base_string(
            method.upper(),
            oauth_signature.base_string_uri(url),
            oauth_signature.normalize_parameters(signed),
        )
        client = SimpleNamespace(
            client_secret=credentials.consumer_secret,
            resource_owner_secret=credentials.access_token_secret,
        )
        expected = oauth_signature.sign_hmac_sha256_with_client(base_string, client)
        if not secrets.compare_digest(expected, params["oauth_signature"]):
            raise MagentoError(401, "The signature is invalid. Verify and try again.")

    def _use_nonce(self, consumer_key: str, nonce: str, timestamp: str) -> None:
        try:
            stamp = int(timestamp)
        except ValueError:
            stamp = 0
        if stamp <= 0 or stamp > self._clock() + TIMESTAMP_DEVIATION_S:
            raise MagentoError(401, "Incorrect timestamp value in the oauth_timestamp parameter")
        with self._lock:
            used = self._nonces.setdefault(consumer_key, set())
            if nonce in used:
                raise MagentoError(
                    401,
                    "The nonce is already being used by the consumer with ID %1",
                    [str(self._consumer_ids[consumer_key])],
                )
            used.add(nonce)
