"""Target 1's floor: what a refund's unavoidable parts cost against the no-op, in the same run.

One worker (``--pool``, ``--concurrency``, events on, as ``pipeline.py``) drains, in turn and
``--repeat`` times over:

* ``noop``: bare no-op tasks, the yardstick;
* ``chain``: a task that only publishes a second task, as a refund publishes its email (two
  messages and one publish from inside a task: Celery's share of a refund);
* ``http``: the same chain making the refund's Magento calls (GET order, GET invoice, POST the
  invoice refund; then POST the email) through the worker's own client, against the simulator;
  no database, no routing, no records;
* ``durable``: the ``http`` chain on refunds enqueued as the pipeline enqueues them, with the
  least a refund must make durable: one write (an autocommit ``UPDATE`` by key) before each
  task's call and one after; no audit rows, order lock, lease, validation or routing;
* ``refund``: the real pipeline (``pipeline.py``'s refund run).

Each rate is divided by the no-op rate of the same round. A refund must make its two messages,
its four calls and those four writes, so the ``durable`` ratio bounds what any refund worker
that never loses a refund nor makes one twice could reach on this machine with this simulator.

    python bench/floor.py --pool prefork --concurrency 4          # ~2 min
    python bench/floor.py --units 300 --noops 1000 --repeat 1     # smoke, < 1 min
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import common
from worker import FLOOR_DURABLE_TASK, FLOOR_REFUND_TASK

MODES = ("chain", "http", "durable")


class DurableFloorPublisher:
    """The intake's publisher, publishing the durable floor's task instead of the refund's."""

    def __init__(self, stack: common.Stack) -> None:
        self.app = common.create_app(stack.settings)

    def publish_refunds(self, refund_ids: Sequence[str]) -> None:
        from worker import publish

        publish(self.app, FLOOR_DURABLE_TASK, refund_ids)

    def publish_notifications(self, refund_ids: Sequence[str]) -> None:
        raise AssertionError("the floor's refunds are new: none has an email to publish")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000, help="chains and refunds per run")
    parser.add_argument("--noops", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--name", default="floor", help="results/NAME.json")
    args = parser.parse_args()
    common.write_json(args.name, run(args))


def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with common.stack(args.redis_db) as stack:
        orders = common.create_orders(stack.simulator, 3 * args.units * args.repeat + 400)
        stack.start_worker(pool=args.pool, concurrency=args.concurrency)
        common.run_refunds(stack, common.refund_requests(orders[:100], "warmup"))
        run_chains(stack, "http", orders[100:200])
        run_chains(stack, "chain", orders[200:300])
        run_durable(stack, orders[300:400])
        common.run_noop(stack, min(args.noops, 2000))
        used = 400
        for repeat in range(args.repeat):
            noop = common.run_noop(stack, args.noops)
            measured = {"noop": _unit(noop["tasks_per_s"], noop["cores"], noop["cpu_ms_per_task"])}
            measured["chain"] = run_chains(stack, "chain", orders[used : used + args.units])
            measured["http"] = run_chains(stack, "http", orders[used : used + args.units])
            used += args.units
            measured["durable"] = run_durable(stack, orders[used : used + args.units])
            used += args.units
            refunds = common.run_refunds(
                stack, common.refund_requests(orders[used : used + args.units], f"r{repeat}")
            )
            used += args.units
            if refunds["failed"] or refunds["stalled"]:
                common.console.print(f"[red]refund run: {refunds['errors']}[/red]")
            measured["refund"] = _unit(
                refunds["refunds_per_s"], refunds["cores"], refunds["cpu_ms_per_refund"]
            )
            rounds.append(measured)
            common.print_table(f"floor, round {repeat + 1}", _rows([measured]), _COLUMNS)
    summary = _median(rounds)
    common.print_table(
        f"floor ({args.pool}, concurrency {args.concurrency}, events on): medians of "
        f"{args.repeat} rounds; target 1 asks ≥ 0.33 of the refund",
        _rows([summary]),
        _COLUMNS,
    )
    return {
        "settings": {
            "pool": args.pool,
            "concurrency": args.concurrency,
            "events": True,
            "units_per_run": args.units,
            "noops_per_run": args.noops,
        },
        "rounds": rounds,
        "median": summary,
    }


def run_chains(stack: common.Stack, mode: str, orders: Sequence[tuple[int, int, bool]]) -> Any:
    """Drain one floor chain per order; rate and CPU per chain."""
    args = [(f"{mode}:{order_id}:{invoice_id}",) for order_id, invoice_id, _ in orders]
    done = common.run_tasks(stack, FLOOR_REFUND_TASK, args)
    return _unit(done["tasks_per_s"], done["cores"], done["cpu_ms_per_task"])


def run_durable(stack: common.Stack, orders: Sequence[tuple[int, int, bool]]) -> Any:
    """Enqueue one refund per order as the pipeline does, drained by the durable floor."""
    publisher = DurableFloorPublisher(stack)
    requests = common.refund_requests(orders, f"durable-{orders[0][0]}")
    done = common.run_refunds(stack, requests, publisher=publisher)
    if done["stalled"]:
        common.console.print(f"[red]durable floor: {done['stalled']} not done[/red]")
    return _unit(done["refunds_per_s"], done["cores"], done["cpu_ms_per_refund"])


def _unit(rate: float, cores: dict[str, float], cpu_ms: dict[str, float]) -> dict[str, Any]:
    return {
        "per_s": round(rate, 1),
        "worker_ms": round(cpu_ms["workers"], 3),
        "main_ms": round(cpu_ms["worker_main"], 3),
        "machine_ms": round(cpu_ms["machine"], 3),
        "pg_ms": round(cpu_ms["postgres"], 3),
        "sim_ms": round(cpu_ms["simulator"], 3),
        "machine_cores": cores["machine"],
        "main_cores": cores["worker_main"],
    }


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = ("noop", *MODES, "refund")
    ratios = {
        kind: common.median([r[kind]["per_s"] / r["noop"]["per_s"] for r in rounds])
        for kind in kinds
    }
    return {
        kind: {
            **{key: common.median([r[kind][key] for r in rounds]) for key in rounds[0][kind]},
            "ratio": round(ratios[kind], 3),
        }
        for kind in kinds
    }


def _rows(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for measured in rounds:
        noop = measured["noop"]["per_s"]
        for kind, unit in measured.items():
            # a round's own ratio; the summary's is the median of the rounds' (as pipeline.py)
            ratio = unit.get("ratio", round(unit["per_s"] / noop, 3))
            rows.append({"what": kind, **unit, "ratio": ratio})
    return rows


_COLUMNS = [
    "what",
    "per_s",
    "ratio",
    "worker_ms",
    "main_ms",
    "pg_ms",
    "sim_ms",
    "machine_ms",
    "machine_cores",
    "main_cores",
]


if __name__ == "__main__":
    main()
