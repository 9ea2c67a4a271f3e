"""SQLAlchemy 2.0 tables: refunds, their Magento calls (audit), their events, order locks, and
webhook endpoints with their deliveries (the outbox)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from refund_worker.statuses import (
    DEFAULT_SHOP,
    DEFAULT_TENANT,
    SETTLED_STATUSES,
    NotificationStatus,
    RefundStatus,
)
from refund_worker.tables import UTCDateTime as UTCDateTime  # re-exported, as is utcnow
from refund_worker.tables import utcnow as utcnow

#: The predicate of the history indexes (migration 0010): the settled refunds.
_SETTLED = f"status IN ({', '.join(repr(s.value) for s in sorted(SETTLED_STATUSES))})"


class Base(DeclarativeBase):
    """Declarative base of every table."""


class Refund(Base):
    """One accepted refund request and everything known about its outcome."""

    __tablename__ = "refunds"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: The producer the refund belongs to (its API key's tenant, or ``default``): idempotency keys
    #: are unique per tenant, and a producer sees only its own tenant's refunds.
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    #: The Magento installation the refund is for (a configured shop's name): every call of
    #: every attempt, reconciliation and email goes to this shop's client, and no other's.
    shop: Mapped[str] = mapped_column(String(32), default=DEFAULT_SHOP)
    #: The random part of the marker its credit memos carry; never shown to producers. NULL on
    #: rows attempted before markers had one (they carry the legacy ``refund-worker:<id>``).
    marker_token: Mapped[str | None] = mapped_column(String(32))
    payload_hash: Mapped[str] = mapped_column(String(64))
    request_json: Mapped[str] = mapped_column(Text)
    #: The Magento order; NULL until the worker resolves ``order_increment_id`` (once, then
    #: stored: every later attempt, lock and search uses it).
    order_id: Mapped[int | None] = mapped_column(Integer, index=True)
    #: The order number the caller gave instead of ``order_id`` (``sales_order.increment_id``).
    order_increment_id: Mapped[str | None] = mapped_column(String(50))
    invoice_id: Mapped[int | None] = mapped_column(Integer)
    store_code: Mapped[str | None] = mapped_column(String(32))
    service_requested: Mapped[str] = mapped_column(String(16))
    service: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=RefundStatus.RECEIVED.value)
    #: A credit memo backs at most one refund of its shop (a unique constraint: each Magento
    #: numbers its own credit memos).
    creditmemo_id: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_kind: Mapped[str | None] = mapped_column(String(16))
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    #: A money-moving call may have reached Magento and its outcome is not known (a row left
    #: ``processing`` by a dead worker is in doubt too; its next claim sets this).
    in_doubt: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Bumped by every state change; claims are compare-and-set on it.
    version: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_call_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notify_customer: Mapped[bool] = mapped_column(Boolean, default=False)
    notification_status: Mapped[str] = mapped_column(
        String(16), default=NotificationStatus.NOT_REQUESTED.value
    )
    notification_attempts: Mapped[int] = mapped_column(Integer, default=0)
    notification_error: Mapped[str | None] = mapped_column(Text)
    notification_lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notification_next_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notification_published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Bumped by every change of the email's state; its writes are compare-and-set on it (the
    #: refund's own ``version`` is the refund machine's: the two never fence each other).
    notification_version: Mapped[int] = mapped_column(Integer, default=0)
    #: Why a person must look (status ``needs_attention``): what Magento shows does not fit.
    attention: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(64))
    #: Who replayed it last (an operator key's name, or ``$USER (cli)``).
    replayed_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        # Migration 0010: on PostgreSQL the indexes hold only the rows their reads look for
        # (each status change writes an entry in every index of the row).
        UniqueConstraint("idempotency_key", "tenant", name="uq_refunds_idempotency_key_tenant"),
        Index(
            "uq_refunds_shop_creditmemo_id", "shop", "creditmemo_id", unique=True,
            postgresql_where=text("creditmemo_id IS NOT NULL"),
        ),
        Index("ix_refunds_status_next_attempt_at", "status", "next_attempt_at"),
        Index(
            "ix_refunds_notification_status", "notification_status",
            postgresql_where=text("notification_status <> 'not_requested'"),
        ),
        # Reads over a large history (migration 0006; bench/db_scale.py measures each).
        Index("ix_refunds_created_at_id", "created_at", "id"),
        Index(
            "ix_refunds_status_created_at_id", "status", "created_at", "id",
            postgresql_where=text(_SETTLED),
        ),
        Index(
            "ix_refunds_tenant_status_created_at_id", "tenant", "status", "created_at", "id",
            postgresql_where=text(_SETTLED),
        ),
    )


class MagentoCall(Base):
    """Audit: one row per HTTP call to Magento. No secrets, headers or bodies."""

    __tablename__ = "magento_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    refund_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("refunds.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    operation: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(255))
    http_status: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class RefundEvent(Base):
    """Audit: what happened to a refund besides Magento calls (reconciled, replayed, swept...)."""

    __tablename__ = "refund_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    refund_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("refunds.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class OrderLock(Base):
    """At most one refund per Magento order (of one shop) is in flight across all workers."""

    __tablename__ = "order_locks"

    shop: Mapped[str] = mapped_column(String(32), primary_key=True, default=DEFAULT_SHOP)
    order_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    refund_id: Mapped[str] = mapped_column(String(36))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RefundCount(Base):
    """Refunds per group, kept by triggers on ``refunds`` (migration 0009; ``counts``): each
    row adds ``refunds`` (+1 or -1, or a folded sum) to its group."""

    __tablename__ = "refund_counts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    shop: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    notification_status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    in_doubt: Mapped[bool] = mapped_column(Boolean)
    refunds: Mapped[int] = mapped_column(BigInteger)


class WebhookEndpoint(Base):
    """A producer's webhook endpoint: where its tenant's refund events are pushed.

    The signing secret is not stored: it is derived from ``REFUND_WORKER_SECRET_KEY`` and this
    row's ``secret_salt`` (``webhooks.secrets``), so the database alone cannot sign.
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    #: The event types it receives, comma-delimited with a comma at each end
    #: (``,refund.succeeded,refund.failed,``) so one ``LIKE '%,type,%'`` tells.
    event_types: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(200))
    secret_salt: Mapped[str] = mapped_column(String(64))
    #: Which secret key derived its secret (a fingerprint, not the key).
    key_id: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The first failed delivery since its last success (None: not failing).
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class WebhookDelivery(Base):
    """The outbox: one event for one endpoint, written with the state change it reports.

    ``event_id`` is the event's (the ``webhook-id`` header): the same on every attempt and on
    every endpoint that receives the event. ``data_json`` is what the event says of the refund
    then; its body is rendered from it and the refund's fixed fields, the same every attempt.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(40), index=True)
    event_type: Mapped[str] = mapped_column(String(40))
    refund_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("refunds.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    data_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: The start of the receiver's last answer (at most 200 characters), nothing more.
    response_excerpt: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Retried until then (None: its event's time + ``REFUND_WORKER_WEBHOOK_RETRY_FOR_SECONDS``;
    #: a replay sets it anew).
    retry_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: When the event happened (its ``timestamp``).
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )
