"""Steady memory: worker RSS after ``--refunds`` refunds within 10% of after the first 10%.

One worker process (``--layout``, default ``threads:1x16``, as `refund-worker worker`) processes
refunds fed in chunks of ``--chunk`` (a steady backlog, not one huge queue); RSS of the worker
(and its children) is read after each chunk has settled. The cheap path by default: offline
payments, no notification (GET order + POST order refund), no latency. Target: RSS at the end ≤
1.10 × RSS after the first tenth.

    python bench/memory.py                         # 100,000 refunds: long (tens of minutes)
    python bench/memory.py --refunds 3000 --chunk 300   # smoke, ~1 min
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import common

TARGET = 1.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refunds", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=5_000)
    parser.add_argument("--layout", default="threads:1x16")
    parser.add_argument("--payment", default="offline", choices=["online", "offline", "mixed"])
    parser.add_argument("--notify", action="store_true")
    parser.add_argument("--patch", action="append", default=[])
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--name", default="memory")
    args = parser.parse_args()
    first = args.refunds // 10
    samples: list[dict[str, Any]] = []
    started = time.perf_counter()
    with common.stack(args.redis_db, "memory") as stack:
        common.start_layout(stack, args.layout, patches=args.patch)
        start_rss = sum(w.rss_mb() for w in stack.workers)
        samples.append({"what": "started", "refunds": 0, "rss_mb": round(start_rss, 1)})
        done = 0
        while done < args.refunds:
            count = min(args.chunk, args.refunds - done)
            orders = common.create_orders(stack.simulator, count, args.payment)
            result = common.run_refunds(
                stack, common.refund_requests(orders, f"m{done}", args.notify)
            )
            done += count
            rss = sum(w.rss_mb() for w in stack.workers)
            samples.append(
                {
                    "what": f"after {done:,}",
                    "refunds": done,
                    "rss_mb": round(rss, 1),
                    "refunds_per_s": result["refunds_per_s"],
                    "worker_cpu_ms": result["cpu_ms_per_refund"]["workers"],
                    "failed": result["failed"],
                    "elapsed_s": round(time.perf_counter() - started),
                }
            )
            common.print_table("worker memory", samples[-1:], _COLUMNS)
    at_first = next(s for s in samples if s["refunds"] >= first)
    at_end = samples[-1]
    growth = at_end["rss_mb"] / at_first["rss_mb"]
    common.print_table(
        f"worker RSS ({args.layout}, {args.payment}, notify {args.notify}): "
        f"{at_end['rss_mb']} MiB after {at_end['refunds']:,} vs {at_first['rss_mb']} MiB after "
        f"{at_first['refunds']:,} = ×{growth:.3f}; target ≤ ×{TARGET}",
        samples,
        _COLUMNS,
    )
    common.write_json(
        args.name,
        {
            "settings": vars(args),
            "samples": samples,
            "rss_first_mb": at_first["rss_mb"],
            "rss_end_mb": at_end["rss_mb"],
            "growth": round(growth, 4),
            "target": TARGET,
            "passed": growth <= TARGET,
        },
    )


_COLUMNS = ["what", "rss_mb", "refunds_per_s", "worker_cpu_ms", "failed", "elapsed_s"]


if __name__ == "__main__":
    main()
