"""Bulk intake: refunds accepted (validated, committed to PostgreSQL, published) per second.

Writes a JSON Lines file of ``--requests`` requests, ``--duplicates`` of them repeated lines
(same key, same payload: answered as duplicates) and ``--conflicts`` reusing a key with another
payload (refused), then loads it into an empty database and Redis db twice per repeat:

* ``api``: ``intake.validate_request`` per line + ``intake.enqueue_refunds`` in this process, the
  way the CLI does it (the time split into validate / insert / publish / mark queued);
* ``cli``: ``refund-worker enqueue FILE --json > /dev/null`` as a subprocess.

Each run is checked: one row and one message per distinct key, duplicates flagged, conflicts
refused. Target ≥ 5,000 accepted/s. No worker runs.

    python bench/intake.py                              # 100,000 requests, 3 repeats, ~2 min
    python bench/intake.py --requests 5000 --repeat 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import common
import patches

TARGET = 5000


def write_requests(path: Path, count: int, duplicates: int, conflicts: int) -> dict[str, int]:
    """``count`` lines: distinct keys, plus repeats and conflicts of other lines placed after
    the line they repeat (so the first occurrence is the one stored)."""
    rng = random.Random(5)
    distinct = count - duplicates - conflicts
    placed: list[tuple[float, str]] = []
    for index in range(distinct):
        request: dict[str, Any] = {
            "idempotency_key": f"bulk-{index:07d}",
            "order_id": 100000 + index,
            "notify_customer": index % 2 == 0,
            "comment": "bulk refund",
        }
        if index % 3 == 0:
            request["invoice_id"] = 500000 + index
        if index % 5 == 0:
            request["items"] = [{"order_item_id": 900000 + index, "qty": 1}]
            request["shipping_amount"] = "0"
        placed.append((index, json.dumps(request)))
    originals = rng.sample(range(distinct), duplicates + conflicts)
    for number, index in enumerate(originals):
        line = placed[index][1]
        if number >= duplicates:  # same key, another payload
            changed = json.loads(line)
            changed["order_id"] += 1
            line = json.dumps(changed)
        placed.append((rng.uniform(index + 0.5, distinct), line))
    placed.sort(key=lambda item: item[0])
    path.write_text("\n".join(line for _, line in placed) + "\n")
    return {"lines": len(placed), "distinct": distinct, "duplicates": duplicates,
            "conflicts": conflicts}  # fmt: skip


def run_api(stack: common.Stack, path: Path) -> dict[str, Any]:
    """Read, validate and enqueue in this process; times each stage."""
    from refund_worker import intake

    publisher = stack.publisher()
    stages: Counter[str] = Counter()
    publish = publisher.publish_refunds

    def timed_publish(ids: Any) -> None:
        started = time.perf_counter()
        publish(ids)
        stages["publish"] += time.perf_counter() - started

    publisher.publish_refunds = timed_publish  # type: ignore[method-assign]
    started = time.perf_counter()
    accepted, refused = [], 0
    for line in path.read_text().splitlines():
        try:
            accepted.append(intake.validate_request(line))
        except Exception:
            refused += 1
    stages["read+validate"] = time.perf_counter() - started
    results = intake.enqueue_refunds(accepted, database=stack.database, publisher=publisher)
    seconds = time.perf_counter() - started
    stages["store (insert, select, mark queued)"] = (
        seconds - stages["read+validate"] - stages["publish"]
    )
    receipts = [r for r in results if not isinstance(r, intake.IntakeRejection)]
    return {
        "seconds": round(seconds, 3),
        "accepted": len(receipts),
        "duplicates": sum(1 for r in receipts if r.duplicate),
        "refused": refused + len(results) - len(receipts),
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
    }


def run_cli(stack: common.Stack, path: Path) -> dict[str, Any]:
    """``refund-worker enqueue FILE --json``, output counted (not printed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, str(common.BENCH / "run_cli.py"), "enqueue", str(path), "--json"],
        env=stack.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    accepted = duplicates = refused = 0
    for line in process.stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "line" not in record:
            continue
        if record.get("receipt"):
            accepted += 1
            duplicates += bool(record["receipt"].get("duplicate"))
        else:
            refused += 1
    if process.returncode not in (0, 1):
        raise RuntimeError(f"refund-worker enqueue failed:\n{process.stderr[-3000:]}")
    return {"seconds": round(seconds, 3), "accepted": accepted, "duplicates": duplicates,
            "refused": refused, "exit_code": process.returncode,
            "client_cpu_s": round(cpu, 3)}  # fmt: skip


def check(stack: common.Stack, made: dict[str, int], result: dict[str, Any]) -> list[str]:
    from sqlalchemy import text

    with stack.database.engine.connect() as connection:
        rows = connection.execute(text("SELECT count(*) FROM refunds")).scalar_one()
        queued = connection.execute(
            text("SELECT count(*) FROM refunds WHERE status = 'queued'")
        ).scalar_one()
    messages = stack.redis.llen(common.QUEUE)
    problems = []
    if rows != made["distinct"]:
        problems.append(f"{rows} rows for {made['distinct']} distinct keys")
    if queued != rows:
        problems.append(f"{rows - queued} rows not marked queued")
    if messages != made["distinct"]:
        problems.append(f"{messages} messages for {made['distinct']} distinct keys")
    if result["duplicates"] != made["duplicates"]:
        problems.append(f"{result['duplicates']} duplicates flagged, {made['duplicates']} made")
    if result["refused"] != made["conflicts"]:
        problems.append(f"{result['refused']} refused, {made['conflicts']} conflicts made")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--duplicates", type=int, default=1000)
    parser.add_argument("--conflicts", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--path", action="append", choices=["api", "cli"], default=[])
    parser.add_argument("--patch", action="append", default=[], help="bench/patches.py name")
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--name", default="intake")
    args = parser.parse_args()
    paths = args.path or ["api", "cli"]
    patches.apply(args.patch)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, common.stack(args.redis_db, "intake") as stack:
        stack.env["BENCH_PATCHES"] = ",".join(args.patch)
        file = Path(tmp) / "requests.jsonl"
        made = write_requests(file, args.requests, args.duplicates, args.conflicts)
        for repeat in range(args.repeat):
            for path in paths:
                stack.truncate()
                stack.reset_broker()
                with common.CpuMeter(stack) as meter:
                    result = (run_api if path == "api" else run_cli)(stack, file)
                problems = check(stack, made, result)
                client_cpu = result.get("client_cpu_s", meter.seconds["bench"])
                rows.append(
                    {
                        "what": f"{path} #{repeat + 1}",
                        "lines": made["lines"],
                        "accepted_per_s": round(result["accepted"] / result["seconds"], 1),
                        "new_per_s": round(made["distinct"] / result["seconds"], 1),
                        "seconds": result["seconds"],
                        "client_cpu_ms": round(1000 * client_cpu / made["lines"], 3),
                        "pg_cpu_ms": round(1000 * meter.seconds["postgres"] / made["lines"], 3)
                        if path == "api"
                        else None,
                        "machine_cores": meter.cores()["machine"],
                        "check": "ok" if not problems else "; ".join(problems),
                        **result,
                    }
                )
                common.print_table("bulk intake", rows[-1:], _COLUMNS)
    summary = []
    for path in paths:
        mine = [r for r in rows if r["what"].startswith(path)]
        summary.append(
            {
                "what": f"{path} (median)",
                "lines": made["lines"],
                "accepted_per_s": common.median([r["accepted_per_s"] for r in mine]),
                "new_per_s": common.median([r["new_per_s"] for r in mine]),
                "seconds": common.median([r["seconds"] for r in mine]),
                "client_cpu_ms": common.median([r["client_cpu_ms"] for r in mine]),
                "check": "ok" if all(r["check"] == "ok" for r in mine) else "FAILED",
            }
        )
    common.print_table(
        f"bulk intake of {made['lines']:,} lines ({made['duplicates']} repeated, "
        f"{made['conflicts']} conflicting); target ≥ {TARGET:,} accepted/s",
        [*rows, *summary],
        _COLUMNS,
    )
    common.write_json(
        args.name,
        {
            "file": made,
            "runs": rows,
            "median": summary,
            "target_per_s": TARGET,
            "passed": all(s["accepted_per_s"] >= TARGET and s["check"] == "ok" for s in summary),
            "patches": args.patch,
        },
    )


_COLUMNS = ["what", "lines", "accepted_per_s", "new_per_s", "seconds", "client_cpu_ms",
            "pg_cpu_ms", "machine_cores", "check"]  # fmt: skip


if __name__ == "__main__":
    main()
