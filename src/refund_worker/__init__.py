"""refund-worker: an asynchronous Magento 2 refund worker that never loses or repeats a refund.

The producer API::

    from refund_worker import enqueue_refund
    receipt = enqueue_refund({"idempotency_key": "rma-1042", "order_id": 42})

It validates the request, stores it under its idempotency key, and publishes a Celery task only
after the row is committed. Settings come from ``REFUND_WORKER_*`` variables (see ``settings``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refund_worker.db import Database
    from refund_worker.intake import IntakeRejection
    from refund_worker.schemas import RefundReceipt, RefundRequest

__version__ = "0.1.0"
__all__ = ["enqueue_refund", "enqueue_refunds"]


def enqueue_refund(
    request: RefundRequest | Mapping[str, Any] | str | bytes,
    *,
    tenant: str = "default",
    created_by: str | None = None,
) -> RefundReceipt:
    """Accept one refund request (model, mapping or JSON) for ``tenant``; returns its receipt.

    Raises ``InvalidRefund`` (naming each bad field) or ``IdempotencyConflict``.
    """
    from refund_worker import intake
    from refund_worker.publishing import CeleryPublisher

    return intake.enqueue_refund(
        request,
        database=_database(),
        publisher=CeleryPublisher(),
        tenant=tenant,
        created_by=created_by,
        shops=_shops(),
    )


def enqueue_refunds(
    requests: Iterable[RefundRequest | Mapping[str, Any]],
    *,
    tenant: str = "default",
    created_by: str | None = None,
) -> list[RefundReceipt | IntakeRejection]:
    """Accept many requests of ``tenant`` in batches; one receipt or rejection per request, in
    order."""
    from refund_worker import intake
    from refund_worker.publishing import CeleryPublisher

    return intake.enqueue_refunds(
        (intake.validate_request(request) for request in requests),
        database=_database(),
        publisher=CeleryPublisher(),
        tenant=tenant,
        created_by=created_by,
        shops=_shops(),
    )


def _shops() -> list[str]:
    from refund_worker.settings import get_settings

    return get_settings().intake_shops


@functools.cache
def _database() -> Database:
    """The settings' database, its schema checked once per process (not once per call)."""
    from refund_worker.db import database_for
    from refund_worker.settings import get_settings

    database = database_for(get_settings().database_dsn)
    database.prepare()
    return database
