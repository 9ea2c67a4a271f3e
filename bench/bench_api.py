"""Benchmark of the HTTP intake: accepted refunds per second, single requests and batches.

Starts the API (uvicorn, in a subprocess) against a PostgreSQL database it creates and the
machine's Redis (db 8, flushed before and after), loads it from another process with many
keep-alive connections (raw asyncio HTTP/1.1, so the load generator costs little CPU), checks
every accepted refund is in the database and has its message in the ``refunds`` list, and writes
``bench/results/api.json``.

    python bench/bench_api.py                       # defaults below
    python bench/bench_api.py --workers 2 --duration 15 --connections 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, func, select, text

from refund_worker.api.keys import generate_api_key
from refund_worker.db import upgrade
from refund_worker.models import Refund

ADMIN_URL = os.environ.get(
    "REFUND_WORKER_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("REFUND_WORKER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
DATABASE_NAME = "refund_worker_bench_api"
RESULTS = Path(__file__).resolve().parent / "results" / "api.json"


# -- the server ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _database_url() -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{DATABASE_NAME}"


def _recreate_database() -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE_NAME}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{DATABASE_NAME}"'))
    admin.dispose()
    engine = create_engine(_database_url())
    upgrade(engine)
    engine.dispose()


def _drop_database() -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE_NAME}" WITH (FORCE)'))
    admin.dispose()


def _truncate() -> None:
    engine = create_engine(_database_url())
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE refunds, magento_calls, refund_events"))
    engine.dispose()


def _stored() -> int:
    engine = create_engine(_database_url())
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(Refund)).scalar_one()
    engine.dispose()
    return int(count)


def _start_server(port: int, workers: int, keys_json: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REFUND_WORKER_DATABASE_URL": _database_url(),
        "REFUND_WORKER_BROKER_URL": REDIS_URL,
        "REFUND_WORKER_API_KEYS": keys_json,
        "REFUND_WORKER_LOG_LEVEL": "WARNING",
    }
    command = [
        sys.executable, "-m", "uvicorn", "refund_worker.api.server:app_from_environment",
        "--factory", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--no-access-log", "--log-level", "warning", "--no-server-header", "--no-proxy-headers",
    ]
    server = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"the API exited with {server.returncode}")
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError("the API did not become healthy in 30 s")


def _cpu_seconds(root: int) -> float:
    """User + system CPU of ``root`` and all its descendants so far (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


# -- the load (runs in another process) ------------------------------------------------------


@dataclass
class Load:
    """What one load run did."""

    requests: int = 0
    accepted_refunds: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _refund(key: str, number: int) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "order_id": 1000 + number % 100_000,
        "items": [{"order_item_id": 1 + number % 7, "qty": "1"}],
        "comment": "bench",
    }


async def _connection(
    port: int, token: str, path: str, batch: int, tag: str, deadline: float, load: Load
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    sequence = 0
    try:
        while time.monotonic() < deadline:
            if batch:
                document: Any = [
                    _refund(f"{tag}-{sequence}-{n}", sequence * batch + n) for n in range(batch)
                ]
            else:
                document = _refund(f"{tag}-{sequence}", sequence)
            sequence += 1
            body = json.dumps(document).encode()
            started = time.perf_counter()
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            load.latencies_ms.append((time.perf_counter() - started) * 1000)
            load.requests += 1
            if batch and status == 200:
                load.accepted_refunds += json.loads(answer)["accepted"]
            elif not batch and status == 202:
                load.accepted_refunds += 1
            else:
                load.errors[str(status)] = load.errors.get(str(status), 0) + 1
    finally:
        writer.close()
        await writer.wait_closed()


async def _load(
    port: int, token: str, connections: int, seconds: float, batch: int, tag: str
) -> Load:
    load = Load()
    path = "/v1/refunds:batch" if batch else "/v1/refunds"
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(
        _connection(port, token, path, batch, f"{tag}-c{n}", deadline, load)
        for n in range(connections)
    ))
    load.seconds = time.monotonic() - started
    return load


def _load_process(arguments: tuple[int, str, int, float, int, str]) -> dict[str, Any]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        pass
    return asdict(asyncio.run(_load(*arguments)))


def _run(
    pool: Any, port: int, token: str, connections: int, seconds: float, batch: int, tag: str
) -> Load:
    result: dict[str, Any] = pool.apply(
        _load_process, ((port, token, connections, seconds, batch, tag),)
    )
    return Load(**result)


# -- main ------------------------------------------------------------------------------------


def _row(name: str, load: Load, batch: int) -> dict[str, Any]:
    latencies = sorted(load.latencies_ms) or [0.0]
    return {
        "scenario": name,
        "batch_size": batch or 1,
        "requests": load.requests,
        "accepted_refunds": load.accepted_refunds,
        "seconds": round(load.seconds, 2),
        "refunds_per_second": round(load.accepted_refunds / load.seconds, 1),
        "requests_per_second": round(load.requests / load.seconds, 1),
        "latency_ms_p50": round(statistics.median(latencies), 2),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "errors": load.errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--connections", type=int, default=64, help="single-request connections")
    parser.add_argument("--batch-connections", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()

    load_before = os.getloadavg()
    token, digest = generate_api_key()
    keys_json = json.dumps([{"name": "bench", "role": "producer", "sha256": digest}])
    broker = redis.Redis.from_url(REDIS_URL)
    broker.flushdb()
    _recreate_database()
    port = _free_port()
    server = _start_server(port, args.workers, keys_json)
    rows: list[dict[str, Any]] = []
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            _run(pool, port, token, args.connections, args.warmup, 0, "warm")
            for name, connections, batch in [
                ("single", args.connections, 0),
                (f"batch of {args.batch_size}", args.batch_connections, args.batch_size),
            ]:
                _truncate()
                broker.flushdb()
                cpu_before = _cpu_seconds(server.pid)
                load = _run(pool, port, token, connections, args.duration, batch, name[:5])
                cpu_used = _cpu_seconds(server.pid) - cpu_before
                row = _row(name, load, batch)
                row["api_cpu_ms_per_refund"] = round(
                    1000 * cpu_used / max(load.accepted_refunds, 1), 3
                )
                row["connections"] = connections
                row["stored"] = _stored()
                row["messages_in_refunds_list"] = int(broker.llen("refunds"))
                rows.append(row)
    finally:
        server.terminate()
        server.wait(15)
        broker.flushdb()
        broker.close()
        _drop_database()

    header = f"{'scenario':<14}{'refunds/s':>11}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
    print(header + f"{'API CPU ms/refund':>19}{'accepted':>10}{'stored':>8}{'queued':>8}  errors")
    for row in rows:
        print(
            f"{row['scenario']:<14}{row['refunds_per_second']:>11.0f}"
            f"{row['requests_per_second']:>9.0f}{row['latency_ms_p50']:>9.1f}"
            f"{row['latency_ms_p99']:>9.1f}{row['api_cpu_ms_per_refund']:>19.3f}"
            f"{row['accepted_refunds']:>10}{row['stored']:>8}"
            f"{row['messages_in_refunds_list']:>8}  {row['errors'] or '-'}"
        )
    report = {
        "benchmark": "HTTP intake (POST /v1/refunds, POST /v1/refunds:batch)",
        "command": "python " + " ".join(sys.argv),
        "database": "PostgreSQL (127.0.0.1:5432)",
        "broker": REDIS_URL,
        "uvicorn_workers": args.workers,
        "duration_seconds": args.duration,
        "machine": {
            "load_average_before": [round(value, 2) for value in load_before],
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {RESULTS}")
    consistent = all(
        row["stored"] == row["accepted_refunds"] == row["messages_in_refunds_list"]
        for row in rows
    )
    if not consistent:
        print("MISMATCH: accepted, stored and queued counts differ", file=sys.stderr)
    return 0 if consistent else 1


if __name__ == "__main__":
    sys.exit(main())
