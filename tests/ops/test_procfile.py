"""The Procfile under honcho: ``release`` migrates; ``worker beat flower`` refund and show it in
Flower, and all stop on SIGTERM. The machine's Redis (a database of its own), SQLite in tmp_path,
the simulator on a real socket."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect

from refund_worker.celery_app import create_app
from refund_worker.db import Database
from refund_worker.intake import enqueue_refunds, validate_request
from refund_worker.publishing import CeleryPublisher
from refund_worker.queries import refund_view
from refund_worker.schemas import RefundReceipt
from refund_worker.settings import Settings
from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import running_simulator
from tests.e2e.conftest import FAST, SIM_TOKEN
from tests.ops.conftest import FLOWER_PASSWORD, FLOWER_USER, free_port, wait_until
from tests.ops.deploy_files import PROCFILE

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Setup:
    settings: dict[str, str]  # what the env file holds
    order_id: int  # a refundable order in the simulator


@pytest.fixture
def setup(sqlite_url: str, redis_url: str) -> Iterator[Setup]:
    """The env file's settings, with the simulator serving one refundable order."""
    with running_simulator(SimulatorState(tokens={SIM_TOKEN: None})) as simulator:
        order = simulator.state.add_order(
            {
                "payment_method": "checkmo",
                "shipped": True,
                "items": [{"sku": "MUG", "qty": 1, "price": 12}],
            }
        )
        yield Setup(
            {
                **FAST,
                "REFUND_WORKER_BROKER_URL": redis_url,
                "REFUND_WORKER_DATABASE_URL": sqlite_url,
                "REFUND_WORKER_MAGENTO_URL": simulator.url,
                "REFUND_WORKER_MAGENTO_TOKEN": SIM_TOKEN,
                "REFUND_WORKER_FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}",
                "FLOWER_PORT": str(free_port()),
                "PYTHONUNBUFFERED": "1",
            },
            int(order["order_id"]),
        )


def honcho(
    tmp_path: Path, settings: dict[str, str], *args: str, log: Path
) -> subprocess.Popen[bytes]:
    env_file = tmp_path / "refund-worker.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    executable = shutil.which("honcho", path=str(BIN))
    assert executable, "honcho is not installed in the virtualenv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFUND_WORKER_", "FLOWER_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.Popen(
        [executable, "-f", str(PROCFILE), "-e", str(env_file), "--no-colour", "start", *args],
        cwd=tmp_path,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_procfile_runs_under_honcho(setup: Setup, tmp_path: Path) -> None:
    log = tmp_path / "honcho.log"

    def logs() -> str:
        return log.read_text(errors="replace")[-6000:]

    release = honcho(tmp_path, setup.settings, "release", log=tmp_path / "release.log")
    assert release.wait(timeout=60) == 0, (tmp_path / "release.log").read_text()
    database = Database.from_url(setup.settings["REFUND_WORKER_DATABASE_URL"])
    try:
        assert "refunds" in inspect(database.engine).get_table_names()

        manager = honcho(tmp_path, setup.settings, "worker", "beat", "flower", log=log)
        try:
            flower = f"http://127.0.0.1:{setup.settings['FLOWER_PORT']}"
            auth = (FLOWER_USER, FLOWER_PASSWORD)
            wait_until(
                lambda: httpx.get(f"{flower}/api/workers?refresh=1", auth=auth, timeout=5).json(),
                45,
                "the worker in Flower",
                logs,
            )

            settings = Settings(
                **{
                    key.removeprefix("REFUND_WORKER_").lower(): value  # type: ignore[arg-type]
                    for key, value in setup.settings.items()
                    if key.startswith("REFUND_WORKER_")
                }
            )
            [receipt] = enqueue_refunds(
                [validate_request({"idempotency_key": "procfile-1", "order_id": setup.order_id})],
                database=database,
                publisher=CeleryPublisher(create_app(settings)),
            )
            assert isinstance(receipt, RefundReceipt)

            def settled() -> str | None:
                with database.session_scope() as session:
                    view = refund_view(session, receipt.refund_id)
                assert view is not None
                return view.status.value if view.status.value in ("succeeded", "failed") else None

            assert wait_until(settled, 45, "the refund settled", logs) == "succeeded"

            def tasks_by_name() -> dict[str, list[dict[str, Any]]] | None:
                found: dict[str, list[dict[str, Any]]] = {}
                for task in httpx.get(f"{flower}/api/tasks", auth=auth, timeout=5).json().values():
                    if task.get("state") == "SUCCESS":
                        found.setdefault(task["name"], []).append(task)
                return found if {"refunds.process", "refunds.sweep"} <= set(found) else None

            # The refund, and the sweeper that beat schedules, both ran in the worker.
            tasks = wait_until(tasks_by_name, 20, "the refund and a sweep in Flower", logs)
            [task] = tasks["refunds.process"]
            assert receipt.refund_id in task["args"]
            assert task["worker"].startswith("worker-5000@")  # honcho's $PORT for the first
            assert httpx.get(f"{flower}/api/tasks", timeout=5).status_code == 401
        finally:
            children = descendants(manager.pid)
            manager.send_signal(signal.SIGTERM)
            code = manager.wait(timeout=30)
        assert len(children) >= 3, "honcho started too little"
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in children if alive(pid)] == [], logs()
        assert code in (0, 143), logs()  # 143: honcho's code after forwarding SIGTERM
        for name in ("worker.1", "beat.1", "flower.1"):
            assert f"{name} stopped" in logs(), logs()
    finally:
        database.dispose()
