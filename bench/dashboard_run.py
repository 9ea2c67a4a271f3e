"""A benchmark run watched by a real Prometheus, drawn as the Grafana dashboard (docs/metrics.md).

One stack (simulator process, PostgreSQL, Redis), one worker (``--pool threads --concurrency 16``)
with its exporter (``PROMETHEUS_MULTIPROC_DIR``, ``REFUND_WORKER_METRICS_PORT``), the API
(``refund-worker api``, for the database's and the broker's gauges) and Prometheus (Debian's
``prometheus``, scraping both every 2 s with the metrics token and evaluating
deploy/prometheus/alerts.yml). The load, in phases:

1. steady: online refunds at ``--rate`` per second;
   (``--call-limit`` Magento calls per second, shared: the burst of phase 3 meets it)
2. Magento degraded: 30% of invoice refunds answer 503 and every one takes 400 ms more (retries,
   reconciliations, the 5xx share, the latency);
3. trouble: refunds of orders on hold (failed), three refunds whose marker a forged credit memo
   carries (needs_attention), a burst of ``--burst`` refunds at once (queue age);
4. recovered: faults removed, steady again.

An order system's webhook receiver (``refund_worker.testing.receiver``, a real socket) is
registered for every event; it answers 500 to 30% of deliveries while Magento is degraded and is
down for the first half of the trouble phase, so deliveries retry and then catch up.

Then ``render_dashboard.py`` draws every panel of deploy/grafana/dashboards/refund-worker.json
from that Prometheus and Chromium screenshots it:

    python bench/dashboard_run.py                 # ~5 min; writes docs/images/grafana-dashboard.png
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import httpx
import render_dashboard

from refund_worker.testing.ports import free_port
from refund_worker.testing.receiver import Receiver

TOKEN = "bench-metrics-token-0123456789"
SECRET_KEY = "bench-webhook-secret-key-0123456789abcdef"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=6.0, help="refunds per second")
    parser.add_argument("--phase", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--burst", type=int, default=800)
    parser.add_argument("--call-limit", type=float, default=40.0, help="Magento calls/s")
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument("--png", type=Path,
                        default=common.ROOT / "docs/images/grafana-dashboard.png")
    args = parser.parse_args()
    with common.stack(args.redis_db, name="dashboard") as stack, tempfile.TemporaryDirectory(
        prefix="dashboard-run-"
    ) as scratch:
        work = Path(scratch)
        (work / "multiproc").mkdir()
        worker_port, api_port, prom_port = free_port(), free_port(), free_port()
        stack.env.update({"PROMETHEUS_MULTIPROC_DIR": str(work / "multiproc"),
                          "REFUND_WORKER_METRICS_PORT": str(worker_port),
                          "REFUND_WORKER_METRICS_TOKEN": TOKEN,
                          "REFUND_WORKER_MAX_ATTEMPTS": "4",
                          "REFUND_WORKER_RETRY_BACKOFF_BASE": "1",
                          "REFUND_WORKER_RETRY_BACKOFF_MAX": "10",
                          "REFUND_WORKER_IN_DOUBT_GRACE_SECONDS": "2",
                          # the shared call limit, so that a burst meets it
                          "REFUND_WORKER_MAGENTO_RATE_LIMIT": str(args.call_limit),
                          "REFUND_WORKER_SECRET_KEY": SECRET_KEY,
                          "REFUND_WORKER_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
                          "REFUND_WORKER_WEBHOOK_RETRY_BASE_SECONDS": "2",
                          "REFUND_WORKER_WEBHOOK_RETRY_MAX_SECONDS": "10"})
        receiver = Receiver().start()
        register_receiver(stack, receiver)
        stack.start_worker(concurrency=16, patches=["metrics-exporter"])
        api_env = {k: v for k, v in stack.env.items()
                   if k not in ("PROMETHEUS_MULTIPROC_DIR", "REFUND_WORKER_METRICS_PORT")}
        api = subprocess.Popen(
            [sys.executable, "-m", "refund_worker.cli", "api", "--port", str(api_port)],
            env=api_env, stdout=(work / "api.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        prometheus = start_prometheus(work, prom_port, worker_port, api_port)
        try:
            wait_ready(f"http://127.0.0.1:{api_port}/healthz")
            wait_ready(f"http://127.0.0.1:{prom_port}/-/ready")
            start = time.time()
            load(stack, args, receiver)
            time.sleep(20)  # the last scrapes
            end = time.time()
            page = render_dashboard.render(
                f"http://127.0.0.1:{prom_port}", start, end, 5.0, "20s",
                "every panel of deploy/grafana/dashboards/refund-worker.json, queried from "
                "Prometheus during `python bench/dashboard_run.py` (drawn by "
                "bench/render_dashboard.py: Grafana cannot be installed offline here)")
            html_path = work / "dashboard.html"
            html_path.write_text(page)
            dashboard = render_dashboard.json.loads(render_dashboard.DASHBOARD.read_text())
            bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
            render_dashboard.screenshot(html_path, args.png, 24 * render_dashboard.COLUMN + 16,
                                        bottom * render_dashboard.ROW + 80)
            alerts = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/alerts").json()
            print("alerts:", sorted({(a["labels"]["alertname"], a["state"])
                                     for a in alerts["data"]["alerts"]}))
            print(f"wrote {args.png} ({start:.0f} - {end:.0f})")
        finally:
            for process in (prometheus, api):
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
            receiver.stop()
            print(f"webhook receiver: {len(receiver.received)} requests, "
                  f"{len(receiver.delivered())} answered 2xx")


def start_prometheus(work: Path, port: int, worker_port: int,
                     api_port: int) -> subprocess.Popen[bytes]:
    (work / "token").write_text(TOKEN)
    alerts = common.ROOT / "deploy/prometheus/alerts.yml"
    (work / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 2s, evaluation_interval: 2s}}
rule_files: ["{alerts}"]
scrape_configs:
  - job_name: refund-worker-api
    authorization: {{credentials_file: "{work / 'token'}"}}
    static_configs: [{{targets: ["127.0.0.1:{api_port}"]}}]
  - job_name: refund-worker-workers
    authorization: {{credentials_file: "{work / 'token'}"}}
    static_configs: [{{targets: ["127.0.0.1:{worker_port}"]}}]
""")
    return subprocess.Popen(
        ["prometheus", f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=(work / "prometheus.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer")
        time.sleep(0.5)


def register_receiver(stack: common.Stack, receiver: Receiver) -> None:
    """The order system's endpoint, for every event type (as ``POST /v1/webhook-endpoints``)."""
    from pydantic import SecretStr

    from refund_worker.outbox import EventType
    from refund_worker.webhooks.endpoints import EndpointRequest, register

    settings = stack.settings.model_copy(update={
        "secret_key": SecretStr(SECRET_KEY), "webhook_allowed_hosts": ["127.0.0.1"]})
    register(stack.database, settings,
             EndpointRequest(url=receiver.url, event_types=list(EventType)),
             tenant="default", created_by="bench")


def load(stack: common.Stack, args: argparse.Namespace, receiver: Receiver) -> None:
    from refund_worker.intake import enqueue_refunds, validate_request

    publisher = stack.publisher()
    orders = common.create_orders(stack.simulator, int(args.rate * args.phase * 4) + args.burst,
                                  "online")
    sim = httpx.Client(base_url=stack.simulator.url, timeout=30)
    counter = [0]

    def send(requests: list[dict[str, Any]]) -> None:
        enqueue_refunds([validate_request(r) for r in requests], database=stack.database,
                        publisher=publisher)

    def steady(seconds: float, extra: Any = None) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            batch = []
            for _ in range(max(1, round(args.rate))):
                order_id, invoice_id, _ = orders[counter[0]]
                counter[0] += 1
                batch.append({"idempotency_key": f"dash-{counter[0]}", "order_id": order_id,
                              "invoice_id": invoice_id, "notify_customer": True})
            send(batch)
            if extra is not None:
                extra()
            time.sleep(1.0)

    print("phase 1: steady")
    steady(args.phase)
    print("phase 2: Magento degraded")
    receiver.mode = "flaky:0.3"
    sim.post("/_simulator/faults", json={"faults": [
        {"route": "invoice_refund", "kind": "status", "status": 503, "probability": 0.3},
        {"route": "invoice_refund", "kind": "latency", "ms": 400}]}).raise_for_status()
    steady(args.phase)
    print("phase 3: trouble")
    sim.delete("/_simulator/faults").raise_for_status()
    receiver.mode = "ok"
    receiver.stop()  # the order system is down for a while: its deliveries retry
    held = [sim.post("/_simulator/orders", json={
        "payment_method": "checkmo", "state": "holded",
        "items": [{"sku": "LAMP", "qty": 1, "price": 80}]}).json() for _ in range(12)]
    send([{"idempotency_key": f"held-{n}", "order_id": order["order_id"]}
          for n, order in enumerate(held)])
    forge_needs_attention(stack, sim, publisher)
    burst = []
    for _ in range(args.burst):
        order_id, invoice_id, _ = orders[counter[0]]
        counter[0] += 1
        burst.append({"idempotency_key": f"burst-{counter[0]}", "order_id": order_id,
                      "invoice_id": invoice_id})
    send(burst)
    steady(args.phase / 4)
    receiver.start()
    steady(args.phase / 4)
    print("phase 4: recovered")
    steady(args.phase)
    sim.close()


class _Unpublished:
    def publish_refunds(self, refund_ids: Any) -> None:
        pass

    def publish_notifications(self, refund_ids: Any) -> None:
        pass


def forge_needs_attention(stack: common.Stack, sim: httpx.Client, publisher: Any) -> None:
    """Three refunds whose marker a credit memo of another item carries (made through Magento's
    own REST route, as a person in the admin could), each met by one 500 on its refund call: the
    reconciliation finds the misfit and the refund waits for a person."""
    from sqlalchemy import text

    from refund_worker.intake import enqueue_refunds, validate_request
    from refund_worker.markers import comment_with_marker, marker_for

    for n in range(3):
        order = sim.post("/_simulator/orders", json={
            "payment_method": "checkmo", "shipped": True,
            "items": [{"sku": "SHIRT", "qty": 1, "price": 20},
                      {"sku": "MUG", "qty": 1, "price": 8}]}).json()
        items = sim.get(f"/_simulator/orders/{order['order_id']}").json()["items"]
        first, second = items[0]["item_id"], items[1]["item_id"]
        key = f"forged-{n}"
        enqueue_refunds([validate_request({
            "idempotency_key": key, "order_id": order["order_id"],
            "items": [{"order_item_id": first, "qty": 1}]})], database=stack.database,
            publisher=_Unpublished())  # published below, once the forged memo exists
        with stack.database.engine.connect() as connection:
            refund_id, token = connection.execute(text(
                "SELECT id, marker_token FROM refunds WHERE idempotency_key = :key"),
                {"key": key}).one()
        forged = sim.post(
            f"/rest/default/V1/order/{order['order_id']}/refund",
            headers={"Authorization": f"Bearer {common.TOKEN}"},
            json={"items": [{"order_item_id": second, "qty": 1}], "notify": False,
                  "arguments": {"shipping_amount": 0},
                  "comment": {"comment": comment_with_marker(marker_for(refund_id, token), None),
                              "is_visible_on_front": 0}})
        sim.post("/_simulator/faults", json={"route": "order_refund", "kind": "status",
                                             "status": 500, "order_id": order["order_id"],
                                             "count": 1}).raise_for_status()
        publisher.publish_refunds([refund_id])
        if forged.status_code != 200:
            print("could not forge a credit memo:", forged.status_code, forged.text[:200])


if __name__ == "__main__":
    main()
