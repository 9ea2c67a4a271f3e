"""Benchmark the Magento simulator: it must never be the bottleneck.

Runs ``python -m refund_worker.simulator`` as one process pinned to one core, creates orders
with large quantities through the control API, then loads it from other processes (pinned to
the other cores) over 127.0.0.1 with a raw-asyncio HTTP/1.1 keep-alive client (precomputed
request bytes, Content-Length framing: it costs far less per request than the server):

  (a) throughput: successful ``POST /rest/V1/order/{id}/refund`` per second, no latency;
      target >= 2,000/s.
  (b) concurrency: 1,000 connections with a request always in flight and a 200 ms latency
      fault on every route; target: the server holds >= 1,000 requests at once, no errors.

Prints a table and writes ``bench/results/simulator.json``.

    python bench/bench_simulator.py [--duration 10] [--connections 64] [--inflight 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from refund_worker.simulator.testing import simulator_process  # noqa: E402

TOKEN = "bench-token"
RESULTS = ROOT / "bench" / "results" / "simulator.json"


# ----------------------------------------------------------------------------- load client


def _request(order_id: int, item_id: int) -> bytes:
    body = json.dumps({"items": [{"order_item_id": item_id, "qty": 1}]}).encode()
    head = (
        f"POST /rest/V1/order/{order_id}/refund HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending one request at a time until the deadline."""

    def __init__(self, run: _Run, offset: int) -> None:
        self.run = run
        self.index = offset
        self.buffer = b""
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        if time.perf_counter() >= self.run.deadline or self.transport is None:
            if self.transport is not None:
                self.transport.close()
            return
        requests = self.run.requests
        self.index = (self.index + 1) % len(requests)
        self.sent_at = time.perf_counter()
        self.transport.write(requests[self.index])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            line_end = head.find(b"\r\n", start)
            length = int(head[start + 15 : line_end if line_end > 0 else None])
            if len(self.buffer) < end + 4 + length:
                return
            status = int(head[9:12])
            self.buffer = self.buffer[end + 4 + length :]
            now = time.perf_counter()
            if now >= self.run.measure_from:
                if status == 200:
                    self.run.ok += 1
                    self.run.latencies.append(now - self.sent_at)
                else:
                    self.run.errors += 1
                    self.run.statuses[status] = self.run.statuses.get(status, 0) + 1
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter() < self.run.deadline:
            self.run.errors += 1
            self.run.statuses["connection_lost"] = self.run.statuses.get("connection_lost", 0) + 1
        if not self.done.done():
            self.done.set_result(None)


class _Run:
    def __init__(self, requests: list[bytes], warmup: float, duration: float) -> None:
        self.requests = requests
        now = time.perf_counter()
        self.measure_from = now + warmup
        self.deadline = now + warmup + duration
        self.ok = 0
        self.errors = 0
        self.statuses: dict[Any, int] = {}
        self.latencies: list[float] = []


async def _load(
    port: int, requests: list[bytes], connections: int, warmup: float, duration: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    run = _Run(requests, warmup, duration)
    protocols = []
    for index in range(connections):
        try:
            _, protocol = await loop.create_connection(
                lambda i=index: _Connection(run, i * 7919),
                "127.0.0.1",
                port,  # type: ignore[misc]
            )
            protocols.append(protocol)
        except OSError as exc:
            run.errors += 1
            run.statuses[f"connect: {exc.strerror}"] = run.statuses.get("connect", 0) + 1
    await asyncio.wait([p.done for p in protocols], timeout=warmup + duration + 30)
    return {
        "ok": run.ok,
        "errors": run.errors,
        "statuses": {str(k): v for k, v in run.statuses.items()},
        "latencies": run.latencies,
    }


def _client(args: tuple[int, list[bytes], int, float, float, list[int] | None]) -> dict[str, Any]:
    port, requests, connections, warmup, duration, cpus = args
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    _raise_nofile()
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_load(port, requests, connections, warmup, duration))


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ----------------------------------------------------------------------------- orchestration


def _http(url: str, method: str = "GET", payload: Any = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)] * 1000


def _phase(
    port: int,
    requests: list[bytes],
    connections: int,
    processes: int,
    warmup: float,
    duration: float,
    cpus: list[int] | None,
) -> dict[str, Any]:
    share = [
        connections // processes + (1 if i < connections % processes else 0)
        for i in range(processes)
    ]
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        parts = pool.map(_client, [(port, requests, n, warmup, duration, cpus) for n in share if n])
    latencies = [value for part in parts for value in part["latencies"]]
    statuses: dict[str, int] = {}
    for part in parts:
        for key, value in part["statuses"].items():
            statuses[key] = statuses.get(key, 0) + value
    ok = sum(part["ok"] for part in parts)
    return {
        "connections": connections,
        "client_processes": processes,
        "duration_s": duration,
        "ok": ok,
        "errors": sum(part["errors"] for part in parts),
        "error_kinds": statuses,
        "ok_per_s": round(ok / duration, 1),
        "latency_ms": {
            "p50": round(_percentile(latencies, 0.50), 2),
            "p90": round(_percentile(latencies, 0.90), 2),
            "p99": round(_percentile(latencies, 0.99), 2),
            "max": round(max(latencies) * 1000 if latencies else 0.0, 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=64, help="phase (a) connections")
    parser.add_argument("--inflight", type=int, default=1000, help="phase (b) connections")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--clients", type=int, default=2, help="client processes for (b)")
    args = parser.parse_args(argv)
    _raise_nofile()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[:1] if len(cpus) >= 2 else None
    client_cpus = cpus[1:] if len(cpus) >= 2 else None

    with simulator_process(seed=None, extra_args=["--token", TOKEN]) as simulator:
        if server_cpu and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(simulator.process.pid, set(server_cpu))
        specs = [
            {"items": [{"sku": f"BENCH-{n}", "qty": 10_000_000, "price": 1.0}], "shipped": True}
            for n in range(args.orders)
        ]
        created = _http(f"{simulator.url}/_simulator/orders:batch", "POST", {"orders": specs})
        requests = [
            _request(order["order_id"], order["items"][0]["item_id"]) for order in created["orders"]
        ]

        throughput = _phase(
            simulator.port, requests, args.connections, 1, args.warmup, args.duration, client_cpus
        )
        _http(
            f"{simulator.url}/_simulator/faults",
            "POST",
            {"route": "*", "kind": "latency", "ms": args.latency_ms},
        )
        concurrency = _phase(
            simulator.port,
            requests,
            args.inflight,
            args.clients,
            args.warmup + 1.0,
            args.duration,
            client_cpus,
        )
        stats = _http(f"{simulator.url}/_simulator/stats")
        concurrency["server_max_in_flight"] = stats["max_in_flight"]
        concurrency["injected_latency_ms"] = args.latency_ms

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # type: ignore[import-not-found]  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    results = {
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *(argv or sys.argv[1:])]),
        "machine": {
            "python": platform.python_version(),
            "cpus": len(cpus),
            "server_cpu": server_cpu,
            "client_cpus": client_cpus,
            "event_loop": loop,
            "http_parser": http,
        },
        "a_throughput": throughput
        | {
            "target_ok_per_s": 2000,
            "passed": throughput["ok_per_s"] >= 2000 and throughput["errors"] == 0,
        },
        "b_concurrency": concurrency
        | {
            "target_in_flight": args.inflight,
            "passed": concurrency["errors"] == 0
            and concurrency["server_max_in_flight"] >= args.inflight,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    a, b = results["a_throughput"], results["b_concurrency"]
    rows = [
        ("phase", "conns", "ok", "errors", "ok/s", "p50 ms", "p99 ms", "max in flight", "pass"),
        (
            "(a) refunds, no latency",
            a["connections"],
            a["ok"],
            a["errors"],
            a["ok_per_s"],
            a["latency_ms"]["p50"],
            a["latency_ms"]["p99"],
            "-",
            a["passed"],
        ),
        (
            f"(b) refunds, +{args.latency_ms:g} ms",
            b["connections"],
            b["ok"],
            b["errors"],
            b["ok_per_s"],
            b["latency_ms"]["p50"],
            b["latency_ms"]["p99"],
            b["server_max_in_flight"],
            b["passed"],
        ),
    ]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    print(
        f"simulator: 1 process on cpu {server_cpu}, {loop} + {http}; clients on cpus {client_cpus}"
    )
    for row in rows:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"wrote {os.path.relpath(RESULTS, ROOT)}")
    return 0 if a["passed"] and b["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
