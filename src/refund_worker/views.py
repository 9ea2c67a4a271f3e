"""Read-only views of refunds for people, in SQLAlchemy Core: no ORM, no pydantic.

``refund-worker status``, ``list`` and ``stats`` read through these and start without loading
``sqlalchemy.orm``, pydantic or the settings' model (docs/performance.md, "The command's start");
``queries`` builds the HTTP API's pydantic views from ORM rows and re-exports what is here.
``RefundFilter`` is what the CLI's ``list`` and ``replay`` and the HTTP API's listing share.
Every function takes a Core ``Connection`` or an ORM ``Session`` (both ``execute`` Core).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Row, Select, func, select

from refund_worker import counts, tables
from refund_worker.statuses import SETTLED_STATUSES, RefundStatus

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    Executor = Connection | Session

#: At most this many of the most recent Magento calls feed the latency percentiles.
LATENCY_SAMPLE_LIMIT = 10_000
DEFAULT_LATENCY_WINDOW = timedelta(hours=1)

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_DAYS = timedelta.max.days

#: A refund's fields as a list shows them, in ``schemas.RefundSummary``'s order.
SUMMARY_FIELDS = (
    "id", "tenant", "idempotency_key", "shop", "order_id", "order_increment_id", "invoice_id",
    "status",
    "service_requested", "service", "creditmemo_id", "attempts", "last_error", "outcome",
    "notification_status", "notification_error", "attention", "created_by", "replayed_by",
    "created_at", "updated_at",
)  # fmt: skip
#: An audit row's, in ``schemas.MagentoCallView``'s order.
CALL_FIELDS = ("attempt", "operation", "http_status", "duration_ms", "error", "created_at")


def summary_columns() -> list[Any]:
    """The columns of ``SUMMARY_FIELDS``."""
    return [tables.refunds.c[name] for name in SUMMARY_FIELDS]


def json_value(value: Any) -> Any:
    """A column's value as pydantic's JSON mode writes it (UTC as ``Z``)."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def document(row: Row[Any], fields: Sequence[str] = SUMMARY_FIELDS) -> dict[str, Any]:
    """``fields`` of ``row`` as JSON values: ``RefundSummary.model_dump(mode="json")``."""
    mapping = row._mapping
    return {name: json_value(mapping[name]) for name in fields}


# -- one refund ------------------------------------------------------------------------------


def refund_row(executor: Executor, refund_id: str) -> Row[Any] | None:
    """One refund's summary columns, by id."""
    refunds = tables.refunds
    return executor.execute(select(*summary_columns()).where(refunds.c.id == refund_id)).first()


def refund_ids_by_key(
    executor: Executor, idempotency_key: str, *, tenant: str | None = None
) -> list[Row[Any]]:
    """(id, tenant) of the refunds stored under ``idempotency_key``, one per tenant that used it
    (only ``tenant``'s when given), by tenant."""
    refunds = tables.refunds
    query = select(refunds.c.id, refunds.c.tenant).where(
        refunds.c.idempotency_key == idempotency_key
    )
    if tenant is not None:
        query = query.where(refunds.c.tenant == tenant)
    return list(executor.execute(query.order_by(refunds.c.tenant)))


def calls(executor: Executor, refund_id: str) -> list[Row[Any]]:
    """A refund's Magento calls (``CALL_FIELDS``), oldest first."""
    m = tables.magento_calls
    query = select(*(m.c[name] for name in CALL_FIELDS)).where(m.c.refund_id == refund_id)
    return list(executor.execute(query.order_by(m.c.id)))


def refund_document(executor: Executor, refund_id: str) -> dict[str, Any] | None:
    """One refund with its Magento calls as ``RefundView.model_dump(mode="json")``, or None."""
    row = refund_row(executor, refund_id)
    if row is None:
        return None
    found = document(row)
    found["calls"] = [document(call, CALL_FIELDS) for call in calls(executor, refund_id)]
    return found


@dataclass(frozen=True)
class EventView:
    """One ``refund_events`` row (reconciled, replayed, swept...)."""

    kind: str
    detail: str | None
    created_at: datetime


def events(executor: Executor, refund_id: str) -> list[EventView]:
    """The audit events of one refund, oldest first."""
    e = tables.refund_events
    rows = executor.execute(
        select(e.c.kind, e.c.detail, e.c.created_at)
        .where(e.c.refund_id == refund_id)
        .order_by(e.c.id)
    )
    return [EventView(*row) for row in rows]


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

    def criteria(self, refunds: Any) -> list[ColumnElement[bool]]:
        """The WHERE clauses of this filter over ``refunds`` (``tables.refunds``, or the ORM
        table ``Refund.__table__``: the same column names)."""
        c = refunds.c
        where: list[ColumnElement[bool]] = []
        if self.ids:
            where.append(c.id.in_(self.ids))
        if self.keys:
            where.append(c.idempotency_key.in_(self.keys))
        if self.tenant is not None:
            where.append(c.tenant == self.tenant)
        if self.shop is not None:
            where.append(c.shop == self.shop)
        if self.status:
            where.append(c.status == self.status)
        if self.order_id is not None:
            where.append(c.order_id == self.order_id)
        if self.order_increment_id is not None:
            where.append(c.order_increment_id == self.order_increment_id)
        if self.service:
            where.append(func.coalesce(c.service, c.service_requested) == self.service)
        if self.error_contains:
            where.append(c.last_error.icontains(self.error_contains, autoescape=True))
        if self.notification_status:
            where.append(c.notification_status == self.notification_status)
        if self.notification_error_contains:
            where.append(
                c.notification_error.icontains(self.notification_error_contains, autoescape=True)
            )
        if self.since:
            where.append(c.created_at >= self.since)
        if self.until:
            where.append(c.created_at < self.until)
        return where

    def select(self, *columns: Any) -> Select[Any]:
        """A Core SELECT of ``columns`` (default: a list's) for this filter, newest first."""
        refunds = tables.refunds
        query = select(*(columns or summary_columns())).where(*self.criteria(refunds))
        query = query.order_by(refunds.c.created_at.desc(), refunds.c.id.desc())
        return query.limit(self.limit) if self.limit else query

    def statement(self) -> Select[Any]:
        """The ORM SELECT of whole ``Refund`` rows for this filter, newest first."""
        from refund_worker.models import Refund

        query = select(Refund).where(*self.criteria(Refund.__table__))
        query = query.order_by(Refund.created_at.desc(), Refund.id.desc())
        return query.limit(self.limit) if self.limit else query


def summaries(executor: Executor, refund_filter: RefundFilter) -> list[Row[Any]]:
    """The summary columns of the refunds matching the filter, newest first."""
    return list(executor.execute(refund_filter.select()))


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
    executor: Executor,
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
    # The counts the database keeps (migration 0009): a few hundred rows, not a year of refunds.
    r = tables.refunds
    only = [r.c.shop == shop] if shop is not None else []
    by_status: dict[str, int] = defaultdict(int)
    notifications: dict[str, int] = defaultdict(int)
    by_shop: dict[str, int] = defaultdict(int)
    attempts_total = attempts_max = retried = in_doubt = 0
    for group in counts.groups(executor, shop):
        by_status[group.status] += group.refunds
        notifications[group.notification_status] += group.refunds
        by_shop[group.shop] += group.refunds
        attempts_total += group.attempts * group.refunds
        attempts_max = max(attempts_max, group.attempts)
        retried += group.refunds if group.attempts > 1 else 0
        in_doubt += group.refunds if group.in_doubt else 0
    # The few rows in flight, found by status (ix_refunds_status_next_attempt_at) and sorted
    # here: materialized, so the planner cannot walk ix_refunds_created_at_id past a year of
    # settled refunds instead (262 ms at 1M refunds; the history indexes hold settled ones only).
    unsettled = sorted(status.value for status in RefundStatus if status not in SETTLED_STATUSES)
    live = (
        select(r.c.id, r.c.created_at)
        .where(r.c.status.in_(unsettled), *only)
        .cte("live")
        .prefix_with("MATERIALIZED")
    )
    oldest = executor.execute(
        select(live.c.id, live.c.created_at).order_by(live.c.created_at, live.c.id).limit(1)
    ).first()
    since = now - latency_window
    overall, by_operation = _latencies(executor, since, sample_limit, shop)
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
    executor: Executor, since: datetime, limit: int, shop: str | None = None
) -> tuple[Latency, list[Latency]]:
    r, m = tables.refunds, tables.magento_calls
    query = select(m.c.operation, m.c.duration_ms, m.c.http_status).where(m.c.created_at >= since)
    if shop is not None:
        query = query.join(r, r.c.id == m.c.refund_id).where(r.c.shop == shop)
    recent = executor.execute(
        query.order_by(m.c.created_at.desc(), m.c.id.desc()).limit(limit)
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
