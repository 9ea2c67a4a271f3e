"""Flower against a real worker on the machine's Redis: it sees ``refunds.process`` with the refund
id, succeeded and failed; it asks for credentials; it serves Prometheus metrics; and a headless
Chromium shows the refunds on its tasks page."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.ops.conftest import (
    FLOWER_PASSWORD,
    FLOWER_USER,
    AuthProxy,
    FlowerStack,
    artifact,
    chromium_argv,
    chromium_binary,
    wait_until,
)
from tests.ops.deploy_files import ENV, health_url, interpolate_all, load_compose

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.slow]


def run_refunds(flower: FlowerStack) -> tuple[str, str]:
    """One refund that succeeds and one Magento refuses (the order is on hold)."""
    state = flower.stack.state
    fine = state.add_order(
        {
            "payment_method": "checkmo",
            "shipped": True,
            "items": [{"sku": "BAG", "qty": 1, "price": 30}],
        }
    )
    held = state.add_order(
        {
            "payment_method": "checkmo",
            "state": "holded",
            "items": [{"sku": "LAMP", "qty": 1, "price": 80}],
        }
    )
    ok, failing = flower.stack.enqueue(
        {"idempotency_key": "flower-ok", "order_id": fine["order_id"]},
        {"idempotency_key": "flower-held", "order_id": held["order_id"]},
    )
    views = flower.stack.wait_settled([ok.refund_id, failing.refund_id], timeout=60)
    assert views[ok.refund_id].status.value == "succeeded"
    assert views[failing.refund_id].status.value == "failed"
    return ok.refund_id, failing.refund_id


def wait_for_tasks(flower: FlowerStack, *refund_ids: str) -> dict[str, dict[str, object]]:
    """refund id -> Flower's task, once every one has reached a final state."""

    def seen() -> dict[str, dict[str, object]] | None:
        by_refund = {}
        for task in flower.tasks().values():
            for refund_id in refund_ids:
                if refund_id in str(task.get("args")):
                    by_refund[refund_id] = task
        final = all(by_refund.get(r, {}).get("state") in ("SUCCESS", "FAILURE") for r in refund_ids)
        return by_refund if final else None

    found: dict[str, dict[str, object]] = wait_until(
        seen, 30, "both tasks in Flower", flower.stack.logs
    )
    return found


def test_flower_shows_refund_tasks_behind_basic_auth(flower_stack: FlowerStack) -> None:
    ok, failing = run_refunds(flower_stack)

    tasks = wait_for_tasks(flower_stack, ok, failing)
    assert tasks[ok]["name"] == tasks[failing]["name"] == "refunds.process"
    assert tasks[ok]["args"] == f"('{ok}',)"
    assert tasks[ok]["state"] == "SUCCESS"
    assert tasks[failing]["state"] == "FAILURE"
    assert "hold" in str(tasks[failing]["exception"]).lower()

    workers = flower_stack.get("/api/workers?refresh=1").json()
    [worker_name] = workers
    # `-Q refunds`, and the emails', the sweeper's and the webhooks' queues, which every worker
    # consumes.
    assert {queue["name"] for queue in workers[worker_name]["active_queues"]} == {
        "refunds",
        "refunds.notify",
        "refunds.sweep",
        "webhooks",
    }

    for path in ("/api/workers?refresh=1", "/api/tasks", "/tasks", "/"):
        assert flower_stack.get(path, auth=None).status_code == 401, path
        assert flower_stack.get(path, auth=(FLOWER_USER, "wrong")).status_code == 401, path
        assert flower_stack.get(path).status_code == 200, path
    # The credentials travelled through the environment: not in any process's argv.
    for process in flower_stack.stack.processes:
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert FLOWER_PASSWORD.encode() not in cmdline

    metrics = flower_stack.get("/metrics")
    assert metrics.status_code == 200
    assert 'task="refunds.process"' in metrics.text
    assert 'type="task-succeeded"' in metrics.text
    assert 'type="task-failed"' in metrics.text
    assert "flower_task_runtime_seconds" in metrics.text
    # Flower 2 serves /metrics and /healthcheck without credentials (docs/operations.md says so).
    assert flower_stack.get("/metrics", auth=None).status_code == 200

    # The compose health check asks a path Flower answers without credentials.
    services = interpolate_all(load_compose(), ENV)["services"]
    _, path = health_url(services["flower"])
    health = flower_stack.get(path, auth=None)
    assert (health.status_code, health.text) == (200, "OK")


def test_screenshot_of_flowers_tasks_page(flower_stack: FlowerStack, tmp_path: Path) -> None:
    binary = chromium_binary()
    ok, failing = run_refunds(flower_stack)
    wait_for_tasks(flower_stack, ok, failing)
    screenshot = artifact(tmp_path, "flower-tasks.png")
    screenshot.unlink(missing_ok=True)

    with AuthProxy(flower_stack.url, FLOWER_USER, FLOWER_PASSWORD) as proxy:
        page = f"{proxy}/tasks"
        dom = subprocess.run(
            chromium_argv(binary, tmp_path / "profile-dom", page, "--dump-dom"),
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        ).stdout
        subprocess.run(
            chromium_argv(binary, tmp_path / "profile-shot", page, f"--screenshot={screenshot}"),
            capture_output=True,
            timeout=90,
            check=True,
        )

    artifact(tmp_path, "flower-tasks.html").write_text(dom)
    # What the browser rendered after Flower's table loaded: both refunds, with their states.
    assert ok in dom
    assert failing in dom
    assert "refunds.process" in dom
    assert "SUCCESS" in dom
    assert "FAILURE" in dom
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 900)
    assert len(data) > 30_000, "the screenshot looks blank"
