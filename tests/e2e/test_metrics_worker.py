"""The worker's exporter, from a real ``refund-worker worker`` on a real socket: with a prefork
pool of two children every child's counts reach ``/metrics`` (prometheus_client's multiprocess
files), and they agree with the audit rows the same calls left in the database. A worker that
could only serve wrong or open numbers refuses to start, in one line."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from refund_worker.errors import ConfigurationError
from refund_worker.exporter import claim_multiproc_dir, is_loopback, multiproc_dir, serve
from refund_worker.settings import load_settings
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e]

TOKEN = "worker-metrics-token-0123456789"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(url: str, token: str | None = TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                       float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, headers=headers, timeout=5)
    response.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(found: dict, name: str, **labels: str) -> float:
    return sum(value for (sample, sample_labels), value in found.items() if sample == name
               and all(dict(sample_labels).get(k) == v for k, v in labels.items()))


def test_a_prefork_worker_exports_every_child_s_counts(sqlite_stack: Stack, tmp_path: Path) -> None:
    stack = sqlite_stack
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"stale")  # a previous run's: removed at start
    port = free_port()
    stack.env.update({"PROMETHEUS_MULTIPROC_DIR": str(directory),
                      "REFUND_WORKER_METRICS_PORT": str(port),
                      "REFUND_WORKER_METRICS_TOKEN": TOKEN})
    made = [stack.state.add_order({"payment_method": "braintree", "shipped": True,
                                   "items": [{"sku": "CUP", "qty": 1, "price": 10 + n}]})
            for n in range(8)]
    held = stack.state.add_order({"payment_method": "checkmo", "state": "holded",
                                  "items": [{"sku": "LAMP", "qty": 1, "price": 80}]})
    flaky = stack.state.add_order({"payment_method": "checkmo", "shipped": True,
                                   "items": [{"sku": "RICE", "qty": 2, "price": 4}]})
    stack.state.add_fault({"route": "order_refund", "kind": "status", "status": 503,
                           "order_id": flaky["order_id"], "count": 1})
    # Slow refunds, so that both children take some.
    stack.state.add_fault({"route": "invoice_refund", "kind": "latency", "ms": 100})
    receipts = stack.enqueue(
        *({"idempotency_key": f"m-{n}", "order_id": order["order_id"], "notify_customer": True}
          for n, order in enumerate(made)),
        {"idempotency_key": "held", "order_id": held["order_id"]},
        {"idempotency_key": "flaky", "order_id": flaky["order_id"]},
    )
    worker = stack.start_worker(2, "--pool", "prefork")
    views = stack.wait_settled([r.refund_id for r in receipts], timeout=90)
    assert sorted(v.status.value for v in views.values()) == ["failed"] + ["succeeded"] * 9
    url = f"http://127.0.0.1:{port}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(f"http://127.0.0.1:{port}/other", headers={
        "Authorization": f"Bearer {TOKEN}"}).status_code == 404

    with stack.database.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT operation, http_status, count(*) FROM magento_calls "
            "GROUP BY operation, http_status"))
        audited = {(operation, str(status)): count for operation, status, count in rows}
    deadline = time.monotonic() + 10
    while True:  # each count is made right after its row is committed: allow it a moment
        found = scrape(url)
        exported = {(dict(labels)["operation"], dict(labels)["status"]): value
                    for (name, labels), value in found.items()
                    if name == "refund_worker_magento_calls_total" and value}
        if exported == audited or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert exported == audited
    attempts = "refund_worker_refund_attempts_total"
    assert total(found, attempts, outcome="succeeded") == 9
    assert total(found, attempts, outcome="failed", service="order") == 1
    assert total(found, attempts, outcome="retrying", service="order") == 1
    assert total(found, "refund_worker_reconciliations_total", outcome="not_found") == 1
    assert total(found, "refund_worker_emails_total", outcome="sent") == 8
    assert total(found, "refund_worker_magento_call_duration_seconds_count",
                 operation="invoice_refund") == 8
    slow = total(found, "refund_worker_magento_call_duration_seconds_bucket",
                 operation="invoice_refund", le="0.05")
    assert slow == 0  # every one took 100 ms or more: none in the 50 ms bucket

    with (directory / ".refund-worker.lock").open("a+") as lock, pytest.raises(BlockingIOError):
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by the running worker
    # Several processes wrote their own files; the stale one is gone.
    writers = {path.stem.rsplit("_", 1)[1] for path in directory.glob("*.db")}
    assert "1" not in writers
    assert len(writers - {str(worker.pid)}) >= 2, writers
    logs = "".join(path.read_text(errors="replace") for path in stack.log_dir.glob("*.log"))
    assert "concurrency: 2 (prefork)" in logs
    assert TOKEN not in logs


def run_worker(stack: Stack, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "REFUND_WORKER_METRICS_PORT": str(free_port()), **extra}
    return subprocess.run(
        [sys.executable, "-m", "refund_worker.cli", "worker", "--pool", "solo",
         "--without-gossip", "--without-mingle"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def one_line(result: subprocess.CompletedProcess[str], *named: str) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert len(output.splitlines()) == 1, output
    assert "Traceback" not in output
    for name in named:
        assert name in output


def test_a_misconfigured_exporter_refuses_to_start(sqlite_stack: Stack, tmp_path: Path) -> None:
    stack = sqlite_stack
    stack.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    one_line(run_worker(stack), "PROMETHEUS_MULTIPROC_DIR", "REFUND_WORKER_METRICS_PORT")
    directory = tmp_path / "open"
    directory.mkdir()
    one_line(run_worker(stack, PROMETHEUS_MULTIPROC_DIR=str(directory),
                        REFUND_WORKER_METRICS_HOST="0.0.0.0"), "REFUND_WORKER_METRICS_TOKEN")
    assert os.listdir(directory) == []  # refused before anything was written


def test_the_exporter_s_own_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PROMETHEUS_MULTIPROC_DIR must name"):
        multiproc_dir({})
    with pytest.raises(ConfigurationError, match="is not a directory"):
        multiproc_dir({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")})
    with pytest.raises(ConfigurationError, match="set after prometheus_client was imported"):
        multiproc_dir({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})  # this test process's case
    (tmp_path / "histogram_99999999.db").write_bytes(b"stale")
    lock = claim_multiproc_dir(tmp_path)
    try:
        assert not (tmp_path / "histogram_99999999.db").exists()
        with pytest.raises(ConfigurationError, match="in use by another worker"):
            claim_multiproc_dir(tmp_path)
    finally:
        lock.close()
    claim_multiproc_dir(tmp_path).close()  # released with its holder
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigurationError, match=r"cannot listen on 127\.0\.0\.1"):
            serve(CollectorRegistry(), "127.0.0.1", busy.getsockname()[1], None)
    with pytest.raises(ConfigurationError, match="METRICS_TOKEN must be at least"):
        load_settings(metrics_token="short-token", _env_file=None)
    assert all(is_loopback(host) for host in ("127.0.0.1", "::1", "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "10.0.0.5", "example.com"))
