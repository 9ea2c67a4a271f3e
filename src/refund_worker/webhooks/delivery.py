"""One attempt of one webhook delivery: claim, sign, POST, record; backoff; disabling.

At least once: a delivery is claimed under a lease (compare-and-set, so two copies of its message
never send at once), sent, then its outcome recorded, fenced by its ``version``. A worker killed
between the POST and the record leaves the lease to expire and the delivery is sent again with
the same ``webhook-id`` and body: receivers deduplicate on the id.

The receiver's answer: a 2xx is delivered; anything else (another status, a redirect, which is
never followed, a timeout, a refused connection, an address the SSRF guard refuses) is a failed
attempt, retried after ``base * 2^(attempt-1)`` seconds capped at ``REFUND_WORKER_WEBHOOK_RETRY
_MAX_SECONDS``, with jitter (half fixed, half random), until the delivery's retry window (by
default 3 days from its event) is over. Only the first 200 characters of an answer are kept.

An endpoint whose deliveries have failed without a success in between for
``REFUND_WORKER_WEBHOOK_DISABLE_AFTER_SECONDS`` is disabled with the reason; its deliveries then
fail with that reason, and an operator re-enables it and replays them.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Table, and_, bindparam, or_, select, update

from refund_worker import metrics
from refund_worker.attempts import DUE_SLACK
from refund_worker.db import Database, rowcount
from refund_worker.errors import ConfigurationError
from refund_worker.models import Refund, WebhookDelivery, WebhookEndpoint, utcnow
from refund_worker.outbox import DeliveryStatus
from refund_worker.settings import Settings
from refund_worker.webhooks.pinning import PinnedBackend, pinned_transport
from refund_worker.webhooks.signing import signed_headers
from refund_worker.webhooks.signing_keys import derive_secret
from refund_worker.webhooks.urls import (
    Resolver,
    UnsafeDestination,
    check_destination,
    resolve_host,
)

__all__ = ["DeliveryResult", "DeliveryService", "render_body", "retry_delay"]

log = logging.getLogger(__name__)

_deliveries = cast(Table, WebhookDelivery.__table__)
_endpoints = cast(Table, WebhookEndpoint.__table__)
_refunds = cast(Table, Refund.__table__)

EXCERPT_CHARS = 200
#: At most this much of an answer is read (then the connection is closed).
READ_LIMIT = 1024
#: A retry due within this many seconds is the task's own countdown; a later one is left to the
#: sweep (Redis must not hold a message for hours: see the visibility timeout).
COUNTDOWN_LIMIT_SECONDS = 300.0

_P_ID = bindparam("p_id", type_=_deliveries.c.id.type)
_P_NOW = bindparam("p_now", type_=_deliveries.c.updated_at.type)
_P_VERSION = bindparam("p_version", type_=_deliveries.c.version.type)

_CLAIMABLE = or_(
    and_(
        _deliveries.c.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value]),
        or_(
            _deliveries.c.next_attempt_at.is_(None),
            _deliveries.c.next_attempt_at
            <= bindparam("p_due", type_=_deliveries.c.updated_at.type),
        ),
    ),
    and_(
        _deliveries.c.status == DeliveryStatus.DELIVERING.value,
        or_(_deliveries.c.lease_expires_at.is_(None), _deliveries.c.lease_expires_at <= _P_NOW),
    ),
)
_CLAIM = (
    update(_deliveries)
    .where(_deliveries.c.id == _P_ID, _CLAIMABLE)
    .values(
        status=DeliveryStatus.DELIVERING.value,
        attempts=_deliveries.c.attempts + 1,
        lease_expires_at=bindparam("p_until", type_=_deliveries.c.updated_at.type),
        version=_deliveries.c.version + 1,
        updated_at=_P_NOW,
    )
    .returning(
        _deliveries.c.event_id,
        _deliveries.c.event_type,
        _deliveries.c.refund_id,
        _deliveries.c.endpoint_id,
        _deliveries.c.data_json,
        _deliveries.c.attempts,
        _deliveries.c.version,
        _deliveries.c.created_at,
        _deliveries.c.retry_until,
    )
)
_WHY_NOT = select(_deliveries.c.status).where(_deliveries.c.id == _P_ID)
_CONTEXT = select(
    _endpoints.c.url,
    _endpoints.c.enabled,
    _endpoints.c.disabled_reason,
    _endpoints.c.secret_salt,
    _endpoints.c.key_id,
    _refunds.c.idempotency_key,
    _refunds.c.order_id,
    _refunds.c.order_increment_id,
).where(
    _endpoints.c.id == bindparam("p_endpoint_id"),
    _refunds.c.id == bindparam("p_refund_id"),
    _refunds.c.tenant == _endpoints.c.tenant,  # an event goes only to its tenant's endpoints
)
_RECORD = update(_deliveries).where(
    _deliveries.c.id == _P_ID, _deliveries.c.version == _P_VERSION
)
_ENDPOINT = _endpoints.c.id == bindparam("p_endpoint_id")
_ENDPOINT_OK = update(_endpoints).where(_ENDPOINT, _endpoints.c.failing_since.is_not(None)).values(
    failing_since=None
)
_ENDPOINT_FAILING = (
    update(_endpoints)
    .where(_ENDPOINT, _endpoints.c.failing_since.is_(None))
    .values(failing_since=_P_NOW)
)
_ENDPOINT_DISABLE = (
    update(_endpoints)
    .where(
        _ENDPOINT,
        _endpoints.c.enabled.is_(True),
        _endpoints.c.failing_since <= bindparam("p_failing_before", type_=_P_NOW.type),
    )
    .values(
        enabled=False,
        disabled_at=_P_NOW,
        disabled_reason=bindparam("p_reason", type_=_endpoints.c.disabled_reason.type),
        updated_at=_P_NOW,
    )
)


@dataclass(frozen=True)
class DeliveryResult:
    """What one task run achieved: ``retry_in`` seconds, when the task should run again."""

    delivery_id: int
    status: str
    detail: str = ""
    retry_in: float | None = None


def retry_delay(attempt: int, settings: Settings, rng: random.Random) -> float:
    """Seconds before attempt ``attempt + 1``: exponential, capped, half of it jittered."""
    ceiling: float = min(
        settings.webhook_retry_max_seconds,
        settings.webhook_retry_base_seconds * 2 ** min(attempt - 1, 40),
    )
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def lease_seconds(settings: Settings) -> float:
    """How long an attempt holds its delivery: the refunds' lease, and never less than an
    attempt can take (the connect, the answer's reads, each up to the timeout, and recording);
    a killed worker's delivery is taken over once it expires."""
    return max(settings.lease_seconds, 3 * settings.webhook_timeout + 5)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def render_body(
    event_type: str,
    created_at: datetime,
    data_json: str,
    *,
    refund_id: str,
    idempotency_key: str,
    order_id: int | None,
    order_increment_id: str | None = None,
) -> bytes:
    """The event's JSON body, the same bytes on every attempt (Standard Webhooks' ``type``,
    ``timestamp``, ``data``)."""
    data = {
        **json.loads(data_json),
        "refund_id": refund_id,
        "idempotency_key": idempotency_key,
        "order_id": order_id,
    }
    if order_increment_id is not None:  # the order number the producer gave
        data["order_increment_id"] = order_increment_id
    document = {"type": event_type, "timestamp": _iso(created_at), "data": data}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _excerpt(text: str) -> str:
    cleaned = "".join(char if char.isprintable() else " " for char in text)
    return cleaned[:EXCERPT_CHARS]


class DeliveryService:
    """Delivers webhook events, one attempt per call; the HTTP client is shared."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        resolve: Resolver = resolve_host,
    ) -> None:
        self.database = database
        self.settings = settings
        self._backend = PinnedBackend()
        self.client = make_client(settings, self._backend)
        self.clock = clock
        self.rng = rng or random.Random()
        self._resolve = resolve

    def deliver(self, delivery_id: int) -> DeliveryResult:
        """One attempt of ``delivery_id`` (nothing when it is not due, settled, or held)."""
        now = self.clock()
        params = {
            "p_id": delivery_id,
            "p_now": now,
            "p_due": now + DUE_SLACK,
            "p_until": now + timedelta(seconds=lease_seconds(self.settings)),
        }
        with self.database.statement_scope() as connection:
            claim = connection.execute(_CLAIM, params).first()
            if claim is None:
                status = connection.execute(_WHY_NOT, params).scalar()
                detail = "no such delivery" if status is None else f"not due or held ({status})"
                return DeliveryResult(delivery_id, str(status or "unknown"), detail)
            context = connection.execute(
                _CONTEXT, {"p_endpoint_id": claim.endpoint_id, "p_refund_id": claim.refund_id}
            ).first()
        if context is None:
            return self._record(claim, delivery_id, failed="its endpoint or refund is gone")
        if not context.enabled:
            return self._record(
                claim, delivery_id, failed=f"endpoint disabled: {context.disabled_reason}"
            )
        try:
            secret = derive_secret(
                self.settings.require_secret_key(),
                claim.endpoint_id,
                context.secret_salt,
                expected_key_id=context.key_id,
            )
        except ConfigurationError as exc:
            # This process cannot sign: the attempt is given back, never sent unsigned.
            log.error("webhook delivery %s not sent: %s", delivery_id, exc)
            return self._record(claim, delivery_id, error=str(exc), count_failure=False)
        body = render_body(
            claim.event_type,
            claim.created_at,
            claim.data_json,
            refund_id=claim.refund_id,
            idempotency_key=context.idempotency_key,
            order_id=context.order_id,
            order_increment_id=context.order_increment_id,
        )
        http_status, error, excerpt = self._post(context.url, claim.event_id, secret, body)
        if error is None:
            return self._record(
                claim, delivery_id, delivered=True, http_status=http_status, excerpt=excerpt
            )
        return self._record(
            claim, delivery_id, error=error, http_status=http_status, excerpt=excerpt
        )

    def _post(
        self, url: str, event_id: str, secret: Any, body: bytes
    ) -> tuple[int | None, str | None, str | None]:
        """POST once: (status, error or None when 2xx, the answer's first characters)."""
        try:
            addresses = check_destination(
                url, self.settings.webhook_allowed_hosts, resolve=self._resolve
            )
        except UnsafeDestination as exc:
            return None, f"refused destination: {exc}", None
        host = urlsplit(url).hostname or ""
        headers = {
            "content-type": "application/json",
            "user-agent": "refund-worker",
            **signed_headers(secret, event_id, body),
        }
        deadline = time.monotonic() + 2 * self.settings.webhook_timeout
        try:
            with (
                self._backend.pinned(host, addresses[0]),  # the address just checked, no other
                self.client.stream("POST", url, content=body, headers=headers) as response,
            ):
                read = b""
                for chunk in response.iter_bytes():
                    read += chunk
                    if len(read) >= READ_LIMIT or time.monotonic() > deadline:
                        break  # a trickling answer is cut short: its status is known
                excerpt = _excerpt(read[:READ_LIMIT].decode("utf-8", "replace")) or None
                status = response.status_code
        except httpx.TimeoutException as exc:
            return None, f"timed out ({type(exc).__name__})", None
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {str(exc)[:200]}", None
        if 200 <= status < 300:
            return status, None, excerpt
        return status, f"HTTP {status}", excerpt

    def _record(
        self,
        claim: Any,
        delivery_id: int,
        *,
        delivered: bool = False,
        failed: str | None = None,
        error: str | None = None,
        http_status: int | None = None,
        excerpt: str | None = None,
        count_failure: bool = True,
    ) -> DeliveryResult:
        now = self.clock()
        params: dict[str, Any] = {
            "p_id": delivery_id,
            "p_version": claim.version,
            "p_now": now,
            "p_endpoint_id": claim.endpoint_id,
        }
        common = {
            "lease_expires_at": None,
            "last_http_status": http_status,
            "response_excerpt": excerpt,
            "updated_at": now,
            "version": _deliveries.c.version + 1,
        }
        retry_in: float | None = None
        if delivered:
            values: dict[str, Any] = {
                "status": DeliveryStatus.DELIVERED.value,
                "delivered_at": now,
                "last_error": None,
                **common,
            }
            status = DeliveryStatus.DELIVERED
        else:
            until = claim.retry_until or claim.created_at + timedelta(
                seconds=self.settings.webhook_retry_for_seconds
            )
            message = failed or error or "failed"
            if failed is not None or now >= until:
                if failed is None:
                    message = f"gave up after {claim.attempts} attempts: {message}"
                values = {"status": DeliveryStatus.FAILED.value, "last_error": message, **common}
                status = DeliveryStatus.FAILED
            else:
                delay = retry_delay(claim.attempts, self.settings, self.rng)
                soon = delay <= COUNTDOWN_LIMIT_SECONDS
                values = {
                    "status": DeliveryStatus.RETRYING.value,
                    "last_error": message,
                    "next_attempt_at": now + timedelta(seconds=delay),
                    # A message goes out now (the task's retry) or the sweep sends one when due.
                    "published_at": now if soon else None,
                    **common,
                }
                status = DeliveryStatus.RETRYING
                retry_in = delay if soon else None
        with self.database.connection_scope() as connection:
            recorded = rowcount(connection.execute(_RECORD.values(**values), params)) == 1
            if recorded and delivered:
                connection.execute(_ENDPOINT_OK, params)
            elif recorded and failed is None and count_failure:
                self._count_failure(connection, params, now, values["last_error"])
        if not recorded:
            return DeliveryResult(
                delivery_id, "skipped", "changed meanwhile; the next owner decides"
            )
        metrics.webhook_delivery(status.value)
        detail = "" if delivered else str(values["last_error"])
        if not delivered:
            log.warning("webhook delivery %s %s: %s", delivery_id, status.value, detail)
        return DeliveryResult(delivery_id, status.value, detail, retry_in=retry_in)

    def _count_failure(
        self, connection: Any, params: dict[str, Any], now: datetime, error: str
    ) -> None:
        """Start the endpoint's failure clock, and disable it once it has run long enough."""
        connection.execute(_ENDPOINT_FAILING, params)
        window = timedelta(seconds=self.settings.webhook_disable_after_seconds)
        reason = (
            f"disabled automatically at {_iso(now)}: every delivery failed for "
            f"{window.total_seconds():g} s (REFUND_WORKER_WEBHOOK_DISABLE_AFTER_SECONDS); "
            f"last error: {error}"
        )[:1000]
        disabled = connection.execute(
            _ENDPOINT_DISABLE, {**params, "p_failing_before": now - window, "p_reason": reason}
        )
        if rowcount(disabled):
            metrics.webhook_delivery("disabled")
            log.error("webhook endpoint %s %s", params["p_endpoint_id"], reason)

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()


def make_client(settings: Settings, backend: PinnedBackend) -> httpx.Client:
    """The client deliveries share: the timeout per connect and per read, no redirects, no
    proxies or certificates from the environment, no cookies kept (a receiver's cookie must
    never travel to another tenant's endpoint), connections only to checked addresses
    (``pinning``)."""
    timeout = httpx.Timeout(settings.webhook_timeout, connect=min(5.0, settings.webhook_timeout))
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    return httpx.Client(
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        transport=pinned_transport(backend, limits),
    )
