"""Celery's own CPU per message: a no-op run against a refund run on the same worker, sampled.

One worker process (threads, ``--concurrency``, events on) drains ``--noops`` no-op tasks, then
``--refunds`` refunds with their notification (as in ``pipeline.py``), each under py-spy
(``--gil``). Samples are split by thread (the consumer's main thread, the pool's threads) and by
category (``profile_worker.classify``), and counted per no-op task and per refund; the Celery
frames are then ranked by how much more a refund's two messages take than two no-op messages.

    python bench/celery_share.py                         # ~4 min
    python bench/celery_share.py --refunds 300 --noops 1500   # smoke
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

import common
import profile_worker

CELERY_PACKAGES = {"celery", "kombu", "billiard", "vine", "redis", "amqp", "click"}


def _thread(stack: tuple[str, ...]) -> str:
    """'pool' for the pool's threads, 'main' for the consumer's, 'unknown' for a stack that
    holds neither root (py-spy ``--nonblocking`` sometimes reads a stack cut short)."""
    if any(f.split(" (", 1)[0].endswith("_worker") and "futures/thread.py" in f for f in stack):
        return "pool"
    if any(f.split(" (", 1)[0].endswith("worker_main") for f in stack):
        return "main"
    return "unknown"


def _celery_path(stack: tuple[str, ...]) -> str:
    """The outermost and the two innermost Celery frames: what Celery was doing."""
    path = []
    for frame in stack:
        package, function = profile_worker._module(frame)
        if package in CELERY_PACKAGES:
            path.append(f"{package}.{function}")
    return " > ".join(path[:1] + path[-2:]) if path else "?"


def tally(stacks: Counter[tuple[str, ...]], units: int) -> dict[str, Any]:
    """Samples per unit (task or refund) by (thread, category), and Celery's by frame path."""
    by_kind: Counter[str] = Counter()
    by_path: Counter[str] = Counter()
    for stack, count in stacks.items():
        category, _ = profile_worker.classify(stack)
        by_kind[f"{_thread(stack)} / {category}"] += count
        if category == "Celery":
            by_path[_celery_path(stack)] += count
    return {
        "samples": sum(stacks.values()),
        "per_unit": {kind: count / units for kind, count in by_kind.most_common()},
        "celery_paths": {path: count / units for path, count in by_path.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refunds", type=int, default=2000)
    parser.add_argument("--noops", type=int, default=8000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--name", default="celery-share")
    args = parser.parse_args()
    with common.stack(args.redis_db, "celery-share") as stack:
        orders = common.create_orders(stack.simulator, args.refunds + 200, "online")
        worker = stack.start_worker(pool="threads", concurrency=args.concurrency, events=True)
        common.run_refunds(stack, common.refund_requests(orders[:200], "warmup"))
        common.run_noop(stack, min(args.noops, 2000))
        with profile_worker.sampling(worker.pid) as sampler:
            noop_run = common.run_noop(stack, args.noops)
        noop = tally(sampler.stacks(), args.noops)
        with profile_worker.sampling(worker.pid) as sampler:
            refund_run = common.run_refunds(stack, common.refund_requests(orders[200:], "share"))
        refund = tally(sampler.stacks(), args.refunds)

    kinds = sorted(set(noop["per_unit"]) | set(refund["per_unit"]))
    kind_rows = [
        {
            "thread / category": kind,
            "two no-op tasks": round(2 * noop["per_unit"].get(kind, 0.0), 4),
            "one refund": round(refund["per_unit"].get(kind, 0.0), 4),
        }
        for kind in kinds
    ]
    common.print_table("samples per refund against two no-op tasks", kind_rows)
    paths = set(noop["celery_paths"]) | set(refund["celery_paths"])

    def excess(path: str) -> float:
        return refund["celery_paths"].get(path, 0.0) - 2 * noop["celery_paths"].get(path, 0.0)

    path_rows = [
        {
            "Celery frames (outermost > innermost two)": path[:100],
            "two no-ops": round(2 * noop["celery_paths"].get(path, 0.0), 4),
            "refund": round(refund["celery_paths"].get(path, 0.0), 4),
            "excess": round(excess(path), 4),
        }
        for path in sorted(paths, key=excess, reverse=True)[:25]
    ]
    common.print_table("Celery samples: where a refund's two messages cost more", path_rows)
    summary = {
        "noop_per_s": noop_run["tasks_per_s"],
        "noop_cpu_ms": noop_run["worker_cpu_ms_per_task"],
        "refunds_per_s": refund_run["refunds_per_s"],
        "worker_cpu_ms_per_refund": refund_run["cpu_ms_per_refund"].get("workers"),
        "main_celery_two_noops": round(2 * noop["per_unit"].get("main / Celery", 0.0), 4),
        "main_celery_refund": round(refund["per_unit"].get("main / Celery", 0.0), 4),
    }
    common.print_table("summary", [summary])
    common.write_json(
        args.name,
        {"settings": vars(args), "summary": summary, "kinds": kind_rows, "paths": path_rows},
    )


if __name__ == "__main__":
    main()
