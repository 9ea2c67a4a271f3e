"""Prunes the history of settled refunds: their audit rows, their events, and on request the rows.

Only a refund that is settled (``SETTLED_STATUSES``: succeeded, failed, needs attention), not in
doubt, with no email on its way (pending, sending, retrying), and untouched since the cutoff
(``updated_at``: any change of the refund or of its email bumps it) has history to prune; a
refund in flight or in doubt keeps everything. Of such a refund, the rows of each
``HISTORY_TABLES`` entry written before the cutoff go; with ``include_refunds`` the refund row
goes too, with all of its history.

Batches never hold long locks: each is one short transaction that deletes at most ``batch`` rows
chosen by keyset on the table's integer id (``id > last id of the previous batch``, bounded above
by the newest id written before the cutoff), so no statement scans what an earlier one already
passed, and an optional pause between batches leaves the database to the workers. The history
rows are insert-only: their row locks stop no worker; a pruned refund row is settled, so no
worker updates it either.

With an ``archive`` (a gzip-compressed JSON Lines file, one ``{"table": ..., "row": {...}}`` per
removed row), each batch's rows are written and flushed to disk before its transaction commits:
a crash leaves at most one batch archived and not removed, never removed and not archived.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Table,
    and_,
    delete,
    exists,
    func,
    not_,
    or_,
    select,
    true,
)

from refund_worker.db import Database
from refund_worker.models import MagentoCall, Refund, RefundEvent, WebhookDelivery
from refund_worker.outbox import DeliveryStatus
from refund_worker.schemas import SETTLED_STATUSES, NotificationStatus
from refund_worker.settings import MIN_RETENTION_DAYS

__all__ = [
    "DEFAULT_BATCH",
    "HISTORY_TABLES",
    "MIN_RETENTION",
    "Archive",
    "HistoryTable",
    "PruneReport",
    "check_retention",
    "prunable",
    "prune",
]

#: Rows removed per transaction by default.
DEFAULT_BATCH = 1000
#: History younger than this is never pruned (``check_retention``).
MIN_RETENTION = timedelta(days=MIN_RETENTION_DAYS)
#: An email in these states is still on its way: its refund's history stays.
_EMAIL_BUSY = (
    NotificationStatus.PENDING.value,
    NotificationStatus.SENDING.value,
    NotificationStatus.RETRYING.value,
)

_refunds: Table = Refund.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class HistoryTable:
    """A table of refunds' history that prune removes: each row belongs to a refund
    (``refund_id``), has an increasing integer ``id`` and says when it was written
    (``created_at``). ``keep``: rows that must stay whatever their age (e.g. an outbox's
    undelivered messages); a refund with such a row is never removed either."""

    table: Table
    keep: ColumnElement[bool] | None = None

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def removable(self) -> ColumnElement[bool]:
        """This table's rows that may go once their refund qualifies."""
        return not_(self.keep) if self.keep is not None else true()


_deliveries: Table = WebhookDelivery.__table__  # type: ignore[assignment]
#: A webhook delivery still on its way (pending, being delivered, retrying) is kept, and so is its
#: refund: only delivered and given-up events are history.
_DELIVERY_SETTLED = sorted({DeliveryStatus.DELIVERED.value, DeliveryStatus.FAILED.value})

#: Every table prune removes rows of, in this order. A new table of history joins here; the
#: tests run over this tuple.
HISTORY_TABLES: tuple[HistoryTable, ...] = (
    HistoryTable(MagentoCall.__table__),  # type: ignore[arg-type]
    HistoryTable(RefundEvent.__table__),  # type: ignore[arg-type]
    HistoryTable(_deliveries, keep=_deliveries.c.status.not_in(_DELIVERY_SETTLED)),
)


def check_retention(older_than: timedelta) -> timedelta:
    """``older_than``, or ``ValueError`` when it is shorter than ``MIN_RETENTION``."""
    if older_than < MIN_RETENTION:
        raise ValueError(
            f"history younger than {MIN_RETENTION_DAYS} days is never pruned "
            f"(operators investigate and replay failures from it); got {_days(older_than)}"
        )
    return older_than


def _days(value: timedelta) -> str:
    return f"{value.total_seconds() / 86400:g} days"


def prunable(cutoff: datetime) -> ColumnElement[bool]:
    """Refunds whose history may be pruned: settled, not in doubt, no email on its way,
    unchanged since ``cutoff``."""
    return and_(
        _refunds.c.status.in_(sorted(status.value for status in SETTLED_STATUSES)),
        _refunds.c.in_doubt.is_(False),
        _refunds.c.notification_status.not_in(_EMAIL_BUSY),
        _refunds.c.updated_at < cutoff,
    )


def _removable_refunds(cutoff: datetime, tables: Sequence[HistoryTable]) -> ColumnElement[bool]:
    """Refunds that may be removed themselves: prunable, and holding no row any table keeps."""
    kept = [
        ~exists().where(t.table.c.refund_id == _refunds.c.id, t.keep)
        for t in tables
        if t.keep is not None
    ]
    return and_(prunable(cutoff), *kept)


@dataclass
class PruneReport:
    """What a prune removed (or, dry, would remove): rows per table, batches, time taken."""

    cutoff: datetime
    dry_run: bool
    removed: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.removed.values())


class Archive:
    """Removed rows as gzip-compressed JSON Lines, made durable batch by batch.

    ``Archive.create(path)`` refuses an existing file (``FileExistsError``): an archive is
    never overwritten.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._gzip = gzip.GzipFile(fileobj=raw, mode="wb")
        self.rows = 0

    @classmethod
    @contextmanager
    def create(cls, path: str | os.PathLike[str]) -> Iterator[Archive]:
        with Path(path).open("xb") as raw:
            archive = cls(raw)
            try:
                yield archive
            finally:
                archive._gzip.close()
                raw.flush()
                os.fsync(raw.fileno())

    def write(self, table: str, rows: Sequence[Row[Any]]) -> None:
        for row in rows:
            line = {"table": table, "row": {k: _jsonable(v) for k, v in row._mapping.items()}}
            self._gzip.write(json.dumps(line, sort_keys=True).encode() + b"\n")
        self.rows += len(rows)

    def sync(self) -> None:
        """Everything written so far is on disk (called before each batch commits)."""
        self._gzip.flush()
        self._raw.flush()
        os.fsync(self._raw.fileno())


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def prune(
    database: Database,
    *,
    cutoff: datetime,
    batch: int = DEFAULT_BATCH,
    dry_run: bool = False,
    include_refunds: bool = False,
    archive: Archive | None = None,
    pause: float = 0.0,
    tables: Sequence[HistoryTable] = HISTORY_TABLES,
    sleep: Callable[[float], None] = time.sleep,
) -> PruneReport:
    """Remove the history (and with ``include_refunds`` the rows) of refunds ``prunable`` at
    ``cutoff``, ``batch`` rows per transaction, sleeping ``pause`` seconds between batches.
    ``dry_run``: count what would go, change nothing."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    started = time.perf_counter()
    report = PruneReport(cutoff=cutoff, dry_run=dry_run)
    for history in tables:
        report.removed[history.name] = 0
    if include_refunds:
        report.removed[_refunds.name] = 0

    def between_batches() -> None:
        if pause > 0:
            sleep(pause)

    if dry_run:
        _count(database, cutoff, include_refunds, tables, report)
    else:
        for history in tables:
            _prune_table(database, history, cutoff, batch, archive, report, between_batches)
        if include_refunds:
            _prune_refunds(database, cutoff, batch, archive, tables, report, between_batches)
    report.seconds = time.perf_counter() - started
    return report


def _newest_id_before(connection: Connection, history: HistoryTable, cutoff: datetime) -> int:
    """The keyset's upper bound: the newest id written before the cutoff (0: none)."""
    c = history.table.c
    return int(
        connection.execute(select(func.max(c.id)).where(c.created_at < cutoff)).scalar() or 0
    )


def _old_rows(history: HistoryTable, cutoff: datetime, upto: int) -> ColumnElement[bool]:
    c = history.table.c
    return and_(
        c.id <= upto,
        c.created_at < cutoff,
        history.removable,
        exists().where(_refunds.c.id == c.refund_id, prunable(cutoff)),
    )


def _prune_table(
    database: Database,
    history: HistoryTable,
    cutoff: datetime,
    batch: int,
    archive: Archive | None,
    report: PruneReport,
    between_batches: Callable[[], None],
) -> None:
    c = history.table.c
    with database.statement_scope() as connection:
        upto = _newest_id_before(connection, history, cutoff)
    after = 0
    while True:
        chosen = (
            select(c.id)
            .where(c.id > after, _old_rows(history, cutoff, upto))
            .order_by(c.id)
            .limit(batch)
        )
        statement = delete(history.table).where(c.id.in_(chosen.scalar_subquery()))
        returned = tuple(history.table.c) if archive is not None else (c.id,)
        with database.connection_scope() as connection:
            rows = connection.execute(statement.returning(*returned)).all()
            if archive is not None and rows:
                archive.write(history.name, rows)
                archive.sync()
        report.removed[history.name] += len(rows)
        if rows:
            report.batches += 1
        if len(rows) < batch:
            return
        after = max(row.id for row in rows)
        between_batches()


def _prune_refunds(
    database: Database,
    cutoff: datetime,
    batch: int,
    archive: Archive | None,
    tables: Sequence[HistoryTable],
    report: PruneReport,
    between_batches: Callable[[], None],
) -> None:
    """Remove prunable refunds with all their history, keyset on the refund id. Each batch's
    rows are locked first (PostgreSQL), so none is replayed between its history going and it."""
    removable = _removable_refunds(cutoff, tables)
    after = ""
    while True:
        with database.connection_scope() as connection:
            ids = list(
                connection.scalars(
                    select(_refunds.c.id)
                    .where(_refunds.c.id > after, removable)
                    .order_by(_refunds.c.id)
                    .limit(batch)
                    .with_for_update()
                )
            )
            if not ids:
                return
            for history in tables:
                c = history.table.c
                statement = delete(history.table).where(c.refund_id.in_(ids))
                if archive is not None:
                    rows = connection.execute(statement.returning(*history.table.c)).all()
                    archive.write(history.name, rows)
                    removed = len(rows)
                else:
                    removed = len(connection.execute(statement.returning(c.id)).all())
                report.removed[history.name] += removed
            statement = delete(_refunds).where(_refunds.c.id.in_(ids))
            returned = tuple(_refunds.c) if archive is not None else (_refunds.c.id,)
            rows = connection.execute(statement.returning(*returned)).all()
            if archive is not None:
                archive.write(_refunds.name, rows)
                archive.sync()
        report.removed[_refunds.name] += len(rows)
        report.batches += 1
        if len(ids) < batch:
            return
        after = ids[-1]
        between_batches()


def _count(
    database: Database,
    cutoff: datetime,
    include_refunds: bool,
    tables: Sequence[HistoryTable],
    report: PruneReport,
) -> None:
    """What a prune would remove, one counting statement per table."""
    with database.statement_scope() as connection:
        bounds = {h.name: _newest_id_before(connection, h, cutoff) for h in tables}
        for history in tables:
            report.removed[history.name] = int(
                connection.execute(
                    select(func.count())
                    .select_from(history.table)
                    .where(_old_rows(history, cutoff, bounds[history.name]))
                ).scalar_one()
            )
        if not include_refunds:
            return
        removable = _removable_refunds(cutoff, tables)
        report.removed[_refunds.name] = int(
            connection.execute(
                select(func.count()).select_from(_refunds).where(removable)
            ).scalar_one()
        )
        for history in tables:
            c = history.table.c
            # The rest of a removed refund's history goes with it.
            report.removed[history.name] += int(
                connection.execute(
                    select(func.count())
                    .select_from(history.table)
                    .where(
                        or_(c.id > bounds[history.name], c.created_at >= cutoff),
                        exists().where(_refunds.c.id == c.refund_id, removable),
                    )
                ).scalar_one()
            )
