"""Metrics' hot-path cost: worker CPU per refund with the metrics on and off, and per metrics call.

**A/B**: one stack (simulator, PostgreSQL, Redis), one worker at a time (``--pool threads
--concurrency 16``), alternating ``on`` (``PROMETHEUS_MULTIPROC_DIR`` set, so every count is a
write to a memory-mapped file; the exporter of ``refund-worker worker`` running, scraped every
``--scrape`` seconds like Prometheus would) and ``off`` (patch ``no-metrics``: every metrics call
a no-op). Each run is ``--refunds`` online refunds with their email (4 Magento calls, 2 outcomes
each); the worker's CPU per refund is read from /proc (``common.CpuMeter``).

**Micro**: the same metrics calls a refund makes, timed in a process in multiprocess mode.

    python bench/metrics_cost.py                         # ~3 min
    python bench/metrics_cost.py --refunds 300 --repeat 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import common
import httpx

TOKEN = "bench-metrics-token-0123456789"

_MICRO = r"""
import json, time
from refund_worker import metrics
def refund():
    for operation in ("order_get", "invoice_get", "invoice_refund", "creditmemo_emails"):
        metrics.magento_call(operation, 200, 0.012)
    metrics.refund_attempt("invoice", "succeeded")
    metrics.email("sent")
for _ in range(2000):
    refund()
n = 50000
started = time.process_time()
for _ in range(n):
    refund()
per_refund = (time.process_time() - started) / n
started = time.process_time()
for _ in range(n):
    metrics.magento_call("order_get", 200, 0.012)
per_call = (time.process_time() - started) / n
print(json.dumps({"us_per_refund": per_refund * 1e6, "us_per_magento_call": per_call * 1e6}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refunds", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="pairs of on/off runs")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--scrape", type=float, default=5.0, help="seconds between scrapes")
    parser.add_argument("--redis-db", type=int, default=12)
    parser.add_argument("--name", default="metrics_cost", help="results/NAME.json")
    args = parser.parse_args()
    result = {"micro": {mode: micro(mode) for mode in ("multiprocess", "in_memory")},
              **ab(args)}
    common.print_table("metrics calls (µs)", [
        {"what": mode, **values} for mode, values in result["micro"].items()])
    common.write_json(args.name, result)


def micro(mode: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="metrics-micro-") as directory:
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        if mode == "multiprocess":
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        env["PYTHONPATH"] = str(common.SRC)
        out = subprocess.run([sys.executable, "-c", _MICRO], env=env, check=True,
                             capture_output=True, text=True).stdout
    return {k: round(v, 2) for k, v in json.loads(out).items()}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ab(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with common.stack(args.redis_db, name="metrics_cost") as stack:
        orders = common.create_orders(
            stack.simulator, args.refunds * 2 * args.repeat + 200, "online")
        base_env = dict(stack.env)
        used = 0
        for repeat in range(args.repeat):
            for mode in ("on", "off") if repeat % 2 == 0 else ("off", "on"):
                with tempfile.TemporaryDirectory(prefix="metrics-ab-") as directory:
                    port = _free_port()
                    stack.env.clear()
                    stack.env.update(base_env)
                    if mode == "on":
                        stack.env.update({"PROMETHEUS_MULTIPROC_DIR": directory,
                                          "REFUND_WORKER_METRICS_PORT": str(port),
                                          "REFUND_WORKER_METRICS_TOKEN": TOKEN})
                    patches = ["metrics-exporter"] if mode == "on" else ["no-metrics"]
                    stack.start_worker(concurrency=args.concurrency, patches=patches)
                    if used == 0:  # warm the database and the simulator once
                        warm = orders[:200]
                        common.run_refunds(stack, common.refund_requests(warm, "warm"))
                        used = 200
                    batch = orders[used : used + args.refunds]
                    used += args.refunds
                    scraper = _Scraper(port, args.scrape) if mode == "on" else None
                    run = common.run_refunds(stack, common.refund_requests(
                        batch, f"{mode}{repeat}", notify=True))
                    scraped = scraper.stop() if scraper else None
                    stack.stop_workers()
                row = {
                    "run": f"{mode} {repeat + 1}",
                    "refunds_per_s": run["refunds_per_s"],
                    "worker_cpu_ms": run["cpu_ms_per_refund"]["workers"],
                    "failed": run["failed"],
                    "scrapes": scraped["scrapes"] if scraped else None,
                    "series": scraped["series"] if scraped else None,
                }
                rows.append(row)
                common.print_table("metrics on/off", rows[-1:])
    on = [row["worker_cpu_ms"] for row in rows if row["run"].startswith("on")]
    off = [row["worker_cpu_ms"] for row in rows if row["run"].startswith("off")]
    summary = {
        "worker_cpu_ms_per_refund_on": common.median(on),
        "worker_cpu_ms_per_refund_off": common.median(off),
        "difference_ms": round(common.median(on) - common.median(off), 3),
        "spread_ms_on": round(max(on) - min(on), 3),
        "spread_ms_off": round(max(off) - min(off), 3),
    }
    common.print_table("median", [summary])
    return {"settings": {"refunds_per_run": args.refunds, "pairs": args.repeat,
                         "concurrency": args.concurrency, "scrape_s": args.scrape},
            "runs": rows, "summary": summary}


class _Scraper:
    """Scrapes the worker's exporter every ``interval`` seconds, as Prometheus would."""

    def __init__(self, port: int, interval: float) -> None:
        self._url = f"http://127.0.0.1:{port}/metrics"
        self._interval = interval
        self._stop = threading.Event()
        self.scrapes = 0
        self.series = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._scrape()

    def _scrape(self) -> None:
        response = httpx.get(self._url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        response.raise_for_status()
        self.scrapes += 1
        self.series = sum(1 for line in response.text.splitlines()
                          if line and not line.startswith("#"))

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        self._scrape()  # one at the end: the exporter answers with everything counted
        return {"scrapes": self.scrapes, "series": self.series}


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"{time.monotonic() - started:.0f} s")
