"""Latency-bound throughput: 200 ms on every Magento call; refunds/s ÷ the ceiling.

The ceiling is ``concurrency / (latency × Magento calls one refund makes in sequence)``: for an
online refund with a notification that is GET order, GET invoice, POST refund, POST email (4).
Each layout (``POOL:PROCESSESxCONCURRENCY[+patch,...]``) gets fresh workers; ``--seconds``
sizes a run to last about that long at the ceiling. Target: ≥ 0.9 at total concurrency ≥ 64.

Besides the whole run's rate, each row says where the threads' time went (``call_ms``: a Magento
call as the client timed it; ``outside_calls_ms``: per refund, thread time not in a call), the
rate in the middle 80% of the calls (``middle_per_s``: without the start and the drain), the
calls per second over the run (``timeline``, in the JSON) and how long emails waited after their
refund (``email_delay_s_median``).

``--broker amqp`` runs on a private RabbitMQ node instead of Redis; ``--broker both`` runs each
layout on each broker in turn (a stack per broker), a row per broker (and, with ``--repeat`` > 1,
a median row per layout and broker), one JSON with a section per broker.

    python bench/latency.py                                   # threads and gevent, 2x32 and 1x64
    python bench/latency.py --layout threads:2x32 --seconds 8 --repeat 1    # smoke, < 1 min
    python bench/latency.py --broker both --layout threads:4x16 --seconds 45 --repeat 2  # ~5 min
"""

from __future__ import annotations

import argparse
from typing import Any

import common
from sqlalchemy import text

TARGET = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", action="append", default=[])
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--payment", default="online", choices=["online", "offline", "mixed"])
    parser.add_argument("--no-notify", action="store_true")
    parser.add_argument("--patch", action="append", default=[], help="for every layout")
    parser.add_argument("--redis-db", type=int, default=7)
    common.add_broker_option(parser)
    parser.add_argument("--name", default="latency")
    args = parser.parse_args()
    layouts = args.layout or ["threads:1x64", "threads:2x32", "gevent:1x64", "gevent:2x32"]
    notify = not args.no_notify
    runs: dict[str, list[dict[str, Any]]] = {}
    with common.stacks(args.broker, args.redis_db) as stacks:
        probe = common.create_orders(next(iter(stacks.values())).simulator, 2, args.payment)
        calls = common.calls_in_sequence(probe, notify)
        sizes = [  # (layout, refunds it makes in --seconds at the ceiling)
            (name, int(_ceiling(name, args.latency_ms, calls)[1] * args.seconds))
            for name in layouts
        ]
        needed = sum(size + 100 for _, size in sizes) * args.repeat
        orders = {
            broker: common.create_orders(stack.simulator, needed, args.payment)
            for broker, stack in stacks.items()
        }
        used = 0
        for _ in range(args.repeat):
            for name, count in sizes:
                for broker, stack in stacks.items():  # alternating, so noise hits each alike
                    batch = orders[broker][used : used + count + 100]
                    row = _run(stack, args, name, batch, calls, f"{used}")
                    runs.setdefault(broker, []).append(row)
                    common.print_table("latency-bound throughput", [row], _COLUMNS)
                used += count + 100
    rows = [row for broker_rows in runs.values() for row in broker_rows]
    if args.repeat > 1:
        rows += [
            common.median_row(f"{name} median", same, _COLUMNS[2:]) | {"broker": broker}
            for broker, broker_rows in runs.items()
            for name in layouts
            if (same := [row for row in broker_rows if row["what"] == name])
        ]
    common.print_table(
        f"latency-bound throughput ({args.broker}): {args.latency_ms:g} ms per Magento call, "
        f"{calls:g} calls per refund in sequence; target ratio ≥ {TARGET} at concurrency ≥ 64",
        rows,
        _COLUMNS,
    )
    sections = {
        broker: {
            "runs": broker_rows,
            "best": {
                k: v for k, v in max(broker_rows, key=lambda r: r["ratio"]).items() if k != "run"
            },
            "passed": any(r["ratio"] >= TARGET and r["concurrency"] >= 64 for r in broker_rows),
        }
        for broker, broker_rows in runs.items()
    }
    settings = vars(args) | {"layouts": layouts, "calls_in_sequence": calls}
    common.write_json(args.name, common.by_broker(settings, sections, target_ratio=TARGET))


def _run(
    stack: common.Stack,
    args: argparse.Namespace,
    name: str,
    batch: list[tuple[int, int, bool]],
    calls: float,
    run: str,
) -> dict[str, Any]:
    """One layout (``POOL:PROCESSESxCONCURRENCY[+patch,...]``) on fresh workers: 100 refunds to
    warm up without latency, then ``batch``'s others at ``--latency-ms`` a call."""
    layout, _, extra = name.partition("+")
    total, ceiling = _ceiling(name, args.latency_ms, calls)
    notify = not args.no_notify
    common.set_latency(stack.simulator, 0)
    patches = [*args.patch, *filter(None, extra.split(","))]
    common.start_layout(stack, layout, patches=patches)
    common.run_refunds(stack, common.refund_requests(batch[:100], f"w{run}", notify))
    common.set_latency(stack.simulator, args.latency_ms)
    result = common.run_refunds(stack, common.refund_requests(batch[100:], f"l{run}", notify))
    where = _thread_time(stack, total, calls, result)
    stack.stop_workers()
    stack.reset_broker()
    return {
        "what": name,
        "broker": stack.broker,
        "concurrency": total,
        "calls_in_sequence": calls,
        "ceiling_per_s": round(ceiling, 1),
        "refunds_per_s": result["refunds_per_s"],
        "ratio": round(result["refunds_per_s"] / ceiling, 3),
        "worker_cpu_ms": result["cpu_ms_per_refund"]["workers"],
        "worker_cores": result["cores"]["workers"],
        "machine_cores": result["cores"]["machine"],
        "failed": result["failed"],
        "stalled": result["stalled"],
        **where,
        "run": result,
    }


def _ceiling(name: str, latency_ms: float, calls: float) -> tuple[int, float]:
    """A layout's threads, and its refunds/s at the ceiling."""
    _, processes, concurrency = common.parse_layout(name.partition("+")[0])
    threads = processes * concurrency
    return threads, threads / (latency_ms / 1000 * calls)


def _thread_time(
    stack: common.Stack, threads: int, calls_per_refund: float, result: dict[str, Any]
) -> dict[str, Any]:
    """Where the threads' time went, per refund: in Magento calls (as the client timed them,
    from the audit rows) and outside them (claims, records, Celery, idle at start and end)."""
    with stack.database.engine.connect() as connection:
        calls, total_ms = connection.execute(
            text("SELECT count(*), coalesce(sum(duration_ms), 0) FROM magento_calls")
        ).one()
        recorded = sorted(
            connection.execute(text("SELECT created_at FROM magento_calls")).scalars()
        )
        # How long each email waited after its refund's outcome was recorded.
        delays = sorted(
            delay
            for delay in connection.execute(
                text(
                    "SELECT EXTRACT(EPOCH FROM max(created_at) FILTER "
                    "(WHERE operation = 'creditmemo_emails') - max(created_at) FILTER "
                    "(WHERE operation <> 'creditmemo_emails')) FROM magento_calls "
                    "GROUP BY refund_id"
                )
            ).scalars()
            if delay is not None
        )
    refunds = max(result["refunds"] - result["stalled"], 1)
    middle = recorded[len(recorded) // 10 : len(recorded) * 9 // 10]
    span = (middle[-1] - middle[0]).total_seconds() if len(middle) > 1 else 0
    thread_ms = threads * result["seconds"] * 1000 / refunds
    return {
        "call_ms": round(total_ms / max(calls, 1), 1),
        "thread_ms_per_refund": round(thread_ms, 1),
        "in_calls_ms": round(total_ms / refunds, 1),
        "outside_calls_ms": round(thread_ms - total_ms / refunds, 1),
        # calls recorded in each second after the first, in refunds (4 calls each)
        "timeline": _per_second(recorded, calls_per_refund),
        # calls recorded per second in the middle 80% of them, in refunds (4 calls each)
        "middle_per_s": round((len(middle) - 1) / span / calls_per_refund, 1) if span else None,
        "email_delay_s_median": round(float(delays[len(delays) // 2]), 2) if delays else None,
        "email_delay_s_max": round(float(delays[-1]), 2) if delays else None,
    }


def _per_second(moments: list[Any], calls_per_refund: float) -> list[float]:
    if not moments:
        return []
    counts = [0] * (int((moments[-1] - moments[0]).total_seconds()) + 1)
    for moment in moments:
        counts[int((moment - moments[0]).total_seconds())] += 1
    return [round(c / calls_per_refund, 1) for c in counts]


_COLUMNS = [
    "what",
    "broker",
    "concurrency",
    "ceiling_per_s",
    "refunds_per_s",
    "ratio",
    "worker_cpu_ms",
    "worker_cores",
    "machine_cores",
    "failed",
    "stalled",
    "call_ms",
    "outside_calls_ms",
    "middle_per_s",
    "email_delay_s_median",
]


if __name__ == "__main__":
    main()
