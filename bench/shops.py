"""Several shops: does a sick shop slow the healthy ones? Real workers, a private Redis, a
PostgreSQL database of its own, one simulator serving shops s1..sN under path prefixes.

    python bench/shops.py --shops 3 --refunds-per-shop 300 --sick-seconds 60 --rounds 3

Two runs per round: the healthy shops' refunds alone (the last shop configured but idle), then
the same plus the last shop's refunds while that shop answers 503 to everything for
``--sick-seconds``; ``--rounds`` alternates them so the machine's noise hits both alike. Each
run queues all its refunds first, then starts the workers: the clock runs from their start.
Each message is published once here (``--duplicates`` as the fault run: twice), and nothing is
killed: ``python bench/fault_run.py --shops 3`` is the same run with duplicate messages.
Reports the healthy shops' refunds/s in each (refunds over first intake to last settling, from
the rows' timestamps), and each shop's invariants (0 lost, 0 duplicate credit memos, one email
per notified refund). Writes ``bench/results/shops.json``; exits 1 when an invariant broke or the
median of the rounds' ratios (healthy rate with the sick shop ÷ without it) is below 0.9.

``--ab A B`` measures two source trees (``git archive X src | tar -x -C /tmp/snap-X``) in
alternation instead, one round each at a time (A first in odd rounds), each its own process with
``PYTHONPATH`` on that tree, and writes both sides' ratios and invariants to the same file:

    python bench/shops.py --ab /tmp/snap-a/src /tmp/snap-b/src --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refund_worker.testing.faults import ShopsConfig, run_shops_comparison  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "shops.json"


def parser(description: str, defaults: ShopsConfig) -> argparse.ArgumentParser:
    """The options of a shops run (shared with ``bench/fault_run.py --shops``)."""
    parsed = argparse.ArgumentParser(description=description)
    parsed.add_argument("--shops", type=int, default=defaults.shops)
    parsed.add_argument("--refunds-per-shop", type=int, default=defaults.refunds_per_shop)
    parsed.add_argument("--workers", type=int, default=defaults.workers)
    parsed.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parsed.add_argument("--max-in-flight", type=int, default=defaults.max_in_flight)
    parsed.add_argument("--sick-seconds", type=float, default=defaults.sick_seconds)
    parsed.add_argument("--sick-status", type=int, default=defaults.sick_status)
    parsed.add_argument("--seed", type=int, default=defaults.seed)
    parsed.add_argument(
        "--duplicates",
        dest="duplicate_messages",
        action=argparse.BooleanOptionalAction,
        default=defaults.duplicate_messages,
        help="publish every message twice, as the fault run does",
    )
    parsed.add_argument("--workdir", type=Path, default=None)
    parsed.add_argument("--rounds", type=int, default=1, help="alternated pairs of runs")
    return parsed


def run(args: argparse.Namespace, output: Path) -> int:
    names = {f.name for f in fields(ShopsConfig)}
    config = ShopsConfig(**{k: v for k, v in vars(args).items() if k in names})
    started = time.monotonic()
    result = run_shops_comparison(
        config,
        args.workdir,
        progress=lambda line: print(f"· {line}", flush=True),
        rounds=args.rounds,
    )
    for label, table in result.pop("tables").items():
        print(f"\n{label}\n{table}")
    result["command"] = " ".join(["python", *sys.argv])
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(
        f"\nhealthy shops: {result['healthy_refunds_per_second_without_sick_shop']} refunds/s "
        f"without the sick shop, {result['healthy_refunds_per_second_with_sick_shop']} with it "
        f"(median ratio {result['ratio']} of {result['ratios']}); "
        f"{'OK' if result['ok'] else 'NOT OK'}; wrote {output}"
    )
    return 0 if result["ok"] else 1


def run_ab(args: argparse.Namespace, argv: list[str], output: Path) -> int:
    """Each round: one run of this script per tree, alternated; the ratios side by side."""
    passed = _without_ab(argv)
    sides: dict[str, dict[str, Any]] = {"A": {"src": args.ab[0]}, "B": {"src": args.ab[1]}}
    for side in sides.values():
        side.update(ratios=[], without=[], with_sick=[], invariants_ok=[])
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, args.rounds + 1):
            for name in ("A", "B") if round_ % 2 else ("B", "A"):
                side = sides[name]
                result_path = Path(tmp) / f"{name}{round_}.json"
                env = {**os.environ, "PYTHONPATH": side["src"]}
                command = [sys.executable, __file__, *passed, "--rounds", "1"]
                print(f"== round {round_} {name}: {side['src']}", flush=True)
                subprocess.run([*command, "--output", str(result_path)], env=env, check=False)
                result = json.loads(result_path.read_text())
                side["ratios"].append(result["ratio"])
                side["without"].append(result["healthy_refunds_per_second_without_sick_shop"])
                side["with_sick"].append(result["healthy_refunds_per_second_with_sick_shop"])
                side["invariants_ok"].append(all(r["ok"] for r in result["runs"].values()))
    for name, side in sides.items():
        side["median_ratio"] = statistics.median(side["ratios"])
        print(
            f"{name}: ratios {side['ratios']} (median {side['median_ratio']}), healthy "
            f"refunds/s without {side['without']}, with {side['with_sick']}; invariants "
            f"{'kept' if all(side['invariants_ok']) else 'BROKEN'} ({side['src']})"
        )
    payload = {
        "command": " ".join(["python", *sys.argv]),
        "rounds": args.rounds,
        "load_avg_at_end": os.getloadavg(),
        "ab": sides,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {output}")
    return 0 if all(all(side["invariants_ok"]) for side in sides.values()) else 1


def _without_ab(argv: list[str]) -> list[str]:
    """The command line minus ``--ab A B``, ``--rounds N`` and ``--output F``."""
    kept: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg in ("--ab", "--rounds", "--output"):
            skip = 2 if arg == "--ab" else 1
        elif not arg.startswith(("--ab=", "--rounds=", "--output=")):
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    parsed = parser(__doc__.split("\n\n")[0], ShopsConfig(duplicate_messages=False))
    parsed.add_argument("--output", type=Path, default=RESULTS)
    parsed.add_argument(
        "--ab", nargs=2, metavar=("SRC_A", "SRC_B"), help="two source trees, alternated"
    )
    args = parsed.parse_args(argv)
    if args.ab:
        return run_ab(args, sys.argv[1:] if argv is None else argv, args.output)
    return run(args, args.output)


if __name__ == "__main__":
    sys.exit(main())
