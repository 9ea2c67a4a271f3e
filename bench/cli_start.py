"""How long the read-only commands take to start and answer: ``refund-worker --help``, ``status``,
``list``, ``stats``, each the installed console script in a fresh process against a small SQLite
database (made here, a few hundred refunds), rounds interleaved so the machine's drift spreads
over every command.

Prints, per command, the best and the median wall time and the median CPU of ``--runs`` runs,
and which heavy packages the command loaded (from one probe run printing ``sys.modules``); the
target is 0.5 s (issue #22). Results go to bench/results/cli_start.json, one section per
``--label`` (the others kept), so the code before (``BENCH_SRC``) and after sit side by side:

    python bench/cli_start.py --runs 15
    BENCH_SRC=/tmp/before/src python bench/cli_start.py --label before
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common

from refund_worker.db import Database, upgrade
from refund_worker.intake import enqueue_refunds, validate_request
from refund_worker.schemas import RefundReceipt

TARGET_S = 0.5
#: Packages a read-only command should not load (a test asserts the first three).
HEAVY = (
    "celery",
    "kombu",
    "fastapi",
    "pydantic",
    "pydantic_settings",
    "sqlalchemy.orm",
    "alembic",
    "prometheus_client",
)


def _seed(url: str, refunds: int) -> str:
    """A migrated database with ``refunds`` refunds; the id of one of them."""
    database = Database.from_url(url)
    upgrade(database.engine)
    requests = [
        validate_request({"idempotency_key": f"rma-{i}", "order_id": 1000 + i})
        for i in range(refunds)
    ]
    receipts = enqueue_refunds(requests, database=database, publisher=common.NoPublisher())
    database.dispose()
    middle = receipts[len(receipts) // 2]
    assert isinstance(middle, RefundReceipt)
    return middle.refund_id


def _commands(refund_id: str) -> dict[str, list[str]]:
    return {
        "--help": ["--help"],
        "status ID": ["status", refund_id],
        "status ID --json": ["status", refund_id, "--json"],
        "list": ["list"],
        "list --status failed --since 1d": ["list", "--status", "failed", "--since", "1d"],
        "stats": ["stats"],
    }


def _probe(argv: list[str], env: dict[str, str], cwd: str) -> list[str]:
    """The heavy packages ``refund-worker argv`` loads."""
    code = (
        "import sys\nfrom refund_worker.cli import run\n"
        f"try:\n    run({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    loaded = set(done.stderr.split())
    return [name for name in HEAVY if name in loaded]


def _time(executable: str, argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall s, CPU s) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([executable, *argv], env=env, cwd=cwd, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command")
    parser.add_argument("--refunds", type=int, default=300, help="refunds in the database")
    parser.add_argument("--label", default="after")
    args = parser.parse_args()

    executable = shutil.which("refund-worker", path=os.path.dirname(sys.executable))
    assert executable, "the refund-worker console script is not installed next to this python"
    with tempfile.TemporaryDirectory(prefix="cli_start_") as workdir:
        url = f"sqlite:///{workdir}/refunds.db"
        refund_id = _seed(url, args.refunds)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REFUND_WORKER_")},
            "REFUND_WORKER_DATABASE_URL": url,
            "PYTHONPATH": str(common.SRC),
            "COLUMNS": "200",
        }
        commands = _commands(refund_id)
        loaded = {name: _probe(argv, env, workdir) for name, argv in commands.items()}
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        load_before = os.getloadavg()[0]
        for _ in range(args.runs):
            for name, argv in commands.items():
                wall, cpu = _time(executable, argv, env, workdir)
                walls[name].append(wall)
                cpus[name].append(cpu)
        load_after = os.getloadavg()[0]

    rows = [
        {
            "command": f"refund-worker {name}",
            "best_ms": round(min(walls[name]) * 1000),
            "median_ms": round(statistics.median(walls[name]) * 1000),
            "cpu_median_ms": round(statistics.median(cpus[name]) * 1000),
            "under_target": statistics.median(walls[name]) < TARGET_S,
            "heavy_loaded": ", ".join(loaded[name]) or "-",
        }
        for name in commands
    ]
    common.print_table(
        f"start of the read-only commands ({args.runs} runs each, {args.label}, "
        f"load {load_before:.1f} → {load_after:.1f})",
        rows,
    )
    path = common.RESULTS / "cli_start.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    runs = previous.get("runs", {})
    runs[args.label] = {
        "command": " ".join(["python", *sys.argv]),
        "src": str(common.SRC),
        "machine": common.machine(),
        "load_avg_1m": [round(load_before, 1), round(load_after, 1)],
        "runs": args.runs,
        "refunds": args.refunds,
        "commands": rows,
    }
    common.write_json("cli_start", {"target_s": TARGET_S, "runs": runs})


if __name__ == "__main__":
    main()
