"""Pipeline efficiency: end-to-end refunds/s ÷ bare no-op Celery tasks/s, same worker, same run.

One worker process (default: ``--pool threads --concurrency 16 -E``, what ``refund-worker
worker`` runs) drains, in alternation, ``--noops`` no-op tasks and ``--refunds`` refunds
(enqueue → GET order → GET invoice → POST invoice refund → record → notify task → POST emails →
record), against the simulator with no latency. Each repeat gives one ratio; the median is
reported. ``--profile`` then samples the worker with py-spy during one more refund run and
splits its CPU into Celery, database, HTTP and our code (``bench/profile_worker.py``).

    python bench/pipeline.py                      # ~3 min
    python bench/pipeline.py --refunds 500 --noops 1000 --repeat 1   # smoke, < 1 min
    python bench/pipeline.py --patch NAME         # with a prototype fix (bench/patches.py)
"""

from __future__ import annotations

import argparse
from typing import Any

import common
import profile_worker

TARGET = 0.33


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refunds", type=int, default=3000)
    parser.add_argument("--noops", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pool", default="threads")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-events", action="store_true", help="run both without -E")
    parser.add_argument("--payment", default="online", choices=["online", "offline", "mixed"])
    parser.add_argument("--patch", action="append", default=[], help="bench/patches.py name")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker once more")
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--name", default="pipeline", help="results/NAME.json")
    args = parser.parse_args()
    result = run(args)
    common.write_json(args.name, result)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    with common.stack(args.redis_db) as stack:
        total = args.refunds * (args.repeat + int(args.profile)) + 200
        orders = common.create_orders(stack.simulator, total, args.payment)
        worker = stack.start_worker(
            pool=args.pool,
            concurrency=args.concurrency,
            events=not args.no_events,
            patches=args.patch,
        )
        common.run_refunds(stack, common.refund_requests(orders[:200], "warmup"))
        common.run_noop(stack, min(args.noops, 2000))
        used = 200
        for repeat in range(args.repeat):
            noop = common.run_noop(stack, args.noops)
            batch = orders[used : used + args.refunds]
            used += args.refunds
            refunds = common.run_refunds(stack, common.refund_requests(batch, f"r{repeat}"))
            rows.append(_row(repeat, noop, refunds))
            common.print_table("pipeline efficiency", rows[-1:], _COLUMNS)
        if args.profile:
            batch = orders[used : used + args.refunds]
            prefork = args.pool == "prefork"
            with profile_worker.sampling(worker.pid, subprocesses=prefork) as sampler:
                refunds = common.run_refunds(stack, common.refund_requests(batch, "profile"))
            profile = profile_worker.breakdown(sampler.stacks(), by_process=prefork)
        calls = common.calls_in_sequence(orders[:total])
    ratio = common.median([row["ratio"] for row in rows])
    summary = {
        "what": "median",
        "noop_per_s": common.median([row["noop_per_s"] for row in rows]),
        "refunds_per_s": common.median([row["refunds_per_s"] for row in rows]),
        "ratio": round(ratio, 3),
        "noop_cpu_ms": common.median([row["noop_cpu_ms"] for row in rows]),
        "worker_cpu_ms": common.median([row["worker_cpu_ms"] for row in rows]),
        "noop_main_ms": common.median([row["noop_main_ms"] for row in rows]),
        "main_ms": common.median([row["main_ms"] for row in rows]),
        "main_ratio": common.median([row["main_ratio"] for row in rows]),
        "noop_main_cores": common.median([row["noop_main_cores"] for row in rows]),
        "main_cores": common.median([row["main_cores"] for row in rows]),
        "pg_cpu_ms": common.median([row["pg_cpu_ms"] for row in rows]),
        "sim_cpu_ms": common.median([row["sim_cpu_ms"] for row in rows]),
        "machine_cores": common.median([row["machine_cores"] for row in rows]),
    }
    common.print_table(
        f"pipeline efficiency ({args.pool}, concurrency {args.concurrency}, "
        f"events {'off' if args.no_events else 'on'}, patches {args.patch or 'none'}); "
        f"target ratio ≥ {TARGET}",
        [*rows, summary],
        _COLUMNS,
    )
    if profile is not None:
        worker_ms = summary["worker_cpu_ms"]
        profile = profile_worker.scale(profile, worker_ms)
        profile_worker.print_breakdown(profile)
    return {
        "settings": {
            "pool": args.pool,
            "concurrency": args.concurrency,
            "events": not args.no_events,
            "payment": args.payment,
            "magento_calls_per_refund": calls,
            "patches": args.patch,
            "refunds_per_run": args.refunds,
            "noops_per_run": args.noops,
        },
        "runs": rows,
        "median": summary,
        "target_ratio": TARGET,
        "passed": ratio >= TARGET,
        "profile": profile,
    }


_COLUMNS = [
    "what",
    "noop_per_s",
    "refunds_per_s",
    "ratio",
    "noop_cpu_ms",
    "worker_cpu_ms",
    "noop_main_ms",
    "main_ms",
    "main_ratio",
    "noop_main_cores",
    "pg_cpu_ms",
    "sim_cpu_ms",
    "machine_cores",
]


def _row(repeat: int, noop: dict[str, Any], refunds: dict[str, Any]) -> dict[str, Any]:
    if refunds["failed"]:
        common.console.print(f"[red]{refunds['failed']} refunds failed[/red]")
    return {
        "what": f"run {repeat + 1}",
        "noop_per_s": noop["tasks_per_s"],
        "refunds_per_s": refunds["refunds_per_s"],
        "ratio": round(refunds["refunds_per_s"] / noop["tasks_per_s"], 3),
        "noop_cpu_ms": noop["worker_cpu_ms_per_task"],
        "worker_cpu_ms": refunds["cpu_ms_per_refund"]["workers"],
        # The main process alone (with prefork: the consumer, without the children). Its CPU
        # per no-op ÷ its CPU per refund is the ratio when it, not the cores, is the bound.
        "noop_main_ms": noop["main_cpu_ms_per_task"],
        "main_ms": refunds["cpu_ms_per_refund"]["worker_main"],
        "main_ratio": round(
            noop["main_cpu_ms_per_task"] / max(refunds["cpu_ms_per_refund"]["worker_main"], 1e-9),
            3,
        ),
        "noop_main_cores": noop["cores"]["worker_main"],
        "main_cores": refunds["cores"]["worker_main"],
        "pg_cpu_ms": refunds["cpu_ms_per_refund"]["postgres"],
        "sim_cpu_ms": refunds["cpu_ms_per_refund"]["simulator"],
        "machine_cores": refunds["cores"]["machine"],
        "failed": refunds["failed"],
        "noop": noop,
        "refund_run": refunds,
    }


if __name__ == "__main__":
    main()
