"""The webhook outbox: the events a state change reports, written in its own transaction.

Every state change that has an event (``store``'s success, failure, needs-attention and email
outcome; ``replay``'s re-queue) adds one statement here, or, on PostgreSQL, one more CTE to the
statement it already runs: ``INSERT INTO webhook_deliveries ... SELECT`` from the tenant's
enabled endpoints subscribed to the event's type. With no such endpoint it inserts nothing, and
costs no round trip of its own on PostgreSQL (docs/webhooks.md, "what it costs"). A change that
rolls back takes its events with it; a change that commits has them, so none is lost.

Each inserted row is one delivery, with the event's id (``msg_`` and 32 hex digits, the
``webhook-id`` header) shared by every endpoint that receives it.
"""

from __future__ import annotations

import json
import uuid
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    Integer,
    String,
    Table,
    and_,
    bindparam,
    insert,
    literal,
    select,
)
from sqlalchemy.sql import Select

from refund_worker.models import Refund, WebhookDelivery, WebhookEndpoint

__all__ = [
    "DeliveryStatus",
    "EventType",
    "event_params",
    "new_event_id",
    "outbox_insert",
    "subscribed",
]

_refunds = cast(Table, Refund.__table__)
_endpoints = cast(Table, WebhookEndpoint.__table__)
_deliveries = cast(Table, WebhookDelivery.__table__)


class EventType(StrEnum):
    """The events a producer can subscribe an endpoint to."""

    SUCCEEDED = "refund.succeeded"
    FAILED = "refund.failed"
    NEEDS_ATTENTION = "refund.needs_attention"
    NOTIFICATION_SENT = "refund.notification_sent"
    REPLAYED = "refund.replayed"


class DeliveryStatus(StrEnum):
    """Where one delivery stands."""

    PENDING = "pending"  # written with its event; its message is out
    DELIVERING = "delivering"  # an attempt holds it under a lease
    RETRYING = "retrying"  # due again at next_attempt_at
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up (retried for the configured time, or the endpoint disabled)


def new_event_id() -> str:
    """A fresh event id: ``msg_`` and 32 hex digits."""
    return f"msg_{uuid.uuid4().hex}"


def event_params(data: dict[str, Any]) -> dict[str, Any]:
    """The parameters an outbox insert takes: a fresh event id and what the event says."""
    return {
        "w_event_id": new_event_id(),
        "w_data": json.dumps(data, separators=(",", ":"), sort_keys=True, default=str),
    }


def subscribed(event_type: EventType) -> Any:
    """The condition an endpoint receives ``event_type`` under."""
    return and_(
        _endpoints.c.enabled.is_(True),
        _endpoints.c.event_types.like(f"%,{event_type.value},%"),
    )


def outbox_insert(event_type: EventType, source: Any = None) -> Any:
    """``INSERT INTO webhook_deliveries`` one row per endpoint of the refund's tenant that is
    subscribed to ``event_type``, ``RETURNING`` the deliveries' ids.

    ``source``: where the refund's ``id`` and ``tenant`` come from (a CTE of the statement that
    changed the refund, on PostgreSQL); by default the ``refunds`` row of ``p_refund_id``.
    Parameters: ``p_refund_id`` (without ``source``), ``p_now``, ``w_event_id``, ``w_data``.
    """
    now = bindparam("p_now", type_=_deliveries.c.created_at.type)
    rows: Select[Any]
    if source is None:
        rows = select(_refunds.c.id, _endpoints.c.id).where(
            _refunds.c.id == bindparam("p_refund_id", type_=String()),
            _endpoints.c.tenant == _refunds.c.tenant,
        )
    else:
        rows = select(source.c.id, _endpoints.c.id).where(_endpoints.c.tenant == source.c.tenant)
    rows = rows.where(subscribed(event_type)).add_columns(
        bindparam("w_event_id", type_=String()),
        literal(event_type.value, String()),
        bindparam("w_data", type_=String()),
        literal(DeliveryStatus.PENDING.value, String()),
        literal(0, Integer()),
        literal(0, Integer()),
        now,
        now,
        now,
        now,
    )
    return (
        insert(_deliveries)
        .from_select(
            [
                "refund_id",
                "endpoint_id",
                "event_id",
                "event_type",
                "data_json",
                "status",
                "attempts",
                "version",
                "next_attempt_at",
                "published_at",
                "created_at",
                "updated_at",
            ],
            rows,
        )
        .returning(_deliveries.c.id)
    )


#: One prebuilt portable insert per event type.
OUTBOX_INSERT = {event_type: outbox_insert(event_type) for event_type in EventType}
