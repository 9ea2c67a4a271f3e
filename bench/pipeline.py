"""Pipeline efficiency: end-to-end refunds/s ÷ bare no-op Celery tasks/s, same worker, same run.

One worker process (default: ``--pool threads --concurrency 16 -E``, what ``refund-worker
worker`` runs) drains, in alternation, ``--noops`` no-op tasks and ``--refunds`` refunds
(enqueue → GET order → GET invoice → POST invoice refund → record → notify task → POST emails →
record), against the simulator with no latency. Each repeat gives one ratio; the median is
reported. ``--profile`` then samples the worker with py-spy during one more refund run and
splits its CPU into Celery, database, HTTP and our code (``bench/profile_worker.py``).

``--broker amqp`` runs it on a private RabbitMQ node instead of Redis; ``--broker both`` on each,
with a stack and a worker per broker, alternating repeat by repeat (redis, amqp, redis, ...) so
the machine's noise hits both alike: one table with a median row per broker, one JSON with a
section per broker.

    python bench/pipeline.py                      # ~3 min
    python bench/pipeline.py --refunds 500 --noops 1000 --repeat 1   # smoke, < 1 min
    python bench/pipeline.py --patch NAME         # with a prototype fix (bench/patches.py)
    python bench/pipeline.py --broker both --refunds 1000 --noops 3000 --repeat 2   # ~3 min
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
    common.add_broker_option(parser)
    parser.add_argument("--name", default="pipeline", help="results/NAME.json")
    args = parser.parse_args()
    result = run(args)
    common.write_json(args.name, result)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with common.stacks(args.broker, args.redis_db) as stacks:
        lanes = {broker: _Lane(stack, args) for broker, stack in stacks.items()}
        for repeat in range(args.repeat):  # alternating, so the machine's noise hits each alike
            for lane in lanes.values():
                lane.measure(repeat)
        sections = {broker: lane.section() for broker, lane in lanes.items()}
    several = len(sections) > 1
    common.print_table(
        f"pipeline efficiency ({args.pool}, concurrency {args.concurrency}, "
        f"events {'off' if args.no_events else 'on'}, patches {args.patch or 'none'}, "
        f"broker {args.broker}); target ratio ≥ {TARGET}",
        [
            *(row for section in sections.values() for row in section["runs"]),
            *(
                section["median"] | {"what": f"{broker} median" if several else "median"}
                for broker, section in sections.items()
            ),
        ],
        _COLUMNS,
    )
    for broker, section in sections.items():
        if section["profile"] is not None:
            common.console.print(f"profile on {broker}:")
            profile_worker.print_breakdown(section["profile"])
    settings = {
        "broker": args.broker,
        "pool": args.pool,
        "concurrency": args.concurrency,
        "events": not args.no_events,
        "payment": args.payment,
        "magento_calls_per_refund": next(iter(lanes.values())).calls,
        "patches": args.patch,
        "refunds_per_run": args.refunds,
        "noops_per_run": args.noops,
    }
    return common.by_broker(settings, sections, target_ratio=TARGET)


class _Lane:
    """One broker's stack, orders and warmed-up worker, and the rows measured on it."""

    def __init__(self, stack: common.Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        total = args.refunds * (args.repeat + int(args.profile)) + 200
        self.orders = common.create_orders(stack.simulator, total, args.payment)
        self.calls = common.calls_in_sequence(self.orders)
        self.worker = stack.start_worker(
            pool=args.pool,
            concurrency=args.concurrency,
            events=not args.no_events,
            patches=args.patch,
        )
        common.run_refunds(stack, common.refund_requests(self.orders[:200], "warmup"))
        common.run_noop(stack, min(args.noops, 2000))
        self.used = 200
        self.rows: list[dict[str, Any]] = []

    def _batch(self) -> list[tuple[int, int, bool]]:
        self.used += self.args.refunds
        return self.orders[self.used - self.args.refunds : self.used]

    def measure(self, repeat: int) -> None:
        noop = common.run_noop(self.stack, self.args.noops)
        requests = common.refund_requests(self._batch(), f"r{repeat}")
        refunds = common.run_refunds(self.stack, requests)
        self.rows.append(_row(self.stack.broker, repeat, noop, refunds))
        common.print_table("pipeline efficiency", self.rows[-1:], _COLUMNS)

    def section(self) -> dict[str, Any]:
        """The runs, their medians, and (``--profile``) one more refund run sampled by py-spy."""
        summary = common.median_row("median", self.rows, _MEDIANS)
        profile = None
        if self.args.profile:
            prefork = self.args.pool == "prefork"
            requests = common.refund_requests(self._batch(), "profile")
            with profile_worker.sampling(self.worker.pid, subprocesses=prefork) as sampler:
                common.run_refunds(self.stack, requests)
            profile = profile_worker.breakdown(sampler.stacks(), by_process=prefork)
            profile = profile_worker.scale(profile, summary["worker_cpu_ms"])
        return {
            "runs": self.rows,
            "median": summary,
            "passed": summary["ratio"] >= TARGET,
            "profile": profile,
        }


_COLUMNS = [
    "what",
    "noop_per_s",
    "noop_pub_s",
    "noop_s",
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
    "broker_cpu_ms",
    "machine_cores",
]
#: The figures the median row has.
_MEDIANS = [*_COLUMNS[1:], "main_cores"]


def _row(broker: str, repeat: int, noop: dict[str, Any], refunds: dict[str, Any]) -> dict[str, Any]:
    if refunds["failed"]:
        common.console.print(f"[red]{refunds['failed']} refunds failed[/red]")
    return {
        "what": f"{broker} run {repeat + 1}",
        "noop_per_s": noop["tasks_per_s"],
        "noop_pub_s": noop["publish_s"],
        "noop_s": noop["seconds"],
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
        # the private RabbitMQ node's, or redis-server's (the machine's: others' work included)
        "broker_cpu_ms": refunds["cpu_ms_per_refund"]["rabbit" if broker == "amqp" else "redis"],
        "machine_cores": refunds["cores"]["machine"],
        "failed": refunds["failed"],
        "noop": noop,
        "refund_run": refunds,
    }


if __name__ == "__main__":
    main()
