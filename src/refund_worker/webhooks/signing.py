"""Standard Webhooks signatures (https://www.standardwebhooks.com/): sign and verify.

A message is signed with ``HMAC-SHA256(key, f"{id}.{timestamp}.{body}")``, sent as
``webhook-signature: v1,<base64>`` next to ``webhook-id`` and ``webhook-timestamp`` (seconds
since the epoch). The secret is ``whsec_`` and the base64 of the key. Pure: no I/O, no package
state, so a receiver written in Python can import just this (``refund_worker.webhooks.verify``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "secret_key_bytes",
    "sign",
    "signed_headers",
    "verify",
]

SECRET_PREFIX = "whsec_"
#: A message whose timestamp is further than this from now is refused (replayed captures).
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookVerificationError(Exception):
    """The message is not one signed with this secret (or it is too old, or malformed)."""


def secret_key_bytes(secret: str | SecretStr) -> bytes:
    """The HMAC key a ``whsec_...`` secret stands for."""
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    try:
        return base64.b64decode(value.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not whsec_ and base64") from None


def sign(secret: str | SecretStr, message_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` value for one message: ``v1,`` and the base64 HMAC."""
    payload = body.encode() if isinstance(body, str) else body
    signed = f"{message_id}.{timestamp}.".encode() + payload
    digest = hmac.new(secret_key_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: str | SecretStr, message_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, timestamped now unless told."""
    when = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(when),
        "webhook-signature": sign(secret, message_id, when, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"missing header {name}")


def verify(
    secret: str | SecretStr,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """Check a received webhook and return its parsed JSON body.

    ``headers`` is the request's headers (any case), ``body`` the raw body exactly as received
    (not re-serialized). Raises ``WebhookVerificationError`` when a header is missing, the
    timestamp is more than ``tolerance_seconds`` from now, or no ``v1`` signature in
    ``webhook-signature`` (space-separated, as when a secret is rotated) matches.
    Deduplicate on ``webhook-id``: a message may arrive more than once.
    """
    message_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too far from now")
    expected = sign(secret, message_id, timestamp, body).encode()
    for candidate in signatures.split():
        version, _, _ = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(candidate.encode(), expected):
            payload = body.decode() if isinstance(body, bytes) else body
            return json.loads(payload)
    raise WebhookVerificationError("no matching signature")
