"""Webhooks: refund events pushed to the producers' endpoints, signed per Standard Webhooks.

For receivers written in Python, the one thing to import::

    from refund_worker.webhooks import verify, WebhookVerificationError
    event = verify(secret, request.headers, raw_body)  # raises if forged, altered or stale

The worker's side lives in the submodules, each imported only by what uses it:
``signing_keys`` (endpoint secrets derived from ``REFUND_WORKER_SECRET_KEY``), ``urls`` (the SSRF
guard), ``endpoints`` (register, list, disable, enable; deliveries listed and replayed),
``delivery`` (one attempt of one delivery, its backoff, the endpoint's disabling) and ``sweep``
(deliveries whose message was lost). See docs/webhooks.md.
"""

from __future__ import annotations

from refund_worker.webhooks.signing import (
    WebhookVerificationError,
    sign,
    signed_headers,
    verify,
)

__all__ = ["WebhookVerificationError", "sign", "signed_headers", "verify"]
