"""Regression A/B: the same benchmarks on two source trees, alternated in one run, medians.

Each round runs every benchmark once on A and once on B (A first in odd rounds, B first in
even ones), each as its own ``python bench/NAME.py`` with ``BENCH_SRC`` set, so both trees
are measured by the same bench code in the same minutes of a shared machine. The figures kept
are each run's headline numbers; the table gives median A, median B and B ÷ A.

* ``latency``: the latency-bound ratio (``latency.py``, one layout, one run);
* ``intake``: bulk intake, accepted lines/s through ``enqueue_refunds`` and the CLI;
* ``memory``: worker RSS after a tenth of the refunds and at the end, and their ratio;
* ``floor``: the durable floor (``floor.py``): the ``durable`` and ``refund`` ratios to the no-op.

Snapshots come from git, so edits in the tree during the run change neither side:

    git archive 7e2fae1 src | tar -x -C /tmp/snap-a
    git archive HEAD src | tar -x -C /tmp/snap-b
    python bench/ab.py --a /tmp/snap-a/src --b /tmp/snap-b/src --rounds 3      # ~30 min
    python bench/ab.py --a ... --b ... --rounds 1 --only intake --small          # smoke

The per-run files go to a temporary name and are folded into ``results/ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"

#: name -> (arguments of the full run, arguments of a smoke run)
COMMANDS: dict[str, tuple[list[str], list[str]]] = {
    "latency": (
        ["latency.py", "--layout", "threads:4x16", "--seconds", "30", "--repeat", "1"],
        ["latency.py", "--layout", "threads:2x32", "--seconds", "8", "--repeat", "1"],
    ),
    "intake": (
        ["intake.py", "--requests", "30000", "--repeat", "1"],
        ["intake.py", "--requests", "5000", "--repeat", "1"],
    ),
    "memory": (
        ["memory.py", "--refunds", "10000", "--chunk", "1000"],
        ["memory.py", "--refunds", "2000", "--chunk", "500"],
    ),
    "floor": (
        ["floor.py", "--pool", "prefork", "--concurrency", "4", "--units", "500",
         "--noops", "1500", "--repeat", "1"],
        ["floor.py", "--units", "300", "--noops", "1000", "--repeat", "1"],
    ),
}  # fmt: skip


def _latency(d: dict[str, Any]) -> dict[str, float]:
    run = d["runs"][0]
    return {
        "ratio": run["ratio"],
        "refunds_per_s": run["refunds_per_s"],
        "worker_cpu_ms": run["worker_cpu_ms"],
    }


def _intake(d: dict[str, Any]) -> dict[str, float]:
    by_path = {m["what"].split()[0]: m for m in d["median"]}
    return {
        "api_per_s": by_path["api"]["accepted_per_s"],
        "cli_per_s": by_path["cli"]["accepted_per_s"],
        "api_cpu_ms": by_path["api"]["client_cpu_ms"],
        "cli_cpu_ms": by_path["cli"]["client_cpu_ms"],
    }


def _memory(d: dict[str, Any]) -> dict[str, float]:
    return {"rss_first_mb": d["rss_first_mb"], "rss_end_mb": d["rss_end_mb"], "growth": d["growth"]}


def _floor(d: dict[str, Any]) -> dict[str, float]:
    median = d["median"]
    return {
        "durable_ratio": median["durable"]["ratio"],
        "refund_ratio": median["refund"]["ratio"],
        "refund_over_durable": round(median["refund"]["ratio"] / median["durable"]["ratio"], 3),
        "noop_per_s": median["noop"]["per_s"],
        "durable_per_s": median["durable"]["per_s"],
        "refund_per_s": median["refund"]["per_s"],
    }


EXTRACT: dict[str, Callable[[dict[str, Any]], dict[str, float]]] = {
    "latency": _latency,
    "intake": _intake,
    "memory": _memory,
    "floor": _floor,
}


def run_one(name: str, side: str, src: str, round_no: int, args: argparse.Namespace) -> Any:
    command = COMMANDS[name][1 if args.small else 0]
    tmp_name = f"_ab-{name}-{side}{round_no}-{os.getpid()}"
    argv = [sys.executable, str(BENCH / command[0]), *command[1:], "--name", tmp_name]
    if args.redis_db is not None:
        argv += ["--redis-db", str(args.redis_db)]
    env = {**os.environ, "BENCH_SRC": src}
    started = time.perf_counter()
    print(f"== round {round_no} {side}: {' '.join(argv[1:])}", flush=True)
    done = subprocess.run(argv, env=env, cwd=BENCH.parent, check=False)
    path = RESULTS / f"{tmp_name}.json"
    if done.returncode != 0 or not path.exists():
        print(f"!! {name} on {side} failed (exit {done.returncode})", flush=True)
        return {"failed": done.returncode}
    figures = EXTRACT[name](json.loads(path.read_text()))
    path.unlink()
    figures["seconds"] = round(time.perf_counter() - started)
    print(f"   {name} {side}{round_no}: {figures}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="source tree A (a src directory)")
    parser.add_argument("--b", required=True, help="source tree B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", choices=sorted(COMMANDS), default=[])
    parser.add_argument("--small", action="store_true", help="smoke sizes")
    parser.add_argument("--redis-db", type=int, default=None)
    parser.add_argument("--name", default="ab")
    args = parser.parse_args()
    names = args.only or list(COMMANDS)
    runs: dict[str, dict[str, list[Any]]] = {n: {"A": [], "B": []} for n in names}
    for round_no in range(1, args.rounds + 1):
        for name in names:
            order = ("A", "B") if round_no % 2 else ("B", "A")
            for side in order:
                src = args.a if side == "A" else args.b
                runs[name][side].append(run_one(name, side, src, round_no, args))
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        good = {side: [r for r in runs[name][side] if "failed" not in r] for side in "AB"}
        if not good["A"] or not good["B"]:
            continue
        for key in good["A"][0]:
            if key == "seconds":
                continue
            a = statistics.median(r[key] for r in good["A"])
            b = statistics.median(r[key] for r in good["B"])
            summary[f"{name}.{key}"] = {
                "median_a": a,
                "median_b": b,
                "b_over_a": round(b / a, 3) if a else None,
                "a": [r[key] for r in good["A"]],
                "b": [r[key] for r in good["B"]],
            }
    print(f"{'figure':32} {'median A':>10} {'median B':>10} {'B/A':>7}   runs A | runs B")
    for key, row in summary.items():
        print(
            f"{key:32} {row['median_a']:>10} {row['median_b']:>10} {row['b_over_a']!s:>7}   "
            f"{row['a']} | {row['b']}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join(["python", *sys.argv]),
        "a": args.a,
        "b": args.b,
        "commands": {n: COMMANDS[n][1 if args.small else 0] for n in names},
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "summary": summary,
        "runs": runs,
    }
    path = RESULTS / f"{args.name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
