"""Start-up checks of a real worker process: schema state and configuration."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e]


def run_worker(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refund_worker.cli", "worker", "--pool", "solo",
         "--without-gossip", "--without-mingle"],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def base_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("REFUND_WORKER_")},
        "REFUND_WORKER_BROKER_URL": redis_url,
        "REFUND_WORKER_DATABASE_URL": database_url,
        "REFUND_WORKER_MAGENTO_URL": "http://127.0.0.1:9",
        "REFUND_WORKER_MAGENTO_TOKEN": "startup-test-token",
    }


def test_worker_refuses_an_out_of_date_postgres_schema(pg_url: str, redis_url: str) -> None:
    result = run_worker(base_env(pg_url, redis_url))
    assert result.returncode != 0
    assert "run `refund-worker db upgrade`" in result.stdout + result.stderr


def test_db_upgrade_then_status_on_postgres(pg_url: str, redis_url: str) -> None:
    env = base_env(pg_url, redis_url)
    upgraded = subprocess.run([sys.executable, "-m", "refund_worker.cli", "db", "upgrade"],
                              env=env, capture_output=True, text=True, check=False)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database schema at revision" in upgraded.stdout
    missing = subprocess.run([sys.executable, "-m", "refund_worker.cli", "status", "nope"],
                             env=env, capture_output=True, text=True, check=False)
    assert missing.returncode == 2
    assert "no refund with id or idempotency key 'nope'" in missing.stderr


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"REFUND_WORKER_MAGENTO_TOKEN": "changeme"}, "REFUND_WORKER_MAGENTO_TOKEN"),
        ({"REFUND_WORKER_MAGENTO_URL": ""}, "REFUND_WORKER_MAGENTO_URL"),
        ({"REFUND_WORKER_VISIBILITY_TIMEOUT": "100"}, "REFUND_WORKER_VISIBILITY_TIMEOUT"),
    ],
)
def test_worker_refuses_bad_settings_naming_them(
    sqlite_url: str, redis_url: str, extra: dict[str, str], named: str
) -> None:
    env = {**base_env(sqlite_url, redis_url), **extra}
    result = run_worker(env)
    assert result.returncode != 0
    assert named in result.stdout + result.stderr
    assert "changeme" not in result.stdout + result.stderr  # a bad secret is named, not echoed
