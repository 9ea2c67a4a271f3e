"""Benchmark the Magento simulator: it must never be the bottleneck.

Runs ``python -m refund_worker.simulator`` as ONE process pinned to one core, creates orders
with large quantities through the control API (so every refund succeeds), then loads it from
another process pinned to the other core(s), over 127.0.0.1, with a raw-asyncio HTTP/1.1
keep-alive client: precomputed request bytes, Content-Length framing, no HTTP library, so it
spends far less per request than the server does.

  (a) throughput: ``POST /rest/V1/order/{id}/refund`` from 64 connections, each sending its
      next request as soon as the answer arrives, no injected latency. Target: >= 2,000
      successful refunds per second.
  (b) concurrency: a 200 ms latency fault on every route; 1,000 connections send a refund
      at the same moment, wait for all 1,000 answers, and go again ("rounds"). Target: the
      server holds 1,000 requests in flight at once (its own gauge) and nothing fails.

Prints a table and writes ``bench/results/simulator.json``. The machine's load average is
recorded too: other processes on the same cores lower the figures.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from refund_worker.simulator.testing import simulator_process  # noqa: E402

TOKEN = "bench-token"
RESULTS = ROOT / "bench" / "results" / "simulator.json"


# ----------------------------------------------------------------------------- load client


def refund_request(order_id: int, item_id: int) -> bytes:
    body = json.dumps({"items": [{"order_item_id": item_id, "qty": 1}]}).encode()
    head = (
        f"POST /rest/V1/order/{order_id}/refund HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Tally:
    """What one client process saw, from ``measure_from`` on."""

    measure_from: float
    deadline: float
    ok: int = 0
    errors: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding."""

    def __init__(self, tally: Tally, requests: list[bytes], offset: int, steady: bool) -> None:
        self.tally = tally
        self.requests = requests
        self.index = offset
        self.steady = steady
        self.buffer = b""
        self.sent_at = 0.0
        self.transport: Any = None
        self.answered: asyncio.Future[None] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.steady:
            self.send()

    def send(self) -> asyncio.Future[None]:
        self.answered = asyncio.get_running_loop().create_future()
        self.index = (self.index + 1) % len(self.requests)
        self.sent_at = time.perf_counter()
        self.transport.write(self.requests[self.index])
        return self.answered

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:") + 15
            stop = head.find(b"\r\n", start)
            length = int(head[start : stop if stop > 0 else None])
            if len(self.buffer) < end + 4 + length:
                return
            status = int(head[9:12])
            self.buffer = self.buffer[end + 4 + length :]
            self.answer(status)

    def answer(self, status: int) -> None:
        now = time.perf_counter()
        tally = self.tally
        if now >= tally.measure_from:
            if status == 200:
                tally.ok += 1
                tally.latencies.append(now - self.sent_at)
            else:
                tally.error(f"HTTP {status}")
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(None)
        if self.steady:
            if now < tally.deadline:
                self.send()
            else:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter() < self.tally.deadline:
            self.tally.error("connection lost")
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)


async def drive(
    port: int, requests: list[bytes], connections: int, warmup: float, duration: float, steady: bool
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    tally = Tally(start + warmup, start + warmup + duration)
    opened: list[Connection] = []
    for index in range(connections):
        try:
            _, protocol = await loop.create_connection(
                lambda i=index: Connection(tally, requests, i * 7919, steady),  # type: ignore[misc]
                "127.0.0.1",
                port,
            )
            opened.append(protocol)
        except OSError as exc:
            tally.error(f"connect: {exc.strerror}")
    tally.measure_from = time.perf_counter() + warmup  # connecting is not measured
    tally.deadline = tally.measure_from + duration
    rounds = 0
    if steady:
        await asyncio.wait([c.closed for c in opened], timeout=warmup + duration + 30)
    else:
        while time.perf_counter() < tally.deadline:
            await asyncio.wait([c.send() for c in opened], timeout=30)
            rounds += time.perf_counter() >= tally.measure_from
        for connection in opened:
            connection.transport.close()
    return {
        "ok": tally.ok,
        "errors": tally.errors,
        "kinds": tally.kinds,
        "latencies": tally.latencies,
        "rounds": rounds,
        "elapsed": time.perf_counter() - tally.measure_from,
    }


def client_process(args: tuple[int, list[bytes], int, float, float, bool, list[int] | None]) -> Any:
    port, requests, connections, warmup, duration, steady, cpus = args
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    raise_open_files_limit()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(drive(port, requests, connections, warmup, duration, steady))


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ----------------------------------------------------------------------------- orchestration


def http(url: str, method: str = "GET", payload: Any = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(int(len(ordered) * fraction), len(ordered) - 1)] * 1000, 2)


def phase(
    port: int,
    requests: list[bytes],
    connections: int,
    warmup: float,
    duration: float,
    steady: bool,
    cpus: list[int] | None,
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        [result] = pool.map(
            client_process, [(port, requests, connections, warmup, duration, steady, cpus)]
        )
    latencies: list[float] = result["latencies"]
    out: dict[str, Any] = {
        "connections": connections,
        "measured_s": round(result["elapsed"], 2),
        "ok": result["ok"],
        "errors": result["errors"],
        "error_kinds": result["kinds"],
        "ok_per_s": round(result["ok"] / result["elapsed"], 1),
        "latency_ms": {
            "p50": percentile(latencies, 0.50),
            "p90": percentile(latencies, 0.90),
            "p99": percentile(latencies, 0.99),
            "max": round(max(latencies, default=0.0) * 1000, 2),
        },
    }
    if not steady:
        out["rounds"] = result["rounds"]
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux), to get the server's cost per request."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cost(pid: int, url: str, run: Any) -> tuple[Any, dict[str, Any]]:
    """Run ``run()``; return its result and the server's CPU time per request meanwhile."""
    cpu_before, count_before = cpu_seconds(pid), http(f"{url}/_simulator/stats")["requests"]
    result = run()
    cpu_after, count_after = cpu_seconds(pid), http(f"{url}/_simulator/stats")["requests"]
    served = count_after - count_before - 1  # minus the first stats call
    cost: dict[str, Any] = {"server_requests": served}
    if cpu_before is not None and cpu_after is not None and served > 0:
        per_request = (cpu_after - cpu_before) / served
        cost["server_cpu_us_per_request"] = round(per_request * 1e6, 1)
        cost["server_capacity_per_core_per_s"] = round(1 / per_request) if per_request else None
    return result, cost


def installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the Magento simulator.")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=64, help="phase (a) connections")
    parser.add_argument("--inflight", type=int, default=1000, help="phase (b) connections")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="phase (b) latency")
    parser.add_argument("--orders", type=int, default=500)
    args = parser.parse_args(argv)
    raise_open_files_limit()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu = cpus[:1] if len(cpus) >= 2 else None
    client_cpus = cpus[1:] if len(cpus) >= 2 else None
    load_before = [round(x, 2) for x in os.getloadavg()]

    with simulator_process(seed=None, extra_args=["--token", TOKEN]) as simulator:
        if server_cpu and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(simulator.process.pid, set(server_cpu))
        specs = [
            {"items": [{"sku": f"BENCH-{n}", "qty": 10_000_000, "price": 1.0}], "shipped": True}
            for n in range(args.orders)
        ]
        made = http(f"{simulator.url}/_simulator/orders:batch", "POST", {"orders": specs})
        requests = [refund_request(o["order_id"], o["items"][0]["item_id"]) for o in made["orders"]]

        throughput, cost = server_cost(
            simulator.process.pid,
            simulator.url,
            lambda: phase(
                simulator.port,
                requests,
                args.connections,
                args.warmup,
                args.duration,
                True,
                client_cpus,
            ),
        )
        throughput.update(cost)
        http(
            f"{simulator.url}/_simulator/faults",
            "POST",
            {"route": "*", "kind": "latency", "ms": args.latency_ms},
        )
        concurrency = phase(
            simulator.port,
            requests,
            args.inflight,
            args.warmup,
            args.duration,
            False,
            client_cpus,
        )
        stats = http(f"{simulator.url}/_simulator/stats")
    concurrency["server_max_in_flight"] = stats["max_in_flight"]
    concurrency["injected_latency_ms"] = args.latency_ms
    throughput["target_ok_per_s"] = 2000
    throughput["passed"] = throughput["ok_per_s"] >= 2000 and throughput["errors"] == 0
    concurrency["target_in_flight"] = args.inflight
    concurrency["passed"] = (
        concurrency["errors"] == 0 and concurrency["server_max_in_flight"] >= args.inflight
    )
    loop = "uvloop" if installed("uvloop") else "asyncio"
    parser_name = "httptools" if installed("httptools") else "h11"
    results = {
        "command": " ".join(["python", "bench/bench_simulator.py", *(argv or sys.argv[1:])]),
        "machine": {
            "python": platform.python_version(),
            "cpus": len(cpus),
            "server_cpu": server_cpu,
            "client_cpus": client_cpus,
            "event_loop": loop,
            "http_parser": parser_name,
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "a_throughput": throughput,
        "b_concurrency": concurrency,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    a, b = throughput, concurrency
    rows = [
        ("phase", "conns", "ok", "errors", "ok/s", "p50 ms", "p99 ms", "max in flight", "pass"),
        ("(a) refunds, no latency", a["connections"], a["ok"], a["errors"], a["ok_per_s"],
         a["latency_ms"]["p50"], a["latency_ms"]["p99"], "-", a["passed"]),
        (f"(b) refunds, +{args.latency_ms:g} ms", b["connections"], b["ok"], b["errors"],
         b["ok_per_s"], b["latency_ms"]["p50"], b["latency_ms"]["p99"],
         b["server_max_in_flight"], b["passed"]),
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    print(
        f"simulator: 1 process on cpu {server_cpu} ({loop} + {parser_name}); client on cpus "
        f"{client_cpus}; load average before {load_before}"
    )
    for row in rows:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)))
    if "server_cpu_us_per_request" in a:
        print(
            f"server CPU per request in (a): {a['server_cpu_us_per_request']} us "
            f"= {a['server_capacity_per_core_per_s']} requests/s per free core"
        )
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0 if a["passed"] and b["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
