"""The tables as SQLAlchemy Core sees them, without the ORM: the UTC column type, ``utcnow``, and
the columns people's reads use (``views``), for commands that start without loading
``sqlalchemy.orm`` (a fifth of a read-only command's start).

``models`` declares the tables (and the migrations build them); the clauses here name a subset of
their columns with the same types, which ``tests/unit/test_tables.py`` checks.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    TypeDecorator,
    column,
    table,
)
from sqlalchemy.engine import Dialect


def utcnow() -> datetime:
    """Timezone-aware now, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC on every backend and always hands back aware datetimes (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


refunds = table(
    "refunds",
    column("id", String),
    column("tenant", String),
    column("idempotency_key", String),
    column("shop", String),
    column("order_id", Integer),
    column("order_increment_id", String),
    column("invoice_id", Integer),
    column("status", String),
    column("service_requested", String),
    column("service", String),
    column("creditmemo_id", Integer),
    column("outcome", Text),
    column("attempts", Integer),
    column("last_error", Text),
    column("in_doubt", Boolean),
    column("notification_status", String),
    column("notification_attempts", Integer),
    column("notification_error", Text),
    column("attention", Text),
    column("created_by", String),
    column("replayed_by", String),
    column("created_at", UTCDateTime()),
    column("updated_at", UTCDateTime()),
)

magento_calls = table(
    "magento_calls",
    column("id", Integer),
    column("refund_id", String),
    column("attempt", Integer),
    column("operation", String),
    column("http_status", Integer),
    column("duration_ms", Float),
    column("error", Text),
    column("created_at", UTCDateTime()),
)

refund_events = table(
    "refund_events",
    column("id", Integer),
    column("refund_id", String),
    column("kind", String),
    column("detail", Text),
    column("created_at", UTCDateTime()),
)

refund_counts = table(
    "refund_counts",
    column("id", BigInteger),
    column("shop", String),
    column("status", String),
    column("notification_status", String),
    column("attempts", Integer),
    column("in_doubt", Boolean),
    column("refunds", BigInteger),
)
