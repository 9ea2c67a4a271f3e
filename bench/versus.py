"""This project against the naive worker (``bench/naive.py``), side by side in one run.

What it measures: for each layout (default ``threads:16`` and ``prefork:4``), one project worker
process (``bench/worker.py``, the app ``refund-worker worker`` runs) and one naive worker process
(``celery -A naive worker``), both started with the same pool, concurrency and ``-E``, against
the same simulator (no latency), Redis db and private PostgreSQL database. After a warm-up of each,
the two drain ``--refunds`` refunds (GET order, GET invoice, POST invoice refund, record, email
task, POST emails, record; every order a fresh one) in alternation — project, naive, project,
naive ... — ``--repeat`` times. Each run is timed from the first refund submitted (each side's
own intake: ``intake.enqueue_refunds`` / ``naive.submit``) to the last refund and email settled.
Only the running side's worker is metered (the other one sits idle on its own queue).

    python bench/versus.py                                   # 1,000 x 3 pairs x 2 layouts, ~7 min
    python bench/versus.py --refunds 200 --repeat 1          # smoke, ~1 min
    python bench/versus.py --layout threads:16 --payment mixed

How to read it: per run and as medians, refunds/s, worker CPU ms per refund (the worker process
and its children), PostgreSQL CPU ms per refund (the backends of the run's database:
``CpuMeter``'s ``postgres`` role) and the two added up. The paired ratios are project ÷ naive of
the runs next to each other (pair i = project run i ÷ naive run i), so slow drifts of a shared,
noisy machine cancel; the headline is their median. Throughput ratio > 1 and CPU ratios < 1
favour the project. ``machine cores`` near 2.0 means the machine (2 cores) was saturated: the
throughput is then bounded by all the CPU spent per refund, worker and database together.
Writes ``bench/results/versus.json`` (overwritten on each run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import common
import naive
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

SIDES = ("project", "naive")
WARMUP = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refunds", type=int, default=1000, help="refunds per run")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs per layout")
    parser.add_argument(
        "--layout",
        action="append",
        default=[],
        help="POOL:CONCURRENCY, repeatable (default: threads:16 and prefork:4)",
    )
    parser.add_argument("--payment", default="online", choices=["online", "offline", "mixed"])
    parser.add_argument("--no-emails", action="store_true", help="refunds without notification")
    parser.add_argument("--redis-db", type=int, default=5)
    args = parser.parse_args()
    layouts = args.layout or ["threads:16", "prefork:4"]
    result = run(args, layouts)
    common.write_json("versus", result)


# ---------------------------------------------------------------------------- workers


def start_naive(stack: common.Stack, pool: str, concurrency: int) -> common.Worker:
    """A naive worker process with the same pool, concurrency and flags as the project's."""
    log_path = stack.log_dir / f"naive-{len(stack.workers)}-{time.monotonic_ns()}.log"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "naive",
        "worker",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--queues",
        naive.QUEUE,
        "--loglevel",
        stack.env.get("REFUND_WORKER_LOG_LEVEL", "INFO"),
        "-n",
        f"naive{len(stack.workers)}-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        "-E",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            env=stack.env,
            cwd=common.BENCH,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = common.Worker(process, log_path, argv)
    stack.workers.append(worker)
    worker.wait_ready()
    return worker


@contextlib.contextmanager
def metering_only(stack: common.Stack, worker: common.Worker) -> Iterator[None]:
    """``CpuMeter`` counts ``stack.workers``: during a run, only the side that runs."""
    everyone = stack.workers
    stack.workers = [worker]
    try:
        yield
    finally:
        stack.workers = everyone


# ---------------------------------------------------------------------------- one naive run


def naive_done(factory: sessionmaker[Session]) -> tuple[int, int]:
    """(refunds settled with their email settled, failed) in the naive table."""
    with factory() as session:
        row = session.execute(
            text(
                "SELECT count(*) FILTER (WHERE status IN ('succeeded','failed') AND "
                "(email_status IS NULL OR email_status <> 'pending')), "
                "count(*) FILTER (WHERE status = 'failed') FROM naive_refunds"
            )
        ).one()
    return int(row[0]), int(row[1])


def run_naive(
    stack: common.Stack,
    requests: Sequence[dict[str, Any]],
    factory: sessionmaker[Session],
    timeout: float = 3600,
    stall: float = 60,
) -> dict[str, Any]:
    """``common.run_refunds``'s measurement, for the naive worker: submit, wait until every
    refund and its email is settled, CPU by role; the same keys in the result."""
    with factory() as session:
        session.execute(text("TRUNCATE naive_refunds"))
        session.commit()
    sessions_before = common._sessions(stack)
    done_failed = (0, 0)
    progress = [0, 0.0]
    with common.CpuMeter(stack) as meter:
        progress[1] = time.perf_counter()
        naive.submit(requests, factory)
        enqueued_at = time.perf_counter() - meter.start_wall

        def finished() -> bool:
            nonlocal done_failed
            done_failed = naive_done(factory)
            if done_failed[0] > progress[0]:
                progress[:] = [done_failed[0], time.perf_counter()]
            elif time.perf_counter() - progress[1] > stall:
                return True
            return done_failed[0] >= len(requests)

        common.wait_until(finished, timeout, 0.1, "the naive refunds to settle")
    n = len(requests)
    stalled = n - done_failed[0]
    wall = meter.wall if not stalled else progress[1] - meter.start_wall
    if stalled:
        common.console.print(f"[red]naive: {stalled} refunds not done after {stall:g}s[/red]")
    errors: list[str] = []
    if done_failed[1]:
        with factory() as session:
            errors = list(
                session.execute(
                    text("SELECT DISTINCT error FROM naive_refunds WHERE status = 'failed' LIMIT 5")
                ).scalars()
            )
    return {
        "refunds": n,
        "failed": done_failed[1],
        "stalled": stalled,
        "errors": errors,
        "enqueue_s": round(enqueued_at, 3),
        "seconds": round(wall, 3),
        "refunds_per_s": round(done_failed[0] / wall, 1),
        "cpu_ms_per_refund": {
            role: round(1000 * seconds / n, 3) for role, seconds in meter.seconds.items()
        },
        "cores": meter.cores(),
        "db_connections_opened": common._sessions(stack) - sessions_before,
    }


# ---------------------------------------------------------------------------- the comparison


def run(args: argparse.Namespace, layouts: Sequence[str]) -> dict[str, Any]:
    notify = not args.no_emails
    per_layout: dict[str, Any] = {}
    with common.stack(args.redis_db, name="versus") as stack:
        naive.app.conf.broker_url = stack.redis_url
        naive.create_tables(stack.database.engine)
        factory = sessionmaker(stack.database.engine)
        per_side = WARMUP + args.refunds * args.repeat
        orders = common.create_orders(stack.simulator, 2 * per_side * len(layouts), args.payment)
        calls = common.calls_in_sequence(orders, notify)
        batches = iter(
            orders[start : start + n]
            for start, n in _slices(len(layouts), args.repeat, args.refunds)
        )
        for layout in layouts:
            pool, _, concurrency = layout.partition(":")
            project = stack.start_worker(pool=pool, concurrency=int(concurrency))
            naive_worker = start_naive(stack, pool, int(concurrency))
            workers = {"project": project, "naive": naive_worker}
            for side in SIDES:
                requests = common.refund_requests(next(batches), f"{layout}-{side}-w", notify)
                _one_run(stack, side, workers[side], requests, factory)
            rows: list[dict[str, Any]] = []
            for repeat in range(args.repeat):
                for side in SIDES:
                    label = f"{layout}-{side}-{repeat}"
                    requests = common.refund_requests(next(batches), label, notify)
                    run_ = _one_run(stack, side, workers[side], requests, factory)
                    rows.append(_row(side, repeat, run_))
                    common.print_table(f"versus, {layout}", rows[-1:], _COLUMNS)
            logs = {side: len(w.log().splitlines()) for side, w in workers.items()}
            stack.stop_workers()
            per_layout[layout] = _summary(layout, rows, logs)
    for layout, summary in per_layout.items():
        common.print_table(
            f"{layout}: per run and medians", [*summary["runs"], *summary["medians"]], _COLUMNS
        )
        common.print_table(
            f"{layout}: project ÷ naive, paired runs", summary["paired"], _RATIO_COLUMNS
        )
    return {
        "settings": {
            "layouts": list(layouts),
            "refunds_per_run": args.refunds,
            "pairs": args.repeat,
            "warmup_per_side": WARMUP,
            "payment": args.payment,
            "emails": notify,
            "magento_calls_per_refund": calls,
            "order": "project, naive, project, naive, ...",
            "worker_flags": "same pool and concurrency, -E, --without-gossip --without-mingle",
        },
        "layouts": per_layout,
    }


def _one_run(
    stack: common.Stack,
    side: str,
    worker: common.Worker,
    requests: list[dict[str, Any]],
    factory: sessionmaker[Session],
) -> dict[str, Any]:
    with metering_only(stack, worker):
        if side == "project":
            return common.run_refunds(stack, requests)
        return run_naive(stack, requests, factory)


def _slices(layouts: int, repeat: int, refunds: int) -> Iterator[tuple[int, int]]:
    """(start, size) of each run's fresh orders, in the order the runs take them."""
    start = 0
    for _ in range(layouts):
        for size in [WARMUP, WARMUP] + [refunds] * (2 * repeat):
            yield start, size
            start += size


_COLUMNS = [
    "what",
    "refunds_per_s",
    "worker_cpu_ms",
    "pg_cpu_ms",
    "worker_db_cpu_ms",
    "sim_cpu_ms",
    "machine_cores",
    "db_conns",
    "failed",
]
_RATIO_COLUMNS = ["what", "throughput", "worker_cpu", "pg_cpu", "worker_db_cpu"]


def _row(side: str, repeat: int, run: dict[str, Any]) -> dict[str, Any]:
    if run["failed"] or run["stalled"]:
        common.console.print(f"[red]{side}: {run['failed']} failed, {run['stalled']} stalled[/red]")
    cpu = run["cpu_ms_per_refund"]
    return {
        "what": f"{side} {repeat + 1}",
        "side": side,
        "refunds_per_s": run["refunds_per_s"],
        "worker_cpu_ms": cpu["workers"],
        "pg_cpu_ms": cpu["postgres"],
        "worker_db_cpu_ms": round(cpu["workers"] + cpu["postgres"], 3),
        "sim_cpu_ms": cpu["simulator"],
        "machine_cores": run["cores"]["machine"],
        "db_conns": run["db_connections_opened"],
        "failed": run["failed"] + run["stalled"],
        "run": run,
    }


def _summary(layout: str, rows: list[dict[str, Any]], logs: dict[str, int]) -> dict[str, Any]:
    by_side = {side: [r for r in rows if r["side"] == side] for side in SIDES}
    medians = [
        {"what": f"{side} median", "side": side}
        | {c: common.median([r[c] for r in by_side[side]]) for c in _COLUMNS[1:]}
        for side in SIDES
    ]
    paired = []
    for ours, theirs in zip(by_side["project"], by_side["naive"], strict=True):
        paired.append(
            {
                "what": f"pair {len(paired) + 1}",
                "throughput": _ratio(ours["refunds_per_s"], theirs["refunds_per_s"]),
                "worker_cpu": _ratio(ours["worker_cpu_ms"], theirs["worker_cpu_ms"]),
                "pg_cpu": _ratio(ours["pg_cpu_ms"], theirs["pg_cpu_ms"]),
                "worker_db_cpu": _ratio(ours["worker_db_cpu_ms"], theirs["worker_db_cpu_ms"]),
            }
        )
    paired.append(
        {"what": "median"}
        | {c: round(common.median([p[c] for p in paired]), 3) for c in _RATIO_COLUMNS[1:]}
    )
    return {
        "layout": layout,
        "runs": rows,
        "medians": medians,
        "paired": paired,
        "worker_log_lines": logs,
    }


def _ratio(ours: float, theirs: float) -> float:
    return round(ours / theirs, 3) if theirs else float("nan")


if __name__ == "__main__":
    main()
