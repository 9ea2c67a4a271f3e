"""A/B: the pipeline with prototype fixes (``bench/patches.py``) against the code as it is.

Each variant is a comma-separated list of patches (``base`` = none, ``all`` = every one),
optionally with its own pool and concurrency after ``@`` (``base@prefork:3``). In
each round every variant gets a fresh worker process, a no-op run and a refund run, in turn, so
the noise of the shared machine falls on all of them alike; medians over ``--repeat`` rounds.

    python bench/compare.py --variant base --variant kombu-client-cache
    python bench/compare.py --refunds 300 --noops 1000 --repeat 1 --variant base --variant all
    python bench/compare.py --variant base@prefork:3 --variant base@prefork:4
"""

from __future__ import annotations

import argparse
from typing import Any

import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--refunds", type=int, default=2000)
    parser.add_argument("--noops", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pool", default="threads")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-events", action="store_true")
    parser.add_argument("--payment", default="online", choices=["online", "offline", "mixed"])
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--name", default="compare")
    args = parser.parse_args()
    variants = args.variant or ["base", "all"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with common.stack(args.redis_db) as stack:
        per_variant = args.refunds + 100
        orders = common.create_orders(
            stack.simulator, per_variant * len(variants) * args.repeat, args.payment
        )
        used = 0
        for round_ in range(args.repeat):
            for variant in variants:
                names, _, layout = variant.partition("@")
                patches = [] if names == "base" else names.split(",")
                pool, _, concurrency = layout.partition(":")
                stack.start_worker(
                    pool=pool or args.pool,
                    concurrency=int(concurrency or args.concurrency),
                    events=not args.no_events,
                    patches=patches,
                )
                batch = orders[used : used + per_variant]
                used += per_variant
                common.run_refunds(stack, common.refund_requests(batch[:100], f"w{used}"))
                noop = common.run_noop(stack, args.noops)
                refunds = common.run_refunds(stack, common.refund_requests(batch[100:], f"v{used}"))
                stack.stop_workers()
                stack.reset_broker()
                runs[variant].append({"noop": noop, "refunds": refunds})
                common.console.print(
                    f"round {round_ + 1} {variant}: {refunds['refunds_per_s']}/s, worker "
                    f"{refunds['cpu_ms_per_refund']['workers']} ms/refund, noop "
                    f"{noop['tasks_per_s']}/s, failed {refunds['failed']}"
                )
    rows = [_summary(v, runs[v]) for v in variants]
    base = rows[0]
    for row in rows:
        row["cpu_saved_ms"] = round(base["worker_cpu_ms"] - row["worker_cpu_ms"], 2)
        row["speedup"] = round(row["refunds_per_s"] / base["refunds_per_s"], 2)
    common.print_table(
        f"prototype fixes, medians of {args.repeat} rounds ({args.pool}, concurrency "
        f"{args.concurrency}, events {'off' if args.no_events else 'on'}, {args.payment})",
        rows,
    )
    common.write_json(args.name, {"variants": rows, "runs": runs, "settings": vars(args)})


def _summary(variant: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(pick: Any) -> float:
        return round(common.median([pick(r) for r in runs]), 3)

    return {
        "what": variant,
        "refunds_per_s": med(lambda r: r["refunds"]["refunds_per_s"]),
        "noop_per_s": med(lambda r: r["noop"]["tasks_per_s"]),
        "ratio": med(lambda r: r["refunds"]["refunds_per_s"] / r["noop"]["tasks_per_s"]),
        "worker_cpu_ms": med(lambda r: r["refunds"]["cpu_ms_per_refund"]["workers"]),
        "pg_cpu_ms": med(lambda r: r["refunds"]["cpu_ms_per_refund"]["postgres"]),
        "machine_cores": med(lambda r: r["refunds"]["cores"]["machine"]),
        "failed": sum(r["refunds"]["failed"] for r in runs),
    }


if __name__ == "__main__":
    main()
