"""The whole exception tree of refund-worker.

::

    RefundWorkerError
    ├── ConfigurationError              bad or missing settings, found at start-up
    ├── AttentionRequired               Magento shows what only a person can settle (a credit
    │                                   memo with our marker that does not fit): needs_attention
    ├── RetryableError                  worth trying again later, with backoff
    │   ├── MagentoUnavailable          unreachable, timeout, dropped connection, 5xx
    │   │                               (``outcome_unknown`` when Magento may have committed)
    │   ├── MagentoRateLimited          429 from Magento, or our own shared limit; ``retry_after``
    │   ├── DatabaseUnavailable         the database is briefly out of reach
    │   └── BrokerUnavailable           the broker refused messages of committed rows
    └── PermanentError                  never retried; stored; replayable once a person fixes it
        ├── InvalidRefund               the request cannot be processed as given
        ├── IdempotencyConflict         same idempotency key, different payload
        ├── MagentoRejected             Magento's business rejection (400), message verbatim
        │   └── MagentoNotFound         404: unknown order, invoice or credit memo
        └── MagentoAuthError            401: bad credentials or a missing ACL resource

"Already refunded by an earlier attempt" is an outcome, not an error. This module imports
nothing from the package.
"""

from __future__ import annotations


class RefundWorkerError(Exception):
    """Root of every error refund-worker raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        refund_id: str | None = None,
        idempotency_key: str | None = None,
        http_status: int | None = None,
        magento_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.refund_id = refund_id
        self.idempotency_key = idempotency_key
        self.http_status = http_status
        self.magento_message = magento_message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Celery pickles/serializes exceptions; keep only the message (never secrets).
        return (type(self), (self.message,))


class ConfigurationError(RefundWorkerError):
    """Raised at start-up when a setting is missing, a placeholder, or contradicts another."""


class AttentionRequired(RefundWorkerError):
    """Raised when Magento shows what only a person can settle: a credit memo carrying the
    refund's marker that does not fit it, several of them, or one that already backs another
    refund. The refund is set ``needs_attention``: never a success, never refunded again."""


class RetryableError(RefundWorkerError):
    """Raised when the same attempt may succeed later; the caller backs off and retries."""

    #: True when Magento may have committed the call before it failed (timeout after the
    #: request was sent, 5xx, dropped connection): the next attempt must reconcile first.
    outcome_unknown: bool = False


class MagentoUnavailable(RetryableError):
    """Raised when Magento cannot be reached, times out, drops the connection or answers 5xx."""

    def __init__(self, message: str, *, outcome_unknown: bool = False, **context: object) -> None:
        super().__init__(message, **context)  # type: ignore[arg-type]
        self.outcome_unknown = outcome_unknown


class MagentoRateLimited(RetryableError):
    """Raised on Magento's 429, or when our shared per-instance call limit has no room now."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, **context: object
    ) -> None:
        super().__init__(message, **context)  # type: ignore[arg-type]
        self.retry_after = retry_after


class DatabaseUnavailable(RetryableError):
    """Raised when the database cannot be reached for a moment (connection refused or dropped)."""


class BrokerUnavailable(RetryableError):
    """Raised when the broker refuses messages whose rows are committed: nothing is lost, the
    sweeper publishes them."""


class PermanentError(RefundWorkerError):
    """Raised when retrying cannot help; the refund is failed and kept for a person to replay."""


class InvalidRefund(PermanentError):
    """Raised when a refund request, or a stored row, cannot be processed as given."""


class IdempotencyConflict(PermanentError):
    """Raised when an idempotency key is reused with a different payload (the Stripe rule)."""


class MagentoRejected(PermanentError):
    """Raised when Magento refuses the operation (400); ``magento_message`` has its text."""


class MagentoNotFound(MagentoRejected):
    """Raised when Magento answers 404: the order, invoice, credit memo or route does not exist."""


class MagentoAuthError(PermanentError):
    """Raised on 401: wrong credentials, or the integration lacks an ACL resource."""
