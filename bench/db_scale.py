"""A year of history in PostgreSQL: are the reads people run still fast, and what does a prune cost?

Fills a private database (created here, dropped at the end) with ``--refunds`` refunds (1,000,000)
and three audit rows each (3,000,000) in the shapes the worker writes, in SQL
(``generate_series``, no ORM): created over a year, ids in time order as the worker's inserts
make them, statuses as a busy shop has them (20,000 failed, 5,000 needing attention, a few
hundred in flight, the rest succeeded), five tenants (one rare), the four services, emails sent,
failed or not asked for, some events. Then ``VACUUM ANALYZE``, as autovacuum would have.

Each read is run through the package's own functions (``queries.refund_view``, ``list_refunds``
with each filter the CLI and the API offer, ``refund_stats``, the sweeper's ``find_stranded``),
its statements captured as sent and each re-run under ``EXPLAIN (ANALYZE, BUFFERS)``: the table
gives the time in the database (the sum of the statements' execution times, median of
``--repeat``), the wall time in Python, and the scans each plan used (an index name, or ``Seq
Scan on <table>``). The replay dry run is the real command, ``refund-worker replay --status
failed --dry-run`` (table, and ``--json``) in a subprocess, over the 20,000 failed refunds. Last
the prune: its dry run, then ``prune --older-than 180d`` with the longest batch transaction.

    python bench/db_scale.py                                  # fill, measure, drop
    python bench/db_scale.py --keep rw_scale                  # keep the filled database
    python bench/db_scale.py --reuse rw_scale --label after   # measure a kept one (upgraded first)
    BENCH_SRC=/tmp/before/src python bench/db_scale.py --label before --keep rw_scale

Results go to bench/results/db_scale.json, one section per ``--label`` (the others kept), so a
"before" run of older code and an "after" run sit side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import common
from sqlalchemy import Engine, create_engine, event, inspect, text

from refund_worker import queries
from refund_worker.db import Database, current_revision, upgrade
from refund_worker.queries import RefundFilter
from refund_worker.settings import Settings
from refund_worker.sweeper import find_stranded

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FAILED_EVERY = 50  # one refund in 50 failed: 20,000 of 1,000,000
IN_FLIGHT = 1300  # the newest refunds still on their way

_FILL_REFUNDS = """
INSERT INTO refunds (
    id, tenant, idempotency_key, marker_token, payload_hash, request_json, order_id, invoice_id,
    store_code, service_requested, service, status, creditmemo_id, outcome, attempts, last_error,
    last_error_kind, last_http_status, in_doubt, version, lease_token, lease_expires_at,
    first_attempt_at, last_call_at, next_attempt_at, published_at, notify_customer,
    notification_status, notification_attempts, notification_error, notification_version,
    attention, created_by, replayed_by, created_at, updated_at, settled_at)
SELECT
    md5(i::text)::uuid::text, tenant, 'rma-' || i, md5('t' || i), md5('p' || i) || md5('q' || i),
    '{"idempotency_key":"rma-' || i || '","order_id":' || (100000 + i)
        || ',"items":[{"order_item_id":' || (3 * i) || ',"qty"\\:1}],"return_to_stock"\\:true,'
        || '"notify_customer":' || (CASE WHEN i % 2 = 0 THEN 'true' ELSE 'false' END)
        || ',"comment":"Damaged in transit"}',
    100000 + i, 200000 + i, 'default', requested,
    CASE WHEN status IN ('received', 'queued') THEN NULL
         WHEN requested <> 'auto' THEN requested
         WHEN i % 10 < 7 THEN 'invoice' ELSE 'order' END,
    status,
    CASE WHEN status = 'succeeded' THEN i END,
    CASE WHEN status = 'succeeded' THEN 'credit memo ' || i || ' created' END,
    CASE WHEN status = 'failed' AND i % 4 = 0 THEN 8
         WHEN status IN ('received', 'queued') THEN 0
         WHEN i % 10 = 3 THEN 2 ELSE 1 END,
    CASE WHEN status = 'failed' THEN (ARRAY[
            'The order is holded; it cannot be refunded.',
            'We can''t create creditmemo for the invoice.',
            'The most money available to refund is 10.00.',
            'gave up after 8 attempts: 503 Service Unavailable'])[1 + i / 50 % 4]
         WHEN status = 'retrying' THEN '503 Service Unavailable' END,
    CASE WHEN status = 'failed' THEN (CASE WHEN i / 50 % 4 = 3 THEN 'retryable'
                                           ELSE 'permanent' END)
         WHEN status = 'needs_attention' THEN 'attention'
         WHEN status = 'retrying' THEN 'retryable' END,
    CASE WHEN status = 'failed' THEN (CASE WHEN i / 50 % 4 = 3 THEN 503 ELSE 400 END)
         WHEN status = 'retrying' THEN 503 END,
    status = 'retrying' AND i % 3 = 0,
    CASE WHEN status IN ('received', 'queued') THEN 0 ELSE 3 END,
    CASE WHEN status = 'processing' THEN md5('l' || i)::uuid::text END,
    CASE WHEN status = 'processing' THEN t + interval '2 minutes' END,
    CASE WHEN status NOT IN ('received', 'queued') THEN t + interval '20 ms' END,
    CASE WHEN status NOT IN ('received', 'queued') THEN t + interval '120 ms' END,
    CASE WHEN status = 'retrying' THEN t + interval '30 s' ELSE t END,
    t,
    i % 2 = 0,
    CASE WHEN i % 2 = 1 THEN 'not_requested'
         WHEN status <> 'succeeded' THEN 'not_requested'
         WHEN i % 1000 = 2 THEN 'failed'
         WHEN i % 1000 = 4 THEN 'not_sent'
         ELSE 'sent' END,
    CASE WHEN i % 2 = 0 AND status = 'succeeded' THEN 1 ELSE 0 END,
    CASE WHEN i % 2 = 0 AND status = 'succeeded' AND i % 1000 = 2
         THEN 'SMTP 421 try again later' END,
    CASE WHEN i % 2 = 0 AND status = 'succeeded' THEN 2 ELSE 0 END,
    CASE WHEN status = 'needs_attention'
         THEN 'credit memo ' || i || ' carries this refund''s marker but other items' END,
    tenant, NULL, t, t + interval '200 ms',
    CASE WHEN status IN ('succeeded', 'failed', 'needs_attention') THEN t + interval '200 ms' END
FROM (
    SELECT i,
           :now - (:n - i) * (interval '365 days' / :n) AS t,
           CASE WHEN i % 1000 = 7 THEN 'pilot'
                WHEN i % 20 < 12 THEN 'default'
                WHEN i % 20 < 17 THEN 'erp'
                WHEN i % 20 < 19 THEN 'returns'
                ELSE 'shop-eu' END AS tenant,
           CASE WHEN i % 20 = 5 THEN 'creditmemo' WHEN i % 20 = 15 THEN 'record_only'
                ELSE 'auto' END AS requested,
           CASE WHEN i % :failed_every = 0 THEN 'failed'
                WHEN i > :n - 100 THEN 'received'
                WHEN i > :n - 600 THEN 'queued'
                WHEN i > :n - 800 THEN 'processing'
                WHEN i > :n - :in_flight THEN 'retrying'
                WHEN i % 200 = 1 THEN 'needs_attention'
                ELSE 'succeeded' END AS status
    FROM generate_series(1, :n) AS i
) AS s
"""

#: Three calls per refund, in time order: read the order, search its invoices, the refund call.
_FILL_CALLS = """
INSERT INTO magento_calls (refund_id, attempt, operation, method, path, http_status, duration_ms,
                           error, created_at)
SELECT md5(i::text)::uuid::text, 1,
       (ARRAY['order_get', 'invoice_search', refund_op])[k],
       (ARRAY['GET', 'GET', 'POST'])[k],
       (ARRAY['/V1/orders/' || (100000 + i), '/V1/invoices',
              CASE refund_op WHEN 'order_refund' THEN '/V1/order/' || (100000 + i) || '/refund'
                             ELSE '/V1/invoice/' || (200000 + i) || '/refund' END])[k],
       CASE WHEN k < 3 THEN 200
            WHEN i % :failed_every = 0 AND i / 50 % 4 = 3 THEN NULL
            WHEN i % :failed_every = 0 THEN 400 ELSE 200 END,
       20 + (i * 7 + k * 13) % 180,
       CASE WHEN k = 3 AND i % :failed_every = 0 THEN 'Magento said no' END,
       :now - (:n - i) * (interval '365 days' / :n) + k * interval '40 ms'
FROM generate_series(1, :n) AS i
CROSS JOIN LATERAL (SELECT CASE WHEN i % 10 < 7 THEN 'invoice_refund'
                                ELSE 'order_refund' END AS refund_op) AS op
CROSS JOIN generate_series(1, 3) AS k
ORDER BY i, k
"""

#: Events: a reconciliation for every refund needing attention and for one in a hundred others.
_FILL_EVENTS = """
INSERT INTO refund_events (refund_id, kind, detail, created_at)
SELECT md5(i::text)::uuid::text, 'reconciled', 'found credit memo ' || i,
       :now - (:n - i) * (interval '365 days' / :n) + interval '150 ms'
FROM generate_series(1, :n) AS i
WHERE i % 200 = 1 OR i % 100 = 3
"""


def _fill(engine: Engine, refunds: int) -> dict[str, float]:
    params = {"n": refunds, "now": NOW, "failed_every": FAILED_EVERY, "in_flight": IN_FLIGHT}
    seconds: dict[str, float] = {}
    for name, statement in (
        ("refunds", _FILL_REFUNDS),
        ("magento_calls", _FILL_CALLS),
        ("refund_events", _FILL_EVENTS),
    ):
        started = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(text(statement), params)
        seconds[name] = round(time.perf_counter() - started, 1)
        common.console.print(f"filled {name} in {seconds[name]} s")
    tables = "refunds, magento_calls, refund_events"
    if _keeps_counts(engine):  # fold the fill's count rows, as the sweep does as they come
        started = time.perf_counter()
        from refund_worker import counts

        more = True
        while more:
            with engine.begin() as connection:
                more = counts.compact(connection)
        seconds["fold_counts"] = round(time.perf_counter() - started, 1)
        tables += ", refund_counts"
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"VACUUM ANALYZE {tables}"))
    seconds["vacuum_analyze"] = round(time.perf_counter() - started, 1)
    return seconds


def _keeps_counts(engine: Engine) -> bool:
    """True when the schema has migration 0009's refund counts (a ``BENCH_SRC`` snapshot of
    older code has not)."""
    return "refund_counts" in inspect(engine).get_table_names()


# -- capturing and explaining -----------------------------------------------------------------


@contextlib.contextmanager
def _captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The statements ``engine`` sends meanwhile, with their parameters."""
    sent: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _scans(plan: dict[str, Any]) -> list[str]:
    """Each scan of a plan: the index it used, or ``Seq Scan on <table>``."""
    found: list[str] = []
    node_type = plan.get("Node Type", "")
    if "Index Name" in plan:
        short = node_type.replace("Index Only Scan", "only").replace("Bitmap Index Scan", "bitmap")
        found.append(plan["Index Name"] + (f" ({short})" if short != "Index Scan" else ""))
    elif node_type == "Seq Scan":
        found.append(f"Seq Scan on {plan.get('Relation Name')}")
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


def _explain(engine: Engine, statements: list[tuple[str, Any]]) -> dict[str, Any]:
    """Each SELECT re-run under EXPLAIN ANALYZE: execution ms (summed) and the scans used."""
    total = 0.0
    scans: list[str] = []
    plans: list[dict[str, Any]] = []
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
            [document] = cursor.fetchone()[0]
            total += document["Execution Time"]
            scans.extend(_scans(document["Plan"]))
            plans.append({"sql": " ".join(statement.split())[:400], "plan": document["Plan"]})
        raw.rollback()
    finally:
        raw.close()
    return {"db_ms": total, "scans": scans, "plans": plans}


def _measure(
    database: Database, name: str, run: Callable[[], Any], repeat: int
) -> dict[str, Any]:
    walls: list[float] = []
    explained: list[dict[str, Any]] = []
    for _ in range(repeat):
        with _captured(database.engine) as sent:
            started = time.perf_counter()
            run()
            walls.append((time.perf_counter() - started) * 1000)
        explained.append(_explain(database.engine, sent))
    db_ms = statistics.median(e["db_ms"] for e in explained)
    scans = list(dict.fromkeys(explained[-1]["scans"]))
    return {
        "what": name,
        "db_ms": round(db_ms, 2),
        "wall_ms": round(statistics.median(walls), 2),
        "statements": len(explained[-1]["plans"]),
        "scans": scans,
        "seq_scan": any(s.startswith("Seq Scan on") for s in scans),
        "plans": explained[-1]["plans"],
    }


# -- the reads --------------------------------------------------------------------------------


def _reads(database: Database, settings: Settings, refunds: int) -> list[tuple[str, Any]]:
    middle = refunds // 2 + 3  # a succeeded refund with an event
    refund_id = _scalar(
        database, "SELECT CAST(CAST(md5(CAST(:i AS text)) AS uuid) AS text)", i=middle
    )
    key = f"rma-{middle}"
    order_id = 100000 + middle
    day = timedelta(days=1)

    def session_call(function: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with database.session_scope() as session:
                return function(session)

        return run

    def listing(**criteria: Any) -> Callable[[], Any]:
        criteria.setdefault("limit", 50)
        return session_call(lambda s: queries.list_refunds(s, RefundFilter(**criteria)))

    def status_by_key(session: Any) -> Any:
        rows = queries.refunds_by_key(session, key)
        view = queries.refund_view(session, rows[0].id)
        return view, queries.refund_events(session, rows[0].id)

    return [
        ("status ID", session_call(
            lambda s: (queries.refund_view(s, refund_id), queries.refund_events(s, refund_id)))),
        ("status --key KEY", session_call(status_by_key)),
        ("list", listing()),
        ("list --status failed", listing(status="failed")),
        ("list --status processing", listing(status="processing")),
        ("list --status needs_attention --limit 0", listing(status="needs_attention", limit=None)),
        ("list --service order", listing(service="order")),
        ("list --service creditmemo", listing(service="creditmemo")),
        ("list --tenant erp", listing(tenant="erp")),
        ("list --tenant pilot (0.1%)", listing(tenant="pilot")),
        ("list --tenant erp --status failed (API)", listing(tenant="erp", status="failed")),
        ("list --tenant pilot --status failed", listing(tenant="pilot", status="failed")),
        ("list --key KEY", listing(keys=(key,))),
        ("list --order ID", listing(order_id=order_id)),
        ("list --since 1d", listing(since=NOW - day)),
        ("list --until 180d", listing(until=NOW - 180 * day)),
        ("list --since 200d --until 190d", listing(since=NOW - 200 * day, until=NOW - 190 * day)),
        ("list --status failed --since 30d", listing(status="failed", since=NOW - 30 * day)),
        ("list --error holded", listing(error_contains="holded")),
        ("stats", session_call(lambda s: queries.refund_stats(s, NOW))),
        ("stats --window 24h", session_call(
            lambda s: queries.refund_stats(s, NOW, latency_window=day))),
        ("sweep (find_stranded)", lambda: find_stranded(
            database, settings, NOW, queued_since=None, notifications_queued_since=None)),
    ]


def _scalar(database: Database, sql: str, **params: Any) -> Any:
    with database.engine.connect() as connection:
        return connection.execute(text(sql), params).scalar()


# -- the replay dry run (the real command) ----------------------------------------------------


def _replay_dry_run(url: str, repeat: int) -> list[dict[str, Any]]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REFUND_WORKER_")},
        "REFUND_WORKER_DATABASE_URL": url,
        "REFUND_WORKER_BROKER_URL": "memory://",
        "PYTHONPATH": str(common.SRC),
        "COLUMNS": "200",
    }
    rows = []
    for extra in ([], ["--json"]):
        argv = [sys.executable, "-m", "refund_worker.cli", "replay", "--status", "failed",
                "--dry-run", *extra]
        walls = []
        cpus = []
        out = b""
        for _ in range(repeat):
            started = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run(argv, env=env, capture_output=True, check=False)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            walls.append(time.perf_counter() - started)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            out = done.stdout
            assert done.returncode in (0, 1), done.stderr.decode()[-2000:]
        would = (
            len(json.loads(out)["would_replay"]) if extra else done.stderr.decode().strip()
        )
        rows.append({
            "what": "replay --status failed --dry-run" + (" --json" if extra else ""),
            "wall_s": round(statistics.median(walls), 2),
            # The command's own CPU: on a loaded machine the wall time is mostly waiting.
            "cpu_s": round(statistics.median(cpus), 2),
            "load_avg_1m": round(os.getloadavg()[0], 1),
            "output_bytes": len(out),
            "result": would,
        })
    return rows


# -- the prune --------------------------------------------------------------------------------


def _prune(database: Database) -> list[dict[str, Any]]:
    try:
        from refund_worker.retention import prune
    except ImportError:
        return []  # code from before prune existed
    cutoff = NOW - timedelta(days=180)
    rows = []
    started = time.perf_counter()
    dry = prune(database, cutoff=cutoff, dry_run=True)
    rows.append({"what": "prune --older-than 180d --dry-run", "wall_s":
                 round(time.perf_counter() - started, 2), "rows": dry.removed})

    spans: list[float] = []
    opened: list[float] = []

    def begin(conn: Any) -> None:
        opened.append(time.perf_counter())

    def commit(conn: Any) -> None:
        if opened:
            spans.append(time.perf_counter() - opened.pop())

    event.listen(database.engine, "begin", begin)
    event.listen(database.engine, "commit", commit)
    try:
        report = prune(database, cutoff=cutoff, batch=1000)
    finally:
        event.remove(database.engine, "begin", begin)
        event.remove(database.engine, "commit", commit)
    assert report.removed == dry.removed, (report.removed, dry.removed)
    rows.append({
        "what": "prune --older-than 180d --batch 1000",
        "wall_s": round(report.seconds, 2),
        "rows": report.removed,
        "batches": report.batches,
        "rows_per_s": round(report.total / report.seconds),
        "batch_ms_p50": round(statistics.median(spans) * 1000, 1) if spans else None,
        "batch_ms_max": round(max(spans) * 1000, 1) if spans else None,
    })
    started = time.perf_counter()
    again = prune(database, cutoff=cutoff, batch=1000)
    rows.append({"what": "prune again (nothing left)", "wall_s":
                 round(time.perf_counter() - started, 2), "rows": again.removed})
    return rows


# -- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _database(keep: str | None, reuse: str | None) -> Iterator[tuple[str, bool]]:
    """(url, freshly created); dropped at the end unless kept or reused."""
    admin = create_engine(common.PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = reuse or keep or f"rw_bench_scale_{os.getpid()}"
    if not reuse:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", not reuse
    finally:
        if not keep:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refunds", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--label", default="after")
    parser.add_argument("--keep", metavar="DB", help="keep the database under this name")
    parser.add_argument("--reuse", metavar="DB", help="measure this kept database (no fill)")
    parser.add_argument("--no-prune", action="store_true", help="leave the history in place")
    args = parser.parse_args()

    with _database(args.keep, args.reuse) as (url, fresh):
        engine = create_engine(url)
        started = time.perf_counter()
        upgrade(engine)
        migrate_s = round(time.perf_counter() - started, 1)
        revision = current_revision(engine)
        fill = _fill(engine, args.refunds) if fresh else {}
        engine.dispose()
        database = Database.from_url(url)
        settings = Settings(database_url=url, broker_url="memory://")
        counts = {
            table: _scalar(database, f"SELECT count(*) FROM {table}")
            for table in ("refunds", "magento_calls", "refund_events")
        }
        failed = _scalar(database, "SELECT count(*) FROM refunds WHERE status = 'failed'")
        common.console.print(f"schema {revision}; {counts}; failed {failed}")
        reads = [_measure(database, name, run, args.repeat)
                 for name, run in _reads(database, settings, args.refunds)]
        replay = _replay_dry_run(url, args.repeat)
        pruned = [] if args.no_prune else _prune(database)
        database.dispose()

    common.print_table(
        f"reads at {counts['refunds']:,} refunds, {counts['magento_calls']:,} audit rows "
        f"(schema {revision}, {args.label})",
        [{**row, "scans": ", ".join(row["scans"])} for row in reads],
        ["what", "db_ms", "wall_ms", "statements", "scans"],
    )
    common.print_table("replay dry run (the command, in a subprocess)", replay)
    if pruned:
        common.print_table("prune", pruned)

    path = common.RESULTS / "db_scale.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    runs = previous.get("runs", {})
    runs[args.label] = {
        "command": " ".join(["python", *sys.argv]),
        "machine": common.machine(),
        "schema": revision,
        "counts": counts,
        "failed": failed,
        "fill_seconds": fill,
        "migrate_seconds": migrate_s,
        "reads": reads,
        "replay_dry_run": replay,
        "prune": pruned,
    }
    summary = {
        label: {row["what"]: row["db_ms"] for row in run["reads"]} for label, run in runs.items()
    }
    common.write_json("db_scale", {"targets": {"read_db_ms": 100, "replay_dry_run_s": 5},
                                   "db_ms_by_label": summary, "runs": runs})


if __name__ == "__main__":
    main()
