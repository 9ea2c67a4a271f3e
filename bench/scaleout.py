"""Scale-out: the same refund run with 1 and 2 worker processes; which limit stops the growth.

Each layout (default ``threads:1x16``, ``threads:2x16`` and ``threads:4x16``) gets fresh workers
and the same number of refunds (online, with notification, no latency); runs alternate across
``--repeat`` rounds, medians reported. CPU is accounted per role (workers, simulator, our
PostgreSQL backends, redis-server, this process, everything else on the machine) to say what
saturated: the machine's cores, one worker's core (the GIL), or the simulator's.

    python bench/scaleout.py
    python bench/scaleout.py --refunds 400 --repeat 1      # smoke, < 1 min
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", action="append", default=[])
    parser.add_argument("--refunds", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--payment", default="online", choices=["online", "offline", "mixed"])
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--patch", action="append", default=[])
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--name", default="scaleout")
    args = parser.parse_args()
    layouts = args.layout or ["threads:1x16", "threads:2x16", "threads:4x16"]
    runs: dict[str, list[dict[str, Any]]] = {layout: [] for layout in layouts}
    with common.stack(args.redis_db) as stack:
        per = args.refunds + 100
        orders = common.create_orders(
            stack.simulator, per * len(layouts) * args.repeat, args.payment
        )
        used = 0
        for _ in range(args.repeat):
            for layout in layouts:
                batch = orders[used : used + per]
                used += per
                common.set_latency(stack.simulator, 0)
                common.start_layout(stack, layout, patches=args.patch)
                common.run_refunds(stack, common.refund_requests(batch[:100], f"w{used}"))
                common.set_latency(stack.simulator, args.latency_ms)
                result = common.run_refunds(stack, common.refund_requests(batch[100:], f"s{used}"))
                stack.stop_workers()
                stack.reset_broker()
                runs[layout].append(result)
                common.console.print(
                    f"{layout}: {result['refunds_per_s']}/s, cores {result['cores']}"
                )
    rows = []
    for layout in layouts:
        mine = runs[layout]

        def med(pick: Any, mine: list[dict[str, Any]] = mine) -> float:
            return round(common.median([pick(r) for r in mine]), 2)

        rows.append(
            {
                "what": layout,
                "refunds_per_s": med(lambda r: r["refunds_per_s"]),
                "worker_cores": med(lambda r: r["cores"]["workers"]),
                "simulator_cores": med(lambda r: r["cores"]["simulator"]),
                "postgres_cores": med(lambda r: r["cores"]["postgres"]),
                "redis_cores": med(lambda r: r["cores"]["redis"]),
                "bench_cores": med(lambda r: r["cores"]["bench"]),
                "others_cores": med(lambda r: r["cores"]["others"]),
                "machine_cores": med(lambda r: r["cores"]["machine"]),
                "worker_cpu_ms": med(lambda r: r["cpu_ms_per_refund"]["workers"]),
            }
        )
    base = rows[0]["refunds_per_s"]
    cpus = os.cpu_count() or 1
    for row in rows:
        row["speedup"] = round(row["refunds_per_s"] / base, 2)
        row["limit"] = _limit(row, common.parse_layout(row["what"])[1], cpus)
    columns = [
        "what",
        "refunds_per_s",
        "speedup",
        "worker_cores",
        "simulator_cores",
        "postgres_cores",
        "others_cores",
        "machine_cores",
        "worker_cpu_ms",
        "limit",
    ]
    common.print_table(
        f"scale-out ({args.payment}, notify, latency {args.latency_ms:g} ms, "
        f"{args.refunds} refunds, medians of {args.repeat}) on {cpus} cores",
        rows,
        columns,
    )
    common.write_json(args.name, {"settings": vars(args), "layouts": rows, "runs": runs})


def _limit(row: dict[str, Any], processes: int, cpus: int) -> str:
    """What saturated: the machine, each worker's one core (GIL), the simulator, or nothing."""
    if row["machine_cores"] >= 0.9 * cpus:
        share = row["others_cores"] / row["machine_cores"]
        return f"machine CPU ({share:.0%} others)"
    if row["worker_cores"] >= 0.85 * processes:
        return "worker CPU (one core per process: the GIL)"
    if row["simulator_cores"] >= 0.85:
        return "simulator CPU"
    return "none reached (latency or locks)"


if __name__ == "__main__":
    main()
