"""``refund-worker demo``, the README's first command: run as a newcomer would, with no services
and no ``REFUND_WORKER_*`` settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_the_demo_runs_every_scenario_to_its_expected_end() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_WORKER_")}
    done = subprocess.run(
        [sys.executable, "-m", "refund_worker.cli", "demo", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True
    outcomes = {row["scenario"]: (row["expected"], row["status"]) for row in report["refunds"]}
    assert all(expected == status for expected, status in outcomes.values()), outcomes
    assert {status for _, status in outcomes.values()} == {"succeeded", "failed"}
    # Every notified refund got exactly one email, sent by its own task from its own queue.
    notified = [row for row in report["refunds"] if row["notification_status"] == "sent"]
    assert notified
    assert sorted(report["emails_by_creditmemo"].values()) == [1] * len(notified)
