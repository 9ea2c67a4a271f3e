"""The worker's event metrics: the counters and histograms the services bump as things happen.

Only fixed, code-chosen values ever become label values: an operation name from the client, a
status from the enums, an HTTP status folded to a short list, a shop's name as the operator
configured it (``use_shops``). Refund ids, order ids, idempotency keys, tenant names, store codes,
error texts and URLs never do (each would be a new time series an order system, or a hostile
Magento, could mint at will). Anything else is folded to ``other``.

In a worker the values live in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess
mode), so every prefork child's counts reach the worker's exporter (``refund_worker.exporter``);
elsewhere they are plain in-process values nobody reads. What the database and the broker hold
(refunds by status, the oldest queued message) is not counted here but read at scrape time by
``exporter.StateCollector``. docs/metrics.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from prometheus_client import Counter, Histogram

#: Magento operations, as ``magento.MagentoClient`` names them in its ``CallRecord``.
OPERATIONS = frozenset(
    {
        "order_get",
        "order_search",
        "invoice_get",
        "invoice_search",
        "invoice_refund",
        "order_refund",
        "creditmemo_refund",
        "creditmemo_save",
        "creditmemo_get",
        "creditmemo_search",
        "creditmemo_emails",
    }
)
#: HTTP statuses kept as they are; any other is folded to its class (``4xx``), and a call with
#: no answer (timeout, refused connection) is ``none``.
KNOWN_STATUSES = frozenset({200, 201, 400, 401, 403, 404, 409, 429, 500, 502, 503, 504})
_STATUS_TEXT = {status: str(status) for status in KNOWN_STATUSES}
SERVICES = frozenset({"auto", "invoice", "order", "creditmemo", "record_only"})
ATTEMPT_OUTCOMES = frozenset(
    {
        "succeeded",
        "failed",
        "retrying",
        "needs_attention",
        "deferred",
        "lease_lost",
        "order_busy",
        "skipped",
    }
)
RECONCILE_OUTCOMES = frozenset({"found", "not_found", "needs_attention", "error"})
EMAIL_OUTCOMES = frozenset({"sent", "not_sent", "failed", "retrying"})
#: The webhook work (issue #21) counts each delivery attempt with one of these.
WEBHOOK_OUTCOMES = frozenset({"delivered", "failed", "retrying", "disabled"})
OTHER = "other"
#: The label of a count not tied to one shop yet (a delivery skipped before its row was read).
NO_SHOP = "unknown"
_shops: frozenset[str] = frozenset({"default"})

#: Seconds; Magento answers in tens of milliseconds to seconds, and times out at 10 s by default.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REFUND_ATTEMPTS = Counter(
    "refund_worker_refund_attempts_total",
    "Refund task deliveries by the Magento service used and what the attempt ended in.",
    ["shop", "service", "outcome"],
)
RECONCILIATIONS = Counter(
    "refund_worker_reconciliations_total",
    "Searches of Magento for an in-doubt refund's credit memo, by what they found.",
    ["shop", "outcome"],
)
MAGENTO_CALLS = Counter(
    "refund_worker_magento_calls_total",
    "HTTP calls to Magento by operation and HTTP status (none: no answer).",
    ["shop", "operation", "status"],
)
MAGENTO_CALL_SECONDS = Histogram(
    "refund_worker_magento_call_duration_seconds",
    "Duration of HTTP calls to Magento, answered or not, by operation.",
    ["shop", "operation"],
    buckets=LATENCY_BUCKETS,
)
RATE_LIMIT_WAITS = Counter(
    "refund_worker_ratelimit_waits_total",
    "Calls the shared Magento call limit held back: waited, or refused (the attempt retries).",
    ["shop", "outcome"],
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "refund_worker_ratelimit_wait_seconds_total",
    "Seconds spent waiting for the shared Magento call limit.",
    ["shop"],
)
RATE_LIMIT_PAUSES = Counter(
    "refund_worker_ratelimit_pauses_total",
    "Pauses shared with every worker after Magento answered 429.",
    ["shop"],
)
EMAILS = Counter(
    "refund_worker_emails_total",
    "Customer credit-memo email attempts by outcome.",
    ["shop", "outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "refund_worker_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, failed, retrying, disabled).",
    ["outcome"],
)


def _one_of(value: str | None, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


def use_shops(names: Iterable[str]) -> None:
    """The shops configured in this process: their names become ``shop`` label values."""
    global _shops
    _shops = frozenset(names) or frozenset({"default"})


def shop_label(shop: str | None) -> str:
    """A shop's name as a label value: a configured one, ``unknown`` (none yet) or ``other``."""
    if shop is None:
        return NO_SHOP
    return shop if shop in _shops else OTHER


def status_label(http_status: int | None) -> str:
    """An HTTP status as a label value: one of a few, its class, or ``none``."""
    if http_status is None:
        return "none"
    if http_status in KNOWN_STATUSES:
        return _STATUS_TEXT[http_status]
    if 100 <= http_status <= 599:
        return f"{http_status // 100}xx"
    return OTHER


# The hot path: each labelled child is looked up once per process and label set (``labels()``
# takes a lock and checks its arguments). The caches are keyed by folded values only, so they
# stay as small as the label sets; a child made before a fork is safe to use after it
# (prometheus_client moves every value to the new process's own file).


@cache
def _call_children(shop: str, operation: str, status: str) -> tuple[Any, Any]:
    return (
        MAGENTO_CALLS.labels(shop, operation, status),
        MAGENTO_CALL_SECONDS.labels(shop, operation),
    )


@cache
def _attempt_child(shop: str, service: str, outcome: str) -> Any:
    return REFUND_ATTEMPTS.labels(shop, service, outcome)


def magento_call(
    operation: str, http_status: int | None, seconds: float, shop: str | None = "default"
) -> None:
    """Count one Magento call to ``shop`` and observe its duration."""
    calls, duration = _call_children(
        shop_label(shop), _one_of(operation, OPERATIONS), status_label(http_status)
    )
    calls.inc()
    duration.observe(seconds)


def refund_attempt(service: str | None, outcome: str, shop: str | None = None) -> None:
    """Count one refund delivery; ``service`` is ``unknown`` before routing chose one, ``shop``
    before the refund's row was read."""
    label = "unknown" if service is None else _one_of(service, SERVICES)
    _attempt_child(shop_label(shop), label, _one_of(outcome, ATTEMPT_OUTCOMES)).inc()


def reconciliation(outcome: str, shop: str | None = None) -> None:
    """Count one reconciliation search by what it found."""
    RECONCILIATIONS.labels(shop_label(shop), _one_of(outcome, RECONCILE_OUTCOMES)).inc()


def rate_limit_wait(seconds: float, shop: str | None = "default") -> None:
    """Count a wait for the shared call limit."""
    label = shop_label(shop)
    RATE_LIMIT_WAITS.labels(label, "waited").inc()
    RATE_LIMIT_WAIT_SECONDS.labels(label).inc(max(0.0, seconds))


def rate_limit_refused(shop: str | None = "default") -> None:
    """Count a call the limit had no room for within its longest wait."""
    RATE_LIMIT_WAITS.labels(shop_label(shop), "refused").inc()


def rate_limit_pause(shop: str | None = "default") -> None:
    """Count a pause shared after a 429."""
    RATE_LIMIT_PAUSES.labels(shop_label(shop)).inc()


@cache
def _email_child(shop: str, outcome: str) -> Any:
    return EMAILS.labels(shop, outcome)


def email(outcome: str, shop: str | None = None) -> None:
    """Count one email attempt by outcome."""
    _email_child(shop_label(shop), _one_of(outcome, EMAIL_OUTCOMES)).inc()


def webhook_delivery(outcome: str) -> None:
    """Count one webhook delivery attempt: ``delivered``, ``failed`` (for good), ``retrying`` or
    ``disabled`` (the endpoint was switched off). The hook for the webhook work of issue #21."""
    WEBHOOK_DELIVERIES.labels(_one_of(outcome, WEBHOOK_OUTCOMES)).inc()
