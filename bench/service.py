"""CPU per refund of the domain path alone, for comparing prototype fixes on a noisy machine.

No Celery: one thread calls ``RefundService.process`` then ``NotificationService.send`` for
each refund (rows stored by ``intake.enqueue_refunds`` with a publisher that publishes
nothing), against the private PostgreSQL database and the simulator, and reads its own thread
CPU time (``time.thread_time``). Every variant (``base``, a patch, ``a,b`` or ``all``) runs in
its own process, in rounds, interleaved; the minimum over rounds is reported, which is what
other users of the machine disturb least. The worker adds Celery's own cost (two tasks and
one publish per refund) and the contention of its 32 threads on top of this.

    python bench/service.py --variant base --variant kombu-client-cache
    python bench/service.py --refunds 100 --rounds 1 --variant base --variant all   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import common


def child(refunds: int, key: str) -> None:
    """In the variant's process: build the runtime, store refunds, process and notify them."""
    import patches

    patches.apply(os.environ.get("BENCH_PATCHES", ""))
    from refund_worker.intake import enqueue_refunds, validate_request
    from refund_worker.runtime import Runtime
    from refund_worker.settings import get_settings

    orders = json.loads(sys.stdin.read())
    runtime = Runtime.from_settings(get_settings())

    class NoPublish:
        def publish_refunds(self, refund_ids: Any) -> None:
            pass

    requests = [validate_request(r) for r in common.refund_requests(orders, key)]
    receipts = enqueue_refunds(requests, database=runtime.database, publisher=NoPublish())
    ids = [r.refund_id for r in receipts]  # type: ignore[union-attr]
    warm, measured = ids[: len(ids) - refunds], ids[len(ids) - refunds :]
    for refund_id in warm:
        runtime.refunds.process(refund_id)
        runtime.notifications.send(refund_id)
    profiler = None
    if os.environ.get("BENCH_CPROFILE"):
        import cProfile

        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
    started_cpu, started = time.thread_time(), time.perf_counter()
    outcomes: dict[str, int] = {}
    for refund_id in measured:
        result = runtime.refunds.process(refund_id)
        outcomes[str(result.status)] = outcomes.get(str(result.status), 0) + 1
        runtime.notifications.send(refund_id)
    cpu, wall = time.thread_time() - started_cpu, time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.environ["BENCH_CPROFILE"])
    print(json.dumps({"cpu_ms": 1000 * cpu / refunds, "wall_ms": 1000 * wall / refunds,
                      "outcomes": outcomes}))  # fmt: skip
    runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--refunds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--payment", default="online", choices=["online", "offline", "mixed"])
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--name", default="service")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.refunds, args.child)
        return
    variants = args.variant or ["base", "all"]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with common.stack(args.redis_db, "service") as stack:
        per = args.refunds + args.warmup
        orders = common.create_orders(
            stack.simulator, per * len(variants) * args.rounds, args.payment
        )
        used = 0
        for round_ in range(args.rounds):
            for variant in variants:
                batch = orders[used : used + per]
                used += per
                env = dict(stack.env, BENCH_PATCHES="" if variant == "base" else variant)
                process = subprocess.run(
                    [sys.executable, __file__, "--child", f"s{used}", "--refunds",
                     str(args.refunds)],
                    input=json.dumps(batch), env=env, capture_output=True, text=True,
                    check=False,
                )  # fmt: skip
                if process.returncode:
                    raise RuntimeError(f"{variant}: {process.stderr[-3000:]}")
                result = json.loads(process.stdout.strip().splitlines()[-1])
                results[variant].append(result)
                common.console.print(
                    f"round {round_ + 1} {variant}: {result['cpu_ms']:.2f} ms CPU/refund "
                    f"{result['outcomes']}"
                )
    rows = []
    for variant in variants:
        cpu = [r["cpu_ms"] for r in results[variant]]
        rows.append({"what": variant, "cpu_ms_min": round(min(cpu), 3),
                     "cpu_ms_median": round(common.median(cpu), 3)})  # fmt: skip
    base = rows[0]["cpu_ms_min"]
    for row in rows:
        row["saved_ms"] = round(base - row["cpu_ms_min"], 3)
        row["saved_pct"] = f"{(base - row['cpu_ms_min']) / base:.1%}"
    common.print_table(
        f"domain path CPU per refund (process + notify, one thread, no Celery, "
        f"{args.payment}); min of {args.rounds} rounds of {args.refunds}",
        rows,
    )
    common.write_json(args.name, {"settings": vars(args), "variants": rows, "runs": results})


if __name__ == "__main__":
    main()
