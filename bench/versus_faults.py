"""The fault half of ``bench/versus.py``: this project and the naive worker under the same faults.

What it measures: each side in turn, in an environment of its own (a private ``redis-server``, a
private PostgreSQL database, a fresh simulator; ``refund_worker.testing.faults``), takes the same
``--refunds`` partial refunds (2 to 4 per order, item quantities and no shipping, online and
offline payments, a share notifying the customer; ``faultlib.plan``'s partial orders), all
submitted at once to ONE worker process (``--pool threads``, ``--concurrency``), while

* the simulator commits the credit memo and then answers 500 on ``--commit-fault-share`` (10%) of
  refund calls (``commit_then_500`` on both refund routes, seeded the same for both sides), and
* the worker is SIGKILLed (its whole process group) when 30% and when 65% of the refunds are
  settled, and started again a second later, as ``faultlib.Fleet`` does in the fault run.

The project runs as deployed: its worker and ``refund-worker beat`` (the sweeper), with the fault
run's test-fast timings (``FaultConfig.timings``). The naive worker (``bench/naive.py``) gets the
same Magento timeout and the same Redis visibility timeout (60 s: a killed worker's messages come
back after it, at kombu's next scan of the unacked messages, every 100 s by default) and
restarts the same way; it has no sweeper because it has no such design.
Then, once every refund and email has settled (or nothing moved for ``--stall`` seconds), the
same count is made for both from what Magento (the simulator) holds, matched per order and item
set against the refunds asked:

* duplicate credit memos: memos beyond the refunds asked with that order and item set, the
  orders they are on, and their amount (refunded twice);
* lost refunds: refunds asked that never settled in the side's own table, or that have no
  credit memo in Magento (per order and item set, the larger of the two);
* failed: refunds the side's table marks failed (every refund asked is valid, so each is an
  error), and what the table does not know: memos in Magento that no succeeded row records;
* double emails (more than one email for a credit memo) and notified refunds without an email.

For the project, ``faultlib.evaluate``'s own marker-based checks are kept in the JSON as a
cross-check.

    python bench/versus_faults.py                  # 300 refunds per side, ~6 min
    python bench/versus_faults.py --refunds 60     # smoke, ~5 min (the naive side waits for
                                                   # Redis to give a killed worker's messages back)

How to read it: the columns are the two sides; every count but "refunds asked" and "credit memos
in Magento" should be 0. Writes ``bench/results/versus-faults.json`` (overwritten on each run).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import naive
from sqlalchemy import func, select, text
from sqlalchemy.orm import sessionmaker

from refund_worker.celery_app import create_app
from refund_worker.db import Database
from refund_worker.intake import enqueue_refunds, validate_request
from refund_worker.models import Refund
from refund_worker.publishing import CeleryPublisher
from refund_worker.testing import faults as faultlib

SIDES = ("project", "naive")
KILL_AT = (0.30, 0.65)
RESTART_AFTER = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refunds", type=int, default=300, help="partial refunds per side")
    parser.add_argument("--concurrency", type=int, default=16, help="threads of the worker")
    parser.add_argument("--commit-fault-share", type=float, default=0.10)
    parser.add_argument("--notify-share", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument(
        "--stall",
        type=float,
        default=200,
        help="give up after this long without progress (a killed worker's messages come back "
        "after the visibility timeout, at kombu's next scan of unacked messages: up to 160 s)",
    )
    parser.add_argument("--timeout", type=float, default=1200, help="give up after this long")
    parser.add_argument("--workdir", type=Path, default=None, help="logs (default: a temp dir)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="versus-faults-"))
    orders = plan_partial(args.refunds, args.seed, args.notify_share)
    sides = {}
    for side in SIDES:
        common.console.print(f"· {side}: logs in {workdir / side}")
        sides[side] = run_side(side, orders, args, workdir / side)
    rows = [
        {"what": label, **{side: sides[side]["counts"].get(key) for side in SIDES}}
        for key, label in _LABELS
    ]
    common.print_table(
        f"{args.refunds} partial refunds, commit-then-500 on {args.commit_fault_share:.0%} of "
        f"refund calls, {len(KILL_AT)} SIGKILLs of the worker",
        rows,
        ["what", *SIDES],
    )
    common.write_json(
        "versus-faults",
        {
            "settings": {
                "refunds": args.refunds,
                "orders": len(orders),
                "concurrency": args.concurrency,
                "pool": "threads",
                "commit_fault_share": args.commit_fault_share,
                "notify_share": args.notify_share,
                "seed": args.seed,
                "kills_when_settled": KILL_AT,
                "restart_after_s": RESTART_AFTER,
                "timings": faultlib.FaultConfig().timings,
                "workdir": str(workdir),
            },
            "table": rows,
            "sides": sides,
        },
    )


# ---------------------------------------------------------------------------- the plan


def plan_partial(refunds: int, seed: int, notify_share: float) -> list[faultlib.PlannedOrder]:
    """faultlib's partial-refund orders, until ``refunds`` refunds (the same for both sides)."""
    planned = faultlib.plan(
        faultlib.FaultConfig(refunds=2 * refunds + 20, notify_share=notify_share),
        random.Random(seed),
    )
    chosen: list[faultlib.PlannedOrder] = []
    count = 0
    for order in planned:
        if order.kind == "partial" and count < refunds:
            chosen.append(order)
            count += len(order.refunds)
    return chosen


def commit_faults(share: float, seed: int) -> list[dict[str, Any]]:
    return [
        {"route": route, "kind": "commit_then_500", "probability": share, "seed": seed + offset}
        for offset, route in enumerate(faultlib.REFUND_ROUTES)
    ]


class NaiveFleet(faultlib.Fleet):
    """``faultlib.Fleet`` with naive workers (``celery -A naive worker``): the same start,
    SIGKILL (the process group) and restart."""

    def _spawn(self, name: str, args: Any) -> None:
        self.starts[name] += 1
        log = (self.workdir / f"{name}-{self.starts[name]}.log").open("wb")
        # args: ["worker", "--concurrency", N, "-n", NAME, "--without-gossip", "--without-mingle"]
        argv = [sys.executable, "-m", "celery", "-A", "naive", *args, "--pool", "threads",
                "--queues", naive.QUEUE, "--loglevel", "INFO", "-E"]  # fmt: skip
        self.processes[name] = subprocess.Popen(
            argv,
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


# ---------------------------------------------------------------------------- one side


def run_side(
    side: str, planned: list[faultlib.PlannedOrder], args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = faultlib.FaultConfig(refunds=args.refunds, concurrency=args.concurrency)
    orders = [faultlib.PlannedOrder(o.spec, o.kind, [dict(r) for r in o.refunds]) for o in planned]
    with (
        faultlib.private_redis(workdir) as broker,
        faultlib.private_pg_database(config.pg_admin_url, prefix="versus_faults") as (url, _),
        faultlib.simulator_subprocess(workdir, ["--token", faultlib.TOKEN]) as simulator,
    ):
        sim = faultlib.SimControl(simulator.url)
        database = Database.from_url(url)
        env = faultlib.worker_env(config, broker.url(), url, simulator.url)
        if side == "naive":
            env["PYTHONPATH"] = f"{common.BENCH}:{env['PYTHONPATH']}"
            naive.create_tables(database.engine)
            fleet: faultlib.Fleet = NaiveFleet(env, workdir, args.concurrency)
        else:
            fleet = faultlib.Fleet(env, workdir, args.concurrency)
        try:
            for order, summary in zip(
                orders, sim.add_orders([o.spec for o in orders]), strict=True
            ):
                order.order = summary
            requests = faultlib.payloads(orders, f"versus-{side}")
            fleet.start_worker("w1")
            if side == "project":
                fleet.start_beat()
            fleet.wait_ready()
            for fault in commit_faults(args.commit_fault_share, args.seed):
                sim.add_fault(fault)
            started, started_wall = time.monotonic(), time.time()
            if side == "project":
                settings = faultlib.settings_from_env(env)
                results = enqueue_refunds(
                    [validate_request(r) for r in requests],
                    database=database,
                    publisher=CeleryPublisher(create_app(settings)),
                )
                accepted = {r.idempotency_key: r.refund_id for r in results}
            else:
                naive.app.conf.broker_url = broker.url()
                ids = naive.submit(requests, sessionmaker(database.engine))
                accepted = {
                    r["idempotency_key"]: str(i) for r, i in zip(requests, ids, strict=True)
                }
            progress = _progress(side, database)
            kills, settled_at = _drive(fleet, progress, len(requests), args, started)
            time.sleep(5)  # anything still in flight lands before the count
            rows = _rows(side, database)
            counts = count(orders, requests, rows, sim)
            counts["kills"] = len(kills)
            counts["settled_s"] = "not settled" if settled_at is None else settled_at
            routes = sim.stats()["by_route"]
            counts["refund_calls"] = sum(
                sum(routes.get(route, {}).values()) for route in faultlib.REFUND_ROUTES
            )
            counts["commit_then_500_fired"] = sum(
                1 for r in sim.requests(100_000) if r.get("fault") == "commit_then_500"
            )
            result: dict[str, Any] = {"counts": counts, "kills": kills, "workdir": str(workdir)}
            if side == "project":
                _, figures, failures, violations = faultlib.evaluate(
                    database, sim, orders, accepted, started_wall
                )
                result["faultlib_evaluate"] = {
                    "figures": figures,
                    "failures": failures,
                    "violations": {k: v for k, v in violations.items() if v},
                }
            result["log_counts"] = fleet.log_counts(
                {"tracebacks": "Traceback", "retry": "Retry in", "ready": " ready."}
            )
            return result
        finally:
            fleet.stop()
            sim.close()
            database.dispose()


def _progress(side: str, database: Database) -> Callable[[], tuple[int, int]]:
    """(refunds settled, refunds and emails settled) in the side's own table."""
    if side == "naive":
        query = text(
            "SELECT count(*) FILTER (WHERE status IN ('succeeded','failed')), "
            "count(*) FILTER (WHERE status IN ('succeeded','failed') "
            "AND (email_status IS NULL OR email_status <> 'pending')) FROM naive_refunds"
        )
    else:
        settled = Refund.status.in_(("succeeded", "failed"))
        query = select(
            func.count().filter(settled),
            func.count().filter(
                settled & Refund.notification_status.notin_(faultlib.UNSETTLED_NOTIFICATIONS)
            ),
        )

    def progress() -> tuple[int, int]:
        with database.engine.connect() as connection:
            refunds, everything = connection.execute(query).one()
        return int(refunds), int(everything)

    return progress


def _drive(
    fleet: faultlib.Fleet,
    progress: Callable[[], tuple[int, int]],
    total: int,
    args: argparse.Namespace,
    started: float,
) -> tuple[list[dict[str, Any]], float | None]:
    """Kill the worker at each ``KILL_AT`` share of settled refunds, restart it a second later;
    return the kills and when everything settled (None: stalled or timed out)."""
    kills: list[dict[str, Any]] = []
    pending = list(KILL_AT)
    last = (-1, time.monotonic())
    while time.monotonic() - started < args.timeout:
        fleet.revive()
        refunds, everything = progress()
        if everything >= total:
            return kills, round(time.monotonic() - started, 1)
        if (refunds, everything) != last[0]:
            last = ((refunds, everything), time.monotonic())
        elif time.monotonic() - last[1] > args.stall:
            break
        if pending and refunds >= pending[0] * total and "w1" in fleet.ready_workers():
            pending.pop(0)
            fleet.kill("w1")
            kills.append({"t": round(time.monotonic() - started, 1), "settled": refunds})
            threading.Timer(RESTART_AFTER, fleet.start_worker, args=("w1",)).start()
        time.sleep(0.1)
    common.console.print(f"[red]not settled: {progress()} of {total}[/red]")
    return kills, None


# ---------------------------------------------------------------------------- the count


def _rows(side: str, database: Database) -> dict[str, dict[str, Any]]:
    """Each refund by idempotency key: status (succeeded, failed, or not settled), memo, emails."""
    if side == "naive":
        query = text(
            "SELECT idempotency_key, status, creditmemo_id, notify_customer, email_status "
            "FROM naive_refunds"
        )
    else:
        query = select(
            Refund.idempotency_key,
            Refund.status,
            Refund.creditmemo_id,
            Refund.notify_customer,
            Refund.notification_status,
        )
    with database.engine.connect() as connection:
        return {
            key: {"status": status, "creditmemo_id": memo, "notify": notify, "email": email}
            for key, status, memo, notify, email in connection.execute(query)
        }


def _signature(items: Any) -> tuple[tuple[int, float], ...]:
    return tuple(
        sorted((int(i["order_item_id"]), float(i["qty"])) for i in items if float(i["qty"]) > 0)
    )


def count(
    orders: list[faultlib.PlannedOrder],
    requests: list[dict[str, Any]],
    rows: dict[str, dict[str, Any]],
    sim: faultlib.SimControl,
) -> dict[str, Any]:
    """The same count for both sides, from Magento's credit memos and outbox and the side's own
    table, matched per (order, item set)."""
    order_ids = {int(o.order["order_id"]) for o in orders}
    memos = [m for m in sim.creditmemos() if m["order_id"] in order_ids]
    asked: Counter[tuple[int, Any]] = Counter()
    unsettled: Counter[tuple[int, Any]] = Counter()
    for request in requests:
        group = (request["order_id"], _signature(request["items"]))
        asked[group] += 1
        if rows.get(request["idempotency_key"], {}).get("status") not in ("succeeded", "failed"):
            unsettled[group] += 1
    in_magento: dict[tuple[int, Any], list[dict[str, Any]]] = defaultdict(list)
    for memo in memos:
        in_magento[(memo["order_id"], _signature(memo["items"]))].append(memo)
    duplicates = twice = missing = lost = 0
    duplicate_orders: set[int] = set()
    for group in asked.keys() | in_magento.keys():
        found = len(in_magento.get(group, []))
        extra = max(0, found - asked[group])
        if extra:
            duplicates += extra
            duplicate_orders.add(group[0])
            twice += sum(float(m["grand_total"]) for m in in_magento[group][:extra])
        gone = max(0, asked[group] - found)
        missing += gone
        lost += max(gone, unsettled[group])
    recorded = {r["creditmemo_id"] for r in rows.values() if r["status"] == "succeeded"}
    memo_ids = {m["entity_id"] for m in memos}
    unknown = [m for m in memos if m["entity_id"] not in recorded]
    emails = Counter(e["creditmemo_id"] for e in sim.emails() if e["creditmemo_id"] in memo_ids)
    notified = [r for r in rows.values() if r["status"] == "succeeded" and r["notify"]]
    statuses = Counter(r["status"] for r in rows.values())
    return {
        "asked": len(requests),
        "succeeded": statuses["succeeded"],
        "failed": statuses["failed"],
        "unsettled": len(requests) - statuses["succeeded"] - statuses["failed"],
        "creditmemos": len(memos),
        "duplicate_creditmemos": duplicates,
        "orders_with_duplicates": len(duplicate_orders),
        "refunded_twice": round(twice, 2),
        "lost": lost,
        "no_creditmemo": missing,
        "unrecorded_creditmemos": len(unknown),
        "unrecorded_amount": round(sum(float(m["grand_total"]) for m in unknown), 2),
        "succeeded_without_creditmemo": sum(
            1
            for r in rows.values()
            if r["status"] == "succeeded" and r["creditmemo_id"] not in memo_ids
        ),
        "notified": len(notified),
        "double_emails": sum(n - 1 for n in emails.values() if n > 1),
        "notified_without_email": sum(1 for r in notified if not emails[r["creditmemo_id"]]),
        "emails": sum(emails.values()),
    }


_LABELS = [
    ("asked", "refunds asked"),
    ("succeeded", "succeeded (own table)"),
    ("failed", "failed (own table; every request was valid)"),
    ("unsettled", "never settled (own table)"),
    ("creditmemos", "credit memos in Magento"),
    ("duplicate_creditmemos", "duplicate credit memos"),
    ("orders_with_duplicates", "  on orders"),
    ("refunded_twice", "  amount refunded twice"),
    ("lost", "lost refunds (never settled or never reached Magento)"),
    ("no_creditmemo", "  asked, no credit memo in Magento"),
    ("unrecorded_creditmemos", "credit memos no succeeded row records"),
    ("unrecorded_amount", "  their amount"),
    ("succeeded_without_creditmemo", "succeeded, memo not in Magento"),
    ("notified", "notified refunds (succeeded)"),
    ("double_emails", "double emails"),
    ("notified_without_email", "notified refunds without an email"),
    ("kills", "SIGKILLs of the worker"),
    ("refund_calls", "refund calls to Magento"),
    ("commit_then_500_fired", "  answered 500 after committing"),
    ("settled_s", "everything settled after (s)"),
]


if __name__ == "__main__":
    main()
