"""The names every layer shares, without pydantic: refund and email statuses, services, the
default tenant and shop, what a shop name looks like.

``schemas`` and ``settings`` re-export them; the read-only commands import only this.
"""

from __future__ import annotations

import re
from enum import StrEnum

#: The tenant of refunds enqueued without an API key (Python API, CLI).
DEFAULT_TENANT = "default"
#: The shop today's single-shop ``REFUND_WORKER_MAGENTO_*`` settings describe.
DEFAULT_SHOP = "default"
#: Shop names: 1-32 of a-z 0-9, words joined by one ``_`` or ``-`` (they appear in paths,
#: Redis keys and the ``shop`` column).
SHOP_NAME_PATTERN = re.compile(r"[a-z0-9]+(?:[_-][a-z0-9]+)*")
MAX_SHOP_NAME = 32


class RefundStatus(StrEnum):
    """Where a refund is in its life."""

    RECEIVED = "received"
    QUEUED = "queued"
    PROCESSING = "processing"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Magento shows something only a person can settle (a credit memo carrying this refund's
    #: marker that does not fit it, or that already backs another refund). Never a success;
    #: replayable once a person has looked.
    NEEDS_ATTENTION = "needs_attention"


SETTLED_STATUSES = frozenset(
    {RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.NEEDS_ATTENTION}
)


class ErrorKind(StrEnum):
    """What kind of error a refund's ``last_error`` is."""

    PERMANENT = "permanent"  # Magento (or the request) said no: replayable once fixed
    RETRYABLE = "retryable"  # transient; also a refund that gave up after its attempts
    ATTENTION = "attention"  # Magento shows what only a person can settle


class NotificationStatus(StrEnum):
    """Where the customer's credit-memo email is."""

    NOT_REQUESTED = "not_requested"
    PENDING = "pending"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    NOT_SENT = "not_sent"  # Magento answered false: its credit-memo emails are off or queued
    FAILED = "failed"


class Service(StrEnum):
    """The Magento service a refund is sent to."""

    INVOICE = "invoice"  # POST /V1/invoice/{invoiceId}/refund (RefundInvoice)
    ORDER = "order"  # POST /V1/order/{orderId}/refund (RefundOrder, offline)
    CREDITMEMO = "creditmemo"  # POST /V1/creditmemo/refund (CreditmemoManagement)
    RECORD_ONLY = "record_only"  # POST /V1/creditmemo (repository save; moves no money)
