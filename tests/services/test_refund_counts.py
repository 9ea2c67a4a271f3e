"""The counts the database keeps (migration 0009, ``refund_worker.counts``) always equal a count
of the refunds themselves: through inserts, every kind of update, deletes and folds, on SQLite
and PostgreSQL; and a fold on PostgreSQL never loses a change that commits while it runs."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import Engine, create_engine, delete, func, insert, select, update

from refund_worker import counts, tables
from refund_worker.db import upgrade
from refund_worker.models import Refund

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
STATUSES = ["received", "queued", "processing", "retrying", "succeeded", "failed"]
EMAILS = ["not_requested", "pending", "sent", "failed"]
SHOPS = ["default", "eu", "us"]
refunds = Refund.__table__


def _row(refund_id: str, rng: random.Random) -> dict[str, object]:
    return {
        "id": refund_id, "tenant": "default", "idempotency_key": refund_id,
        "shop": rng.choice(SHOPS), "payload_hash": "0" * 64, "request_json": "{}",
        "order_id": 1, "service_requested": "auto", "status": "received", "attempts": 0,
        "in_doubt": False, "version": 0, "notify_customer": False,
        "notification_status": "not_requested", "notification_attempts": 0,
        "notification_version": 0, "created_at": NOW, "updated_at": NOW,
    }


def _kept(engine: Engine, shop: str | None = None) -> Counter[tuple[object, ...]]:
    with engine.connect() as connection:
        return Counter({
            (g.shop, g.status, g.notification_status, g.attempts, g.in_doubt): g.refunds
            for g in counts.groups(connection, shop)
        })


def _counted(engine: Engine, shop: str | None = None) -> Counter[tuple[object, ...]]:
    r = tables.refunds
    key = (r.c.shop, r.c.status, r.c.notification_status, r.c.attempts, r.c.in_doubt)
    query = select(*key, func.count()).group_by(*key)
    if shop is not None:
        query = query.where(r.c.shop == shop)
    with engine.connect() as connection:
        return Counter({tuple(row[:5]): row[5] for row in connection.execute(query)})


def _random_change(engine: Engine, rng: random.Random, ids: list[str], step: int) -> None:
    with engine.begin() as connection:
        kind = rng.choice(["insert", "status", "email", "attempt", "doubt", "shop", "noop",
                           "several", "delete"]) if ids else "insert"
        if kind == "insert":
            ids.append(f"r{step}")
            connection.execute(insert(refunds).values(_row(ids[-1], rng)))
            return
        target = rng.choice(ids)
        where = refunds.c.id == target
        if kind == "delete":
            ids.remove(target)
            connection.execute(delete(refunds).where(where))
            return
        values: dict[str, object] = {
            "status": {"status": rng.choice(STATUSES)},
            "email": {"notification_status": rng.choice(EMAILS)},
            "attempt": {"attempts": refunds.c.attempts + 1, "status": "processing"},
            "doubt": {"in_doubt": rng.random() < 0.5},
            "shop": {"shop": rng.choice(SHOPS)},
            "noop": {"version": refunds.c.version + 1, "status": refunds.c.status},
            "several": {"status": "queued", "attempts": 0, "notification_status": "pending"},
        }[kind]
        connection.execute(update(refunds).where(where).values(**values))


def test_counts_equal_a_count_of_the_refunds_through_every_change(database_url: str) -> None:
    engine = create_engine(database_url)
    rng = random.Random(9)
    ids: list[str] = []
    try:
        upgrade(engine)
        for step in range(160):
            _random_change(engine, rng, ids, step)
            if step % 23 == 22:  # a fold now and then, sometimes of part of the rows only
                with engine.begin() as connection:
                    counts.compact(connection, batch=rng.choice([5, 1000]))
            if step % 10 == 9:
                assert _kept(engine) == _counted(engine), step
                assert _kept(engine, "eu") == _counted(engine, "eu"), step
        with engine.begin() as connection:
            while counts.compact(connection, batch=7):
                pass
        assert _kept(engine) == _counted(engine)
        with engine.connect() as connection:  # folded: at most one row per group
            rows = connection.execute(select(func.count()).select_from(tables.refund_counts))
            assert rows.scalar_one() == len(_counted(engine))
    finally:
        engine.dispose()


def test_a_fold_on_postgresql_keeps_a_change_that_commits_while_it_runs(pg_url: str) -> None:
    engine = create_engine(pg_url)
    rng = random.Random(3)
    try:
        upgrade(engine)
        with engine.begin() as connection:
            connection.execute(insert(refunds), [_row(f"r{i}", rng) for i in range(20)])
        # A worker's transaction writes its count rows (taking the lower ids) and has not
        # committed; later changes commit; the fold runs; then the worker commits.
        slow = engine.connect()
        slow.begin()
        slow.execute(update(refunds).where(refunds.c.id == "r1").values(status="queued"))
        with engine.begin() as connection:
            connection.execute(update(refunds).where(refunds.c.id == "r2").values(status="failed"))
        with engine.begin() as connection:
            assert not counts.compact(connection)
        slow.commit()
        slow.close()
        assert _kept(engine) == _counted(engine)

        # And folds racing writers: the totals still agree.
        stop = threading.Event()

        def fold() -> None:
            while not stop.is_set():
                with engine.begin() as connection:
                    counts.compact(connection)

        folder = threading.Thread(target=fold)
        folder.start()
        try:
            ids = [f"r{i}" for i in range(20)]
            for step in range(200):
                _random_change(engine, rng, ids, 100 + step)
        finally:
            stop.set()
            folder.join()
        assert _kept(engine) == _counted(engine)
    finally:
        engine.dispose()
