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
    assert "no refund with id 'nope'" in missing.stderr


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


def _one_clear_line(result: subprocess.CompletedProcess[str], named: str) -> None:
    """Exit code 2, the setting named, no traceback, no password."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert named in output
    assert "Traceback" not in output
    assert "s3cret-pw" not in output


@pytest.mark.parametrize(
    "database_url",
    [
        "not a url",
        "mysql://root:s3cret-pw@127.0.0.1/x",
        "postgresql+pg8000://postgres:s3cret-pw@127.0.0.1:5432/test",  # not the psycopg driver
        "postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/test",  # nothing listens there
        "postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:5432/rw_no_such_database",
        "sqlite:////no/such/folder/refunds.db",
    ],
)
@pytest.mark.parametrize("command", [["worker", "--pool", "solo"], ["beat"], ["api"], ["list"]])
def test_an_unusable_database_stops_every_process_at_start(
    redis_url: str, database_url: str, command: list[str], tmp_path: os.PathLike[str]
) -> None:
    env = {**base_env(database_url, redis_url), "REFUND_WORKER_API_KEYS": "[]"}
    argv = [*command, "--port", "0"] if command == ["api"] else command
    if command == ["beat"]:
        argv = [*command, "--schedule", f"{tmp_path}/beat-schedule"]
    result = subprocess.run(
        [sys.executable, "-m", "refund_worker.cli", *argv],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    _one_clear_line(result, "REFUND_WORKER_DATABASE_URL")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"REFUND_WORKER_API_KEYS": '[{"name": '}, "api_keys"),
        ({"REFUND_WORKER_API_KEYS": '[{"name": "x"}]'}, "REFUND_WORKER_API_KEYS"),
        ({"REFUND_WORKER_BROKER_URL": "s3cret-pw"}, "REFUND_WORKER_BROKER_URL"),
    ],
)
def test_malformed_settings_are_one_line_for_the_cli_too(
    sqlite_url: str, redis_url: str, extra: dict[str, str], named: str
) -> None:
    env = {**base_env(sqlite_url, redis_url), **extra}
    # A command that loads the whole settings (status, list and stats read only the database URL).
    result = subprocess.run(
        [sys.executable, "-m", "refund_worker.cli", "replay", "--status", "failed", "--dry-run"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    _one_clear_line(result, named)


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--since", "9999-12-31T23:59:59-23:59"],
        ["list", "--since", "99999999999d"],
        ["list", "--until", "99999999999w"],
        ["stats", "--window", "99999999999d"],
        ["replay", "--status", "failed", "--since", "99999999999d", "--dry-run"],
    ],
)
def test_out_of_range_moments_are_usage_errors(
    sqlite_url: str, redis_url: str, args: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "refund_worker.cli", *args],
        env=base_env(sqlite_url, redis_url), capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "out of range" in result.stderr


def test_the_check_command_names_what_is_down(sqlite_url: str, redis_url: str) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "refund_worker.cli", "check"],
        env=base_env(sqlite_url, redis_url), capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["database:", "ok", "broker:", "ok"]
    down = subprocess.run(
        [sys.executable, "-m", "refund_worker.cli", "check", "broker"],
        env=base_env(sqlite_url, "redis://:s3cret-pw@127.0.0.1:1/0"), capture_output=True,
        text=True, timeout=60, check=False,
    )
    _one_clear_line(down, "REFUND_WORKER_BROKER_URL")
