"""The console's logins: signed, expiring session cookies and CSRF tokens; nothing kept in memory.

A session cookie is ``<name>.<expires>.<nonce>.<mac>``: the operator key's name (base64url), when
the session ends (Unix seconds), 128 random bits, and an HMAC-SHA256 over all three **and the
key's SHA-256** under a key derived from the console secret. It never holds the API key, nor
anything from which the key could be found. Any API process with the same secret and the same
``REFUND_WORKER_API_KEYS`` accepts it, so several uvicorn workers share logins without sharing
state. A session ends when it expires, when its key is removed or changed (its digest is in
the MAC), when the key stops being an operator key, or when the secret changes.

CSRF tokens are HMACs too: a session's is derived from its nonce (one token per session, checked
on every POST made while logged in), and the login form's from a random value in a short-lived
cookie of its own (so a login cannot be forced on someone either: a "login CSRF").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from refund_worker.settings import ApiKey

#: The session cookie; the login form's cookie (its CSRF seed).
SESSION_COOKIE = "rw_console"
LOGIN_COOKIE = "rw_console_login"
#: How long a login form may be left open before it is submitted.
LOGIN_FORM_SECONDS = 3600

_VERSION = b"refund-worker console v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _same(presented: str, expected: str) -> bool:
    """Constant-time comparison of any text (``compare_digest`` takes only ASCII ``str``)."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode())


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A verified login: who, until when, and its CSRF token."""

    key: ApiKey
    expires: int
    nonce: str
    csrf_token: str


class ConsoleSessions:
    """Issues and checks session cookies and CSRF tokens under one secret.

    ``keys`` are the configured API keys (looked up by name: a cookie names its key); ``clock``
    gives Unix seconds (tests move it).
    """

    def __init__(
        self,
        secret: bytes,
        keys: Iterable[ApiKey],
        *,
        lifetime_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the console secret is too short")
        self._session_key = self._derive(secret, b"session")
        self._csrf_key = self._derive(secret, b"csrf")
        self._login_key = self._derive(secret, b"login")
        self._keys = {key.name: key for key in keys}
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock

    @staticmethod
    def _derive(secret: bytes, purpose: bytes) -> bytes:
        return hmac.new(secret, _VERSION + b"\x00" + purpose, hashlib.sha256).digest()

    # -- sessions ------------------------------------------------------------------------------

    def issue(self, key: ApiKey) -> str:
        """A new session cookie value for ``key`` (an operator key that was just presented)."""
        expires = int(self._clock()) + self.lifetime_seconds
        nonce = secrets.token_urlsafe(16)
        name = _b64(key.name.encode())
        return f"{name}.{expires}.{nonce}.{self._session_mac(key, expires, nonce)}"

    def check(self, cookie: str | None) -> Session | None:
        """The session ``cookie`` stands for, or None (missing, forged, expired, or its key gone,
        changed or no longer an operator's)."""
        if not cookie or len(cookie) > 512:
            return None
        parts = cookie.split(".")
        if len(parts) != 4:
            return None
        encoded_name, expires_text, nonce, mac = parts
        try:
            name = _unb64(encoded_name).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not expires_text.isdigit() or len(expires_text) > 12:
            return None
        expires = int(expires_text)
        key = self._keys.get(name)
        # Verified before anything else is trusted: the MAC covers the name and the expiry.
        expected = self._session_mac(key, expires, nonce) if key is not None else ""
        if key is None or not _same(mac, expected):
            return None
        if expires <= self._clock() or key.role != "operator":
            return None
        return Session(key=key, expires=expires, nonce=nonce, csrf_token=self._csrf(nonce))

    def _session_mac(self, key: ApiKey, expires: int, nonce: str) -> str:
        message = b"\x00".join(
            (key.name.encode(), key.sha256.encode(), str(expires).encode(), nonce.encode())
        )
        return _b64(hmac.new(self._session_key, message, hashlib.sha256).digest())

    def _csrf(self, nonce: str) -> str:
        return _b64(hmac.new(self._csrf_key, nonce.encode(), hashlib.sha256).digest())

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        """Whether a POST made in ``session`` carries its CSRF token."""
        return bool(presented) and _same(str(presented), session.csrf_token)

    # -- the login form ------------------------------------------------------------------------

    @staticmethod
    def new_login_seed() -> str:
        """A random value for the login form's cookie."""
        return secrets.token_urlsafe(16)

    def login_token(self, seed: str) -> str:
        """The CSRF token of the login form whose cookie holds ``seed``."""
        return _b64(hmac.new(self._login_key, seed.encode(), hashlib.sha256).digest())

    def login_ok(self, seed: str | None, presented: str | None) -> bool:
        """Whether a login POST carries the token of the form its browser was given."""
        if not seed or not presented or len(seed) > 64:
            return False
        return _same(str(presented), self.login_token(seed))
