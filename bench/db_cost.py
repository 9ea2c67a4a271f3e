"""What PostgreSQL spends on one refund and its email, step by step, through the store's API.

No Magento and no Celery: ``--refunds`` refunds go through intake, then each through the steps a
worker runs (claim, record success with three audit rows, the email's claim, its record with one
audit row), one step for all refunds before the next, on a private database. For each step: the
CPU of the database's backends (psutil, our database only) and the client's CPU, per refund, and
the statements and transactions sent (an event listener counts them). ``--index-ddl`` applies SQL
after the migrations (to try another set of indexes); ``BENCH_SRC`` measures a snapshot of the
code (see bench/common.py), so two variants can be alternated in one run.

    python bench/db_cost.py --refunds 2000 --rounds 3
    BENCH_SRC=/tmp/snap/src python bench/db_cost.py --name db_cost-before
    python bench/db_cost.py --webhook-endpoints 1 --name db_cost-webhooks  # one subscriber

``--webhook-endpoints N`` registers N endpoints, subscribed to every event, for the refunds'
tenant: each success and each sent email then also writes N webhook deliveries (the outbox).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import resource
import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import common
import psutil
from sqlalchemy import event, text

from refund_worker.db import Database, upgrade
from refund_worker.intake import enqueue_refunds
from refund_worker.magento import CallRecord
from refund_worker.models import utcnow
from refund_worker.schemas import NotificationStatus
from refund_worker.store import ClaimedRefund, EmailStore, RefundStore

_MEMO_IDS = itertools.count(1)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _backends(database: Database, name: str) -> list[psutil.Process]:
    with database.engine.connect() as connection:
        pids = connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": name}
        ).scalars()
        return [psutil.Process(pid) for pid in pids]


def _backend_cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


@contextlib.contextmanager
def _counting(database: Database) -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()

    def before(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        counts[statement.split(None, 1)[0].upper()] += 1

    def begin(_c: Any) -> None:
        counts["BEGIN"] += 1

    def commit(_c: Any) -> None:
        counts["COMMIT"] += 1

    event.listen(database.engine, "before_cursor_execute", before)
    event.listen(database.engine, "begin", begin)
    event.listen(database.engine, "commit", commit)
    try:
        yield counts
    finally:
        event.remove(database.engine, "before_cursor_execute", before)
        event.remove(database.engine, "begin", begin)
        event.remove(database.engine, "commit", commit)


def _calls(count: int) -> list[CallRecord]:
    operations = ["order_get", "invoice_get", "invoice_refund", "creditmemo_emails"]
    return [
        CallRecord(operations[i % 4], "GET", f"/rest/default/V1/x/{i}", 200, 3.5, None)
        for i in range(count)
    ]


def one_round(database: Database, name: str, refunds: int) -> dict[str, dict[str, float]]:
    """Every step over ``refunds`` new refunds; per refund: database and client CPU (ms),
    statements and transactions."""
    store, emails = RefundStore(database), EmailStore(database)
    requests = common.item_refunds(refunds, f"k-{utcnow().timestamp()}")
    ids: list[str] = []
    claims: list[ClaimedRefund] = []
    email_claims: list[Any] = []

    def intake() -> None:
        for result in enqueue_refunds(requests, database=database, publisher=common.NoPublisher()):
            ids.append(result.refund_id)  # type: ignore[union-attr]

    def claim() -> None:
        for refund_id in ids:
            now = utcnow()
            claimed = store.claim(
                refund_id, token=refund_id, now=now, due_by=now + timedelta(seconds=1),
                lease_until=now + timedelta(seconds=120),
            )  # fmt: skip
            assert isinstance(claimed, ClaimedRefund), claimed
            claimed.calls = _calls(3)
            claimed.service = "invoice"
            claims.append(claimed)

    def success() -> None:
        for claimed in claims:
            assert store.record_success(
                claimed, creditmemo_id=next(_MEMO_IDS), reconciled=False, outcome="ok",
                now=utcnow(),
            )  # fmt: skip

    def email_claim() -> None:
        for refund_id in ids:
            now = utcnow()
            claimed = emails.claim(
                refund_id, now=now, due_by=now + timedelta(seconds=1),
                lease_until=now + timedelta(seconds=120),
            )  # fmt: skip
            assert not hasattr(claimed, "detail"), claimed
            claimed.calls = _calls(1)  # type: ignore[union-attr]
            email_claims.append(claimed)

    def email_record() -> None:
        for claimed in email_claims:
            emails.record(claimed, status=NotificationStatus.SENT, error=None)

    steps: list[tuple[str, Callable[[], None]]] = [
        ("intake", intake), ("claim", claim), ("record success", success),
        ("email claim", email_claim), ("email record", email_record),
    ]  # fmt: skip
    out: dict[str, dict[str, float]] = {}
    for step_name, step in steps:
        backends = _backends(database, name)
        db_before, client_before = _backend_cpu(backends), _cpu()
        with _counting(database) as counts:
            step()
        db_ms = 1000 * (_backend_cpu(backends) - db_before) / refunds
        client_ms = 1000 * (_cpu() - client_before) / refunds
        out[step_name] = {
            "db_ms": round(db_ms, 3),
            "client_ms": round(client_ms, 3),
            "statements": round(
                sum(v for k, v in counts.items() if k not in ("BEGIN", "COMMIT")) / refunds, 2
            ),
            "transactions": round(counts["COMMIT"] / refunds, 2),
        }
    out["total"] = {
        key: round(sum(row[key] for row in out.values()), 3)
        for key in ("db_ms", "client_ms", "statements", "transactions")
    }
    return out


def _add_endpoints(database: Database, count: int) -> None:
    """``count`` endpoints of the default tenant, subscribed to every event."""
    types = ",refund.succeeded,refund.failed,refund.needs_attention,refund.notification_sent,"
    with database.engine.begin() as connection:
        for n in range(count):
            connection.execute(
                text(
                    "INSERT INTO webhook_endpoints (id, tenant, url, event_types, secret_salt,"
                    " key_id, enabled, created_at, updated_at) VALUES (:id, 'default',"
                    " 'https://hooks.example.com/', :types, 's', 'k', true, now(), now())"
                ),
                {"id": f"bench-endpoint-{n}", "types": types + "refund.replayed,"},
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refunds", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--index-ddl", default="", help="SQL run after the migrations")
    parser.add_argument("--name", default="db_cost")
    parser.add_argument(
        "--webhook-endpoints", type=int, default=0,
        help="endpoints subscribed to every event for the refunds' tenant",
    )  # fmt: skip
    args = parser.parse_args()
    with common.private_database("db_cost") as url:
        name = url.rsplit("/", 1)[1]
        # One connection, kept: every statement runs on one backend we can meter.
        database = Database.from_url(url, pool_size=1)
        upgrade(database.engine)
        if args.webhook_endpoints:
            _add_endpoints(database, args.webhook_endpoints)
        if args.index_ddl:
            with database.engine.begin() as connection:
                connection.exec_driver_sql(args.index_ddl)
        one_round(database, name, min(200, args.refunds))  # warm-up: caches, prepared plans
        rounds = [one_round(database, name, args.refunds) for _ in range(args.rounds)]
        database.dispose()
    rows = []
    for step in rounds[0]:
        row: dict[str, Any] = {"step": step}
        for key in ("db_ms", "client_ms", "statements", "transactions"):
            row[key] = round(statistics.median(r[step][key] for r in rounds), 3)
        rows.append(row)
    common.print_table(f"per refund, median of {args.rounds} rounds of {args.refunds}", rows)
    common.write_json(
        args.name,
        {"machine": common.machine(), "args": vars(args), "rows": rows, "rounds": rounds},
    )


if __name__ == "__main__":
    main()
