"""Endpoint secrets, derived rather than stored.

An endpoint's key is ``HMAC-SHA256(REFUND_WORKER_SECRET_KEY, "refund-worker webhook\\0" + id +
"\\0" + salt)``, its secret ``whsec_`` + base64 of that key. The row keeps only the random salt
and ``key_id`` (a fingerprint of the secret key, to notice a process holding another key), so
the database alone (a backup, a read replica, an SQL injection) cannot sign a webhook: that
also needs the secret key, which lives only in the processes' settings. The secret is shown once,
when the endpoint is created. Changing ``REFUND_WORKER_SECRET_KEY`` changes every endpoint's
secret (docs/webhooks.md, "secrets").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from pydantic import SecretStr

from refund_worker.errors import ConfigurationError
from refund_worker.webhooks.signing import SECRET_PREFIX

__all__ = ["derive_secret", "key_id", "new_salt"]


def new_salt() -> str:
    """A fresh random salt for a new endpoint (not secret)."""
    return secrets.token_hex(16)


def key_id(secret_key: bytes) -> str:
    """A fingerprint of the secret key (16 hex digits): which key an endpoint's secret is
    derived from, without saying anything about the key."""
    return hmac.new(secret_key, b"refund-worker key id", hashlib.sha256).hexdigest()[:16]


def derive_secret(
    secret_key: bytes, endpoint_id: str, salt: str, *, expected_key_id: str | None = None
) -> SecretStr:
    """The endpoint's ``whsec_`` secret; ``ConfigurationError`` when the endpoint's secret was
    derived from another key than this process's ``REFUND_WORKER_SECRET_KEY``."""
    if expected_key_id is not None and not hmac.compare_digest(
        key_id(secret_key), expected_key_id
    ):
        raise ConfigurationError(
            "REFUND_WORKER_SECRET_KEY is not the key this endpoint's secret was made with"
        )
    message = b"refund-worker webhook\0" + endpoint_id.encode() + b"\0" + salt.encode()
    key = hmac.new(secret_key, message, hashlib.sha256).digest()
    return SecretStr(SECRET_PREFIX + base64.b64encode(key).decode())
