"""Refund counts kept by the database (migration 0009): read them, and fold their rows.

Triggers on ``refunds`` append a row to ``refund_counts`` for every change of a refund's group
(shop, status, notification status, attempts, in doubt): -1 for the old group, +1 for the new
one. A group's count is the sum of its rows, so ``refund-worker stats`` reads a few hundred rows
instead of counting a year of refunds, and no writer ever waits on a shared counter. The sweep
folds the rows into one per group (``compact``) so they stay few.

A ``received`` refund (stored, its message not yet published) is counted as ``queued``
(migration 0010): marking a bulk intake queued then writes no counts at all. ``groups`` counts
the received ones in ``refunds`` itself, in the same statement (they are few: an index range of
``ix_refunds_status_next_attempt_at``) and moves them back out of ``queued``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Select, delete, func, insert, literal, select, union_all

from refund_worker import tables
from refund_worker.statuses import RefundStatus

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from refund_worker.db import Database

#: Rows folded per ``compact`` transaction (a refund writes about nine), and at most this many
#: transactions per sweep.
COMPACT_BATCH = 50_000
COMPACT_BATCHES_PER_SWEEP = 20

_c = tables.refund_counts
_KEY = (_c.c.shop, _c.c.status, _c.c.notification_status, _c.c.attempts, _c.c.in_doubt)
_KEY_NAMES = [column.name for column in _KEY]


@dataclass(frozen=True)
class Group:
    """How many refunds of one shop are in one status, notification status and attempt count."""

    shop: str
    status: str
    notification_status: str
    attempts: int
    in_doubt: bool
    refunds: int


def groups(executor: Connection | Session, shop: str | None = None) -> Iterator[Group]:
    """Every group that holds refunds (of ``shop`` when given)."""
    total = func.sum(_c.c.refunds)
    kept = select(*_KEY, total, literal(False).label("received")).group_by(*_KEY)
    r = tables.refunds
    their_key = [r.c[name] for name in _KEY_NAMES]
    received = (
        select(*their_key, func.count(), literal(True))
        .where(r.c.status == RefundStatus.RECEIVED.value)
        .group_by(*their_key)
    )
    if shop is not None:
        kept = kept.where(_c.c.shop == shop)
        received = received.where(r.c.shop == shop)
    found: dict[tuple[Any, ...], int] = {}
    for row in executor.execute(union_all(kept, received)):  # one statement: one snapshot
        key = (row[0], row[1], row[2], int(row[3]), bool(row[4]))
        found[key] = found.get(key, 0) + int(row[5])
        if row[6]:  # counted under queued by the triggers
            waiting = (key[0], RefundStatus.QUEUED.value, *key[2:])
            found[waiting] = found.get(waiting, 0) - int(row[5])
    for key, refunds in found.items():
        if refunds:
            yield Group(*key, refunds=refunds)


def compact(connection: Connection, batch: int = COMPACT_BATCH) -> bool:
    """Fold up to ``batch`` of the oldest rows into one row per group, in the transaction of
    ``connection``; True when newer rows are left for another call.

    On PostgreSQL one statement deletes the rows and inserts their sums (``DELETE … RETURNING``
    in a CTE), so what is summed is exactly what is deleted, whatever commits meanwhile. SQLite
    has one writer at a time, so there the sums and the delete are two statements of one
    transaction.
    """
    lowest, highest = connection.execute(select(func.min(_c.c.id), func.max(_c.c.id))).one()
    if lowest is None:
        return False
    bound = min(int(highest), int(lowest) + batch - 1)
    if connection.dialect.name == "postgresql":
        gone = delete(_c).where(_c.c.id <= bound).returning(*_KEY, _c.c.refunds).cte("gone")
        connection.execute(insert(_c).from_select([*_KEY_NAMES, "refunds"], _sums(gone)))
        return bound < int(highest)
    folded = select(_c).where(_c.c.id <= bound).subquery()
    connection.execute(insert(_c).from_select([*_KEY_NAMES, "refunds"], _sums(folded)))
    connection.execute(delete(_c).where(_c.c.id <= bound))
    return bound < int(highest)


def _sums(rows: Any) -> Select[Any]:
    """One row per group of ``rows`` (a CTE or subquery of count rows): its key and its sum,
    groups that sum to nothing left out."""
    keys = [rows.c[name] for name in _KEY_NAMES]
    total = func.sum(rows.c.refunds)
    return select(*keys, total).group_by(*keys).having(total != 0)

def compact_all(database: Database, batches: int = COMPACT_BATCHES_PER_SWEEP) -> None:
    """``compact`` in short transactions until no row is left to fold, or ``batches`` ran (the
    sweep's share: it runs again in ``sweep_interval_seconds``)."""
    for _ in range(batches):
        with database.connection_scope() as connection:
            if not compact(connection):
                return
