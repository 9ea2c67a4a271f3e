"""Webhook endpoints (register, list, disable, enable) and their deliveries (list, replay).

A producer's key registers endpoints for its own tenant and sees only those, and only their
deliveries; an operator sees every tenant's. The secret is made here and returned once; it is
never stored (``signing_keys``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from sqlalchemy import select, update

from refund_worker.db import Database, rowcount
from refund_worker.models import WebhookDelivery, WebhookEndpoint, utcnow
from refund_worker.outbox import DeliveryStatus, EventType
from refund_worker.settings import Settings
from refund_worker.webhooks.signing_keys import derive_secret, key_id, new_salt
from refund_worker.webhooks.urls import UnsafeDestination, check_destination

__all__ = [
    "DeliveryView",
    "EndpointRequest",
    "EndpointView",
    "InvalidEndpoint",
    "ReplayOutcome",
    "get_endpoint",
    "list_deliveries",
    "list_endpoints",
    "register",
    "replay_deliveries",
    "set_enabled",
]

MAX_DESCRIPTION = 200
TENANT_PATTERN = r"^[A-Za-z0-9_.-]+$"
#: Deliveries a replay may re-send: settled ones (in-flight ones are on their way already).
REPLAYABLE = (DeliveryStatus.FAILED.value, DeliveryStatus.DELIVERED.value)


class InvalidEndpoint(ValueError):
    """A registration refused; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class EndpointRequest(BaseModel):
    """What a producer registers: where, and which events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    event_types: Annotated[list[EventType], Field(min_length=1, max_length=len(EventType))]
    description: Annotated[str | None, Field(max_length=MAX_DESCRIPTION)] = None
    #: Operators only: the tenant it is for (a producer's is always its own).
    tenant: Annotated[str | None, Field(min_length=1, max_length=64, pattern=TENANT_PATTERN)] = (
        None
    )

    @field_validator("event_types")
    @classmethod
    def _unique(cls, value: list[EventType]) -> list[EventType]:
        if len(set(value)) != len(value):
            raise ValueError("an event type is named twice")
        return value


class EndpointView(BaseModel):
    """An endpoint as shown to its producer and to operators (never a secret)."""

    id: str
    tenant: str
    url: str
    event_types: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    created_by: str | None
    created_at: datetime


class DeliveryView(BaseModel):
    """One delivery of one event to one endpoint."""

    id: int
    event_id: str
    event_type: str
    refund_id: str
    endpoint_id: str
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_http_status: int | None
    last_error: str | None
    response_excerpt: str | None
    delivered_at: datetime | None
    created_at: datetime


def _types_column(event_types: Sequence[EventType]) -> str:
    ordered = [kind.value for kind in EventType if kind in set(event_types)]
    return "," + ",".join(ordered) + ","


def _view(row: WebhookEndpoint) -> EndpointView:
    return EndpointView(
        id=row.id,
        tenant=row.tenant,
        url=row.url,
        event_types=[kind for kind in row.event_types.split(",") if kind],
        description=row.description,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        disabled_at=row.disabled_at,
        failing_since=row.failing_since,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def register(
    database: Database,
    settings: Settings,
    request: EndpointRequest,
    *,
    tenant: str,
    created_by: str | None,
) -> tuple[EndpointView, SecretStr]:
    """Store a new endpoint for ``tenant``; its view and its secret (shown once, never stored).

    ``InvalidEndpoint`` (naming ``url``) when the URL is not one a webhook may go to; a
    ``ConfigurationError`` when ``REFUND_WORKER_SECRET_KEY`` is not set. Nothing is stored then.
    """
    secret_key = settings.require_secret_key()
    try:
        check_destination(request.url, settings.webhook_allowed_hosts)
    except UnsafeDestination as exc:
        raise InvalidEndpoint("url", str(exc)) from None
    endpoint_id = str(uuid.uuid4())
    salt = new_salt()
    now = utcnow()
    row = WebhookEndpoint(
        id=endpoint_id,
        tenant=tenant,
        url=request.url,
        event_types=_types_column(request.event_types),
        description=request.description,
        secret_salt=salt,
        key_id=key_id(secret_key),
        enabled=True,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    with database.session_scope() as session:
        session.add(row)
    return _view(row), derive_secret(secret_key, endpoint_id, salt)


def list_endpoints(database: Database, *, tenant: str | None) -> list[EndpointView]:
    """Endpoints, oldest first; ``tenant``: only that tenant's (None: every tenant's)."""
    query = select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    if tenant is not None:
        query = query.where(WebhookEndpoint.tenant == tenant)
    with database.session_scope() as session:
        return [_view(row) for row in session.scalars(query)]


def get_endpoint(
    database: Database, endpoint_id: str, *, tenant: str | None
) -> EndpointView | None:
    """One endpoint, if it exists and ``tenant`` (when given) owns it."""
    with database.session_scope() as session:
        row = session.get(WebhookEndpoint, endpoint_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            return None
        return _view(row)


def set_enabled(
    database: Database,
    endpoint_id: str,
    *,
    enabled: bool,
    tenant: str | None,
    actor: str,
    reason: str | None = None,
) -> EndpointView | None:
    """Enable (its failure clock starts afresh) or disable (with who and why) an endpoint;
    None when there is no such endpoint for ``tenant``."""
    now = utcnow()
    values: dict[str, object]
    if enabled:
        values = {"enabled": True, "disabled_reason": None, "disabled_at": None,
                  "failing_since": None}
    else:
        why = (reason or "").strip() or "no reason given"
        values = {"enabled": False, "disabled_reason": f"disabled by {actor}: {why}"[:1000],
                  "disabled_at": now}
    query = update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if tenant is not None:
        query = query.where(WebhookEndpoint.tenant == tenant)
    with database.session_scope() as session:
        if rowcount(session.execute(query.values(updated_at=now, **values))) != 1:
            return None
    return get_endpoint(database, endpoint_id, tenant=tenant)


def _delivery_view(row: WebhookDelivery, url: str) -> DeliveryView:
    return DeliveryView(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        refund_id=row.refund_id,
        endpoint_id=row.endpoint_id,
        url=url,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_http_status=row.last_http_status,
        last_error=row.last_error,
        response_excerpt=row.response_excerpt,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
    )


def list_deliveries(
    database: Database,
    *,
    tenant: str | None,
    endpoint_id: str | None = None,
    refund_id: str | None = None,
    event_id: str | None = None,
    status: DeliveryStatus | None = None,
    ids: Sequence[int] = (),
    limit: int = 100,
    oldest_first: bool = False,
) -> list[DeliveryView]:
    """Deliveries matching every given filter, newest first (or oldest first)."""
    query = select(WebhookDelivery, WebhookEndpoint.url).join(
        WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id
    )
    if tenant is not None:
        query = query.where(WebhookEndpoint.tenant == tenant)
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if refund_id is not None:
        query = query.where(WebhookDelivery.refund_id == refund_id)
    if event_id is not None:
        query = query.where(WebhookDelivery.event_id == event_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status.value)
    if ids:
        query = query.where(WebhookDelivery.id.in_(list(ids)))
    order = (
        (WebhookDelivery.created_at, WebhookDelivery.id)
        if oldest_first
        else (WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    )
    with database.session_scope() as session:
        rows = session.execute(query.order_by(*order).limit(limit)).all()
        return [_delivery_view(delivery, url) for delivery, url in rows]


@dataclass
class ReplayOutcome:
    """Deliveries re-queued (to publish), and those refused with why."""

    replayed: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


def replay_deliveries(
    database: Database, settings: Settings, delivery_ids: Sequence[int], *, tenant: str | None
) -> ReplayOutcome:
    """Send settled deliveries again (failed ones, or delivered ones a receiver lost), with
    the same event id and body and a fresh retry window; commit, then the caller publishes.
    In-flight deliveries and those of a disabled endpoint are refused, with why."""
    outcome = ReplayOutcome()
    now = utcnow()
    with database.session_scope() as session:
        query = select(WebhookDelivery, WebhookEndpoint).join(
            WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id
        ).where(WebhookDelivery.id.in_(list(delivery_ids)))
        if tenant is not None:
            query = query.where(WebhookEndpoint.tenant == tenant)
        found = {delivery.id: (delivery, endpoint) for delivery, endpoint in session.execute(query)}
        for delivery_id in dict.fromkeys(delivery_ids):
            if delivery_id not in found:
                outcome.refused[delivery_id] = "no such delivery"
                continue
            delivery, endpoint = found[delivery_id]
            if delivery.status not in REPLAYABLE:
                outcome.refused[delivery_id] = f"still in flight ({delivery.status})"
                continue
            if not endpoint.enabled:
                outcome.refused[delivery_id] = (
                    f"its endpoint is disabled ({endpoint.disabled_reason}); enable it first"
                )
                continue
            replayed = session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.version == delivery.version,
                )
                .values(
                    status=DeliveryStatus.PENDING.value,
                    next_attempt_at=now,
                    published_at=now,
                    lease_expires_at=None,
                    retry_until=now + timedelta(seconds=settings.webhook_retry_for_seconds),
                    version=WebhookDelivery.version + 1,
                    updated_at=now,
                )
            )
            if rowcount(replayed) == 1:
                outcome.replayed.append(delivery_id)
            else:
                outcome.refused[delivery_id] = "changed while replaying; try again"
    return outcome
