"""The order lock, taken in one upsert: free, ours again, someone else's live lock, an expired one
(taken over), and two claimers at once, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import select

from refund_worker.db import Database
from refund_worker.models import OrderLock, utcnow
from refund_worker.store import take_order_lock

ORDER = 42


def take(database: Database, refund_id: str, now: datetime, until: datetime) -> bool:
    with database.connection_scope() as connection:
        return take_order_lock(connection, ORDER, refund_id, now, until)


def lock(database: Database) -> tuple[str, datetime] | None:
    with database.session_scope() as session:
        row = session.execute(
            select(OrderLock.refund_id, OrderLock.expires_at).where(OrderLock.order_id == ORDER)
        ).first()
        return None if row is None else (row.refund_id, row.expires_at)


def test_the_order_lock_goes_to_one_refund_at_a_time(database: Database) -> None:
    t0 = utcnow()
    at = [t0 + timedelta(seconds=s) for s in range(0, 200, 10)]
    assert lock(database) is None
    assert take(database, "a", t0, at[12])  # free: inserted
    assert lock(database) == ("a", at[12])
    assert take(database, "a", at[1], at[13])  # ours already: extended
    assert lock(database) == ("a", at[13])
    assert not take(database, "b", at[2], at[14])  # a's, live: refused, untouched
    assert not take(database, "b", at[13], at[15])  # expiring exactly now is still live
    assert lock(database) == ("a", at[13])
    assert take(database, "b", at[13] + timedelta(microseconds=1), at[16])  # expired: taken over
    assert lock(database) == ("b", at[16])
    assert not take(database, "a", at[14], at[17])  # the old holder cannot take it back
    assert lock(database) == ("b", at[16])


def test_two_refunds_claiming_a_free_order_at_once_get_one_lock(database: Database) -> None:
    now = utcnow()
    until = now + timedelta(seconds=60)
    second: list[bool] = []
    with database.connection_scope() as connection:
        assert take_order_lock(connection, ORDER, "a", now, until)
        # b's upsert waits on a's uncommitted row (the unique key, or SQLite's write lock)...
        racer = threading.Thread(target=lambda: second.append(take(database, "b", now, until)))
        racer.start()
        time.sleep(0.3)
    racer.join(30)  # ...and, once a committed, finds a live lock that is not its own
    assert second == [False]
    assert lock(database) == ("a", until)
