"""The fault run: push refunds through real workers while killing them, restarting Redis,
breaking the database and making Magento commit-then-fail; then prove nothing was lost or doubled.

    python bench/fault_run.py --refunds 1000 --workers 2
    python bench/fault_run.py --shops 3      # three shops, one answering 503 for a minute
    python bench/fault_run.py --broker both  # Redis, then a private RabbitMQ node (restarted)

Needs PostgreSQL on 127.0.0.1:5432 (a database of its own is created and dropped) and the
``redis-server`` binary (a private instance on a free port is started, restarted and stopped; the
machine's Redis is never touched). Prints the table, writes ``bench/results/fault_run.json`` and
exits 1 when any invariant is broken. See ``refund_worker.testing.faults`` for what each fault does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refund_worker.testing.faults import FaultConfig, ShopsConfig, run_fault_run  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fault_run.json"


SHOPS_RESULTS = ROOT / "bench" / "results" / "fault_run_shops.json"


def shops_main(argv: list[str]) -> int:
    """``--shops N``: the run across N shops, the last answering 503 for ``--sick-seconds``,
    against a run without its refunds (``refund_worker.testing.faults.run_shops_comparison``)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from shops import parser, run  # bench/shops.py: the same run, its own defaults

    parsed = parser("The fault run across several shops, one of them answering 503", ShopsConfig())
    parsed.add_argument("--output", type=Path, default=SHOPS_RESULTS)
    args = parsed.parse_args(argv)
    return run(args, args.output)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg == "--shops" or arg.startswith("--shops=") for arg in argv):
        return shops_main(argv)
    defaults = FaultConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refunds", type=int, default=defaults.refunds)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument(
        "--concurrency", type=int, default=defaults.concurrency, help="threads per worker process"
    )
    parser.add_argument(
        "--intake-seconds",
        type=float,
        default=defaults.intake_seconds,
        help="spread the refunds over this long",
    )
    parser.add_argument(
        "--chaos-seconds",
        type=float,
        default=defaults.chaos_seconds,
        help="break things until this long after the first refund",
    )
    parser.add_argument("--settle-timeout", type=float, default=defaults.settle_timeout)
    parser.add_argument("--commit-fault-share", type=float, default=defaults.commit_fault_share)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--no-duplicates", action="store_true", help="publish each message once (default: twice)"
    )
    parser.add_argument(
        "--no-webhooks", action="store_true", help="no webhook endpoint and receiver"
    )
    parser.add_argument(
        "--webhook-failure-share",
        type=float,
        default=defaults.webhook_failure_share,
        help="share of webhook deliveries the receiver answers with a 500",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where logs go (default: a new temporary directory)",
    )
    parser.add_argument("--broker", choices=("redis", "amqp", "both"), default="redis")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    brokers = ("redis", "amqp") if args.broker == "both" else (args.broker,)
    codes = [run_one(args, argv, broker) for broker in brokers]
    return max(codes)


def merge_result(path: Path, broker: str, payload: dict[str, Any]) -> None:
    """One results file, a section per broker (an older file without sections is Redis's)."""
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        existing = {}
    if "figures" in existing:
        existing = {"redis": existing}
    existing[broker] = payload
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=2, default=str) + "\n")


def run_one(args: argparse.Namespace, argv: list[str], broker: str) -> int:
    """One run on ``broker``; prints its table and merges its section into ``--output``."""
    config = FaultConfig(
        refunds=args.refunds,
        workers=args.workers,
        concurrency=args.concurrency,
        intake_seconds=args.intake_seconds,
        chaos_seconds=args.chaos_seconds,
        settle_timeout=args.settle_timeout,
        commit_fault_share=args.commit_fault_share,
        seed=args.seed,
        duplicate_messages=not args.no_duplicates,
        webhooks=not args.no_webhooks,
        webhook_failure_share=args.webhook_failure_share,
        broker=broker,
    )
    started = time.monotonic()
    report = run_fault_run(
        config, args.workdir, progress=lambda line: print(f"· {line}", flush=True)
    )
    print()
    print(report.table())
    print()
    if report.failures:
        print("failed permanently, by reason:")
        for reason, count in report.failures.items():
            print(f"  {count:5d}  {reason}")
    chaos = report.chaos
    print(
        f"broker: {broker}; kills: {chaos['kills']}; broker restarts: {chaos['redis_restarts']}; "
        f"db connections terminated: {chaos['db_connections_terminated']}; "
        f"unexpected process exits: {len(chaos['unexpected_exits'])}"
    )
    print(f"faults fired: {chaos['faults_fired']}")
    print(f"worker logs: {chaos['log_counts']} (in {report.workdir})")
    broken = {k: v for k, v in report.violations.items() if v}
    if broken:
        print(f"violations: {json.dumps(broken, indent=1, default=str)[:4000]}")
    payload = report.to_json()
    payload["command"] = "python bench/fault_run.py " + " ".join(argv)
    payload["wall_seconds"] = round(time.monotonic() - started, 1)
    merge_result(args.output, broker, payload)
    print(f"{'OK' if report.ok else 'INVARIANT BROKEN'} on {broker}; wrote {args.output}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
