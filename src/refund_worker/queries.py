"""Read-only views of refunds for people: one refund with its calls, lists, statistics.

Small functions over a session; nothing here writes or prints. ``RefundFilter`` is what the CLI's
``list`` and ``replay`` and the HTTP API's listing share.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from refund_worker.models import MagentoCall, Refund, RefundEvent
from refund_worker.schemas import (
    SETTLED_STATUSES,
    MagentoCallView,
    NotificationStatus,
    RefundStatus,
    RefundView,
)

#: At most this many of the most recent Magento calls feed the latency percentiles.
LATENCY_SAMPLE_LIMIT = 10_000
DEFAULT_LATENCY_WINDOW = timedelta(hours=1)

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_DAYS = timedelta.max.days


# -- one refund ------------------------------------------------------------------------------


def get_refund(session: Session, refund_id: str, *, tenant: str | None = None) -> Refund | None:
    """A refund by id (only ``tenant``'s when given); never looked up by idempotency key."""
    row = session.get(Refund, refund_id)
    if row is None or (tenant is not None and row.tenant != tenant):
        return None
    return row


def refunds_by_key(
    session: Session, idempotency_key: str, *, tenant: str | None = None
) -> list[Refund]:
    """The refunds stored under ``idempotency_key``: one per tenant that used it (only
    ``tenant``'s when given); never looked up by id."""
    query = select(Refund).where(Refund.idempotency_key == idempotency_key)
    if tenant is not None:
        query = query.where(Refund.tenant == tenant)
    return list(session.scalars(query.order_by(Refund.tenant)))


def to_view(row: Refund, calls: list[MagentoCall] | None = None) -> RefundView:
    """The public view of a refund row."""
    return RefundView(
        id=row.id,
        tenant=row.tenant,
        idempotency_key=row.idempotency_key,
        shop=row.shop,
        order_id=row.order_id,
        order_increment_id=row.order_increment_id,
        invoice_id=row.invoice_id,
        status=RefundStatus(row.status),
        service_requested=row.service_requested,
        service=row.service,
        creditmemo_id=row.creditmemo_id,
        attempts=row.attempts,
        last_error=row.last_error,
        outcome=row.outcome,
        notification_status=NotificationStatus(row.notification_status),
        notification_error=row.notification_error,
        attention=row.attention,
        created_by=row.created_by,
        replayed_by=row.replayed_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        calls=[
            MagentoCallView(
                attempt=call.attempt,
                operation=call.operation,
                http_status=call.http_status,
                duration_ms=call.duration_ms,
                error=call.error,
                created_at=call.created_at,
            )
            for call in calls or []
        ],
    )


def refund_view(
    session: Session, refund_id: str, *, tenant: str | None = None
) -> RefundView | None:
    """One refund (by id; only ``tenant``'s when given) with its Magento calls, oldest first."""
    row = get_refund(session, refund_id, tenant=tenant)
    if row is None:
        return None
    calls = list(
        session.scalars(
            select(MagentoCall).where(MagentoCall.refund_id == row.id).order_by(MagentoCall.id)
        )
    )
    return to_view(row, calls)


@dataclass(frozen=True)
class EventView:
    """One ``refund_events`` row (reconciled, replayed, swept...)."""

    kind: str
    detail: str | None
    created_at: datetime


def refund_events(session: Session, refund_id: str) -> list[EventView]:
    """The audit events of one refund, oldest first."""
    rows = session.scalars(
        select(RefundEvent).where(RefundEvent.refund_id == refund_id).order_by(RefundEvent.id)
    )
    return [EventView(row.kind, row.detail, row.created_at) for row in rows]


# -- lists -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundFilter:
    """Which refunds to list or replay; every given criterion must hold."""

    ids: tuple[str, ...] = ()  # refund ids
    keys: tuple[str, ...] = ()  # idempotency keys
    #: Only this tenant's refunds (a producer's view); None: every tenant's (an operator's).
    tenant: str | None = None
    #: Only this shop's refunds (an order id means an order of each shop otherwise).
    shop: str | None = None
    status: str | None = None
    order_id: int | None = None
    #: The order number the producer gave (``order_increment_id``), exactly.
    order_increment_id: str | None = None
    #: The service Magento was called with, or the one requested when none was chosen yet.
    service: str | None = None
    #: Case-insensitive substring of the refund's last error.
    error_contains: str | None = None
    notification_status: str | None = None
    #: Case-insensitive substring of the notification's error.
    notification_error_contains: str | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    limit: int | None = None

    def statement(self) -> Select[Refund]:
        """The SELECT for this filter, newest first."""
        query = select(Refund)
        if self.ids:
            query = query.where(Refund.id.in_(self.ids))
        if self.keys:
            query = query.where(Refund.idempotency_key.in_(self.keys))
        if self.tenant is not None:
            query = query.where(Refund.tenant == self.tenant)
        if self.shop is not None:
            query = query.where(Refund.shop == self.shop)
        if self.status:
            query = query.where(Refund.status == self.status)
        if self.order_id is not None:
            query = query.where(Refund.order_id == self.order_id)
        if self.order_increment_id is not None:
            query = query.where(Refund.order_increment_id == self.order_increment_id)
        if self.service:
            query = query.where(
                func.coalesce(Refund.service, Refund.service_requested) == self.service
            )
        if self.error_contains:
            query = query.where(Refund.last_error.icontains(self.error_contains, autoescape=True))
        if self.notification_status:
            query = query.where(Refund.notification_status == self.notification_status)
        if self.notification_error_contains:
            query = query.where(
                Refund.notification_error.icontains(
                    self.notification_error_contains, autoescape=True
                )
            )
        if self.since:
            query = query.where(Refund.created_at >= self.since)
        if self.until:
            query = query.where(Refund.created_at < self.until)
        query = query.order_by(Refund.created_at.desc(), Refund.id.desc())
        return query.limit(self.limit) if self.limit else query


def select_refunds(session: Session, refund_filter: RefundFilter) -> list[Refund]:
    """Rows matching the filter, newest first."""
    return list(session.scalars(refund_filter.statement()))


def list_refunds(session: Session, refund_filter: RefundFilter) -> list[RefundView]:
    """Views (without calls) of the rows matching the filter, newest first."""
    return [to_view(row) for row in select_refunds(session, refund_filter)]


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``3d``, ``1w`` (also ``1.5h``); raises ``ValueError``."""
    relative = _RELATIVE.match(text)
    if not relative:
        raise ValueError(f"{text!r} is not a duration like 30m, 2h, 3d or 1w")
    amount, unit = float(relative.group(1)), relative.group(2).lower()
    try:
        return timedelta(seconds=amount * _UNIT_SECONDS[unit])
    except OverflowError:
        raise ValueError(f"{text!r} is out of range (at most {_MAX_DAYS:,} days)") from None


def parse_moment(text: str, now: datetime) -> datetime:
    """An aware UTC moment from ``2h``/``30m``/``3d``/``1w`` ago, an ISO date, or ISO date-time.

    A date means its midnight UTC; a date-time without an offset is UTC. Raises ``ValueError``.
    """
    if _RELATIVE.match(text):
        try:
            return now - parse_duration(text)
        except OverflowError:
            raise ValueError(f"{text!r} ago is out of range (before the year 1)") from None
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a relative time (30m, 2h, 3d, 1w) nor an ISO date or date-time"
        ) from None
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range once turned into UTC") from None


# -- statistics ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Linear-interpolated percentile of ascending values, as PostgreSQL's percentile_cont."""
    if not sorted_values:
        return None
    if not 0 <= fraction <= 1:
        raise ValueError("fraction must be between 0 and 1")
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


@dataclass(frozen=True)
class Latency:
    """Magento call durations of one operation (or of all, ``operation=None``) in the window."""

    operation: str | None
    calls: int
    failed: int  # no HTTP answer, or an HTTP error status
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None


def latency_of(operation: str | None, durations: list[float], failed: int) -> Latency:
    """Percentiles of ``durations`` (any order)."""
    ordered = sorted(durations)
    return Latency(
        operation=operation,
        calls=len(ordered),
        failed=failed,
        p50_ms=percentile(ordered, 0.5),
        p95_ms=percentile(ordered, 0.95),
        max_ms=ordered[-1] if ordered else None,
    )


@dataclass(frozen=True)
class Stats:
    """What ``refund-worker stats`` shows."""

    now: datetime
    total: int
    by_status: dict[str, int]
    notifications_by_status: dict[str, int]
    in_doubt: int
    oldest_unsettled_id: str | None
    oldest_unsettled_at: datetime | None
    attempts_total: int
    attempts_max: int
    retried: int  # refunds that took more than one attempt
    latency_since: datetime
    latency_sample_limit: int
    latency: Latency
    latency_by_operation: list[Latency] = field(default_factory=list)
    #: The shop these figures are of (None: every shop), and refunds by shop.
    shop: str | None = None
    by_shop: dict[str, int] = field(default_factory=dict)

    @property
    def oldest_unsettled_age_seconds(self) -> float | None:
        """How long the oldest refund that is neither succeeded nor failed has been waiting."""
        if self.oldest_unsettled_at is None:
            return None
        return max(0.0, (self.now - self.oldest_unsettled_at).total_seconds())


def refund_stats(
    session: Session,
    now: datetime,
    *,
    latency_window: timedelta = DEFAULT_LATENCY_WINDOW,
    sample_limit: int = LATENCY_SAMPLE_LIMIT,
    shop: str | None = None,
) -> Stats:
    """Counts by status, the oldest unsettled refund, attempts, and Magento latency (of one
    ``shop``'s refunds and calls when given).

    Latency percentiles are computed here over the most recent ``sample_limit`` calls in the
    window, the same on SQLite and PostgreSQL (SQLite has no percentile function).
    """
    # One pass over the table for every count (at a million refunds each pass costs hundreds of
    # milliseconds; three made stats 2 s: bench/db_scale.py).
    only = [Refund.shop == shop] if shop is not None else []
    by_status: dict[str, int] = defaultdict(int)
    notifications: dict[str, int] = defaultdict(int)
    by_shop: dict[str, int] = defaultdict(int)
    attempts_total = attempts_max = retried = in_doubt = 0
    rows = session.execute(
        select(
            Refund.status,
            Refund.notification_status,
            Refund.shop,
            func.count(),
            func.coalesce(func.sum(Refund.attempts), 0),
            func.coalesce(func.max(Refund.attempts), 0),
            func.count().filter(Refund.attempts > 1),
            func.count().filter(Refund.in_doubt.is_(True)),
        )
        .where(*only)
        .group_by(Refund.status, Refund.notification_status, Refund.shop)
    )
    for status, notification, shop_name, count, total, most, more_than_one, doubtful in rows:
        by_status[status] += count
        notifications[notification] += count
        by_shop[shop_name] += count
        attempts_total += int(total)
        attempts_max = max(attempts_max, int(most))
        retried += more_than_one
        in_doubt += doubtful
    # The unsettled statuses by name, so the (status, created_at, id) index finds the few rows
    # in flight instead of a scan past a year of settled ones.
    unsettled = sorted(status.value for status in RefundStatus if status not in SETTLED_STATUSES)
    oldest = session.execute(
        select(Refund.id, Refund.created_at)
        .where(Refund.status.in_(unsettled), *only)
        .order_by(Refund.created_at, Refund.id)
        .limit(1)
    ).first()
    since = now - latency_window
    overall, by_operation = _latencies(session, since, sample_limit, shop)
    return Stats(
        now=now,
        total=sum(by_status.values()),
        by_status=dict(sorted(by_status.items())),
        notifications_by_status=dict(sorted(notifications.items())),
        in_doubt=int(in_doubt),
        oldest_unsettled_id=oldest[0] if oldest else None,
        oldest_unsettled_at=oldest[1] if oldest else None,
        attempts_total=int(attempts_total),
        attempts_max=int(attempts_max),
        retried=int(retried),
        latency_since=since,
        latency_sample_limit=sample_limit,
        latency=overall,
        latency_by_operation=by_operation,
        shop=shop,
        by_shop=dict(sorted(by_shop.items())),
    )


def _latencies(
    session: Session, since: datetime, limit: int, shop: str | None = None
) -> tuple[Latency, list[Latency]]:
    query = select(MagentoCall.operation, MagentoCall.duration_ms, MagentoCall.http_status).where(
        MagentoCall.created_at >= since
    )
    if shop is not None:
        query = query.join(Refund, Refund.id == MagentoCall.refund_id).where(Refund.shop == shop)
    recent = session.execute(
        query.order_by(MagentoCall.created_at.desc(), MagentoCall.id.desc()).limit(limit)
    ).all()
    durations: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, int] = defaultdict(int)
    for operation, duration_ms, http_status in recent:
        durations[operation].append(float(duration_ms))
        if http_status is None or http_status >= 400:
            failures[operation] += 1
    overall = latency_of(
        None, [value for values in durations.values() for value in values], sum(failures.values())
    )
    by_operation = [
        latency_of(operation, durations[operation], failures[operation])
        for operation in sorted(durations)
    ]
    return overall, by_operation
