"""API keys: made once and shown once, stored only as SHA-256, checked in constant time.

A key is ``rwk_`` and 43 URL-safe characters (256 random bits). Settings hold only its digest
(``REFUND_WORKER_API_KEYS``), so a leaked configuration does not leak a usable key. Keys are high
entropy, so a plain SHA-256 is enough; a slow password hash would only slow every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from refund_worker.settings import ApiKey

KEY_PREFIX = "rwk_"


def key_digest(key: str) -> str:
    """The hex SHA-256 of a presented key, as stored in settings."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def generate_api_key() -> tuple[str, str]:
    """A new key and its SHA-256: give the key to its holder, put the digest in settings."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key_digest(key)


class KeyRing:
    """The configured keys; finds the holder of a presented key without leaking timing."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = tuple(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def holder(self, presented: str | None) -> ApiKey | None:
        """The key whose digest matches ``presented``, or None.

        Every configured digest is compared (``hmac.compare_digest``), whether or not an earlier
        one matched, so the answer's timing says nothing about which key, or how much of it,
        matched.
        """
        if not presented:
            return None
        digest = key_digest(presented)
        found: ApiKey | None = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.sha256) and found is None:
                found = key
        return found
