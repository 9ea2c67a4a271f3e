"""The command group itself: registration of the API's commands, Flower's arguments, entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from refund_worker import cli
from refund_worker.errors import ConfigurationError
from refund_worker.settings import get_settings
from tests.cli.conftest import Cli


def test_every_command_is_listed() -> None:
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0
    for name in (
        "enqueue",
        "status",
        "list",
        "stats",
        "replay",
        "db",
        "worker",
        "beat",
        "flower",
        "simulator",
        "demo",
        "api",
        "api-key",
    ):
        assert f"  {name} " in result.output, name


def test_the_api_commands_come_from_the_api_package() -> None:
    from refund_worker.api.cli import api_command, api_key_command

    context = click.Context(cli.main)
    assert cli.main.get_command(context, "api") is api_command
    assert cli.main.get_command(context, "api-key") is api_key_command
    result = CliRunner().invoke(cli.main, ["api", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output


def test_a_lazy_command_that_cannot_load_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.LAZY_COMMANDS, "api", ("refund_worker.api.nowhere", "api_command"))
    result = CliRunner().invoke(cli.main, ["api", "--port", "1"])
    assert result.exit_code == 1
    assert "`refund-worker api` is not available" in result.output
    assert "refund_worker.api.nowhere" in result.output
    assert CliRunner().invoke(cli.main, ["--help"]).exit_code == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "5555", "--address", "127.0.0.1"], ["--port=5555", "--address=127.0.0.1"]),
        (
            ["--port=5555", "--persistent", "--db", "/tmp/f"],
            ["--port=5555", "--persistent", "--db=/tmp/f"],
        ),
        (["--persistent", "--max_tasks", "100"], ["--persistent", "--max_tasks=100"]),
        ([], []),
    ],
)
def test_flower_argv(args: list[str], expected: list[str]) -> None:
    columns = f"--tasks_columns={cli.FLOWER_TASK_COLUMNS}"
    loopback = [] if "--address" in args else ["--address=127.0.0.1"]
    assert cli.flower_argv(args) == [*expected, columns, *loopback]
    assert "args" in cli.FLOWER_TASK_COLUMNS.split(",")  # the refund id is visible


def test_flower_listens_on_loopback_unless_told_otherwise() -> None:
    assert "--address=127.0.0.1" in cli.flower_argv([])
    assert cli.flower_argv(["--address=0.0.0.0"]).count("--address=0.0.0.0") == 1
    assert not any(a.startswith("--address=127") for a in cli.flower_argv(["--address", "::"]))


def test_flower_argv_keeps_chosen_columns() -> None:
    assert cli.flower_argv(["--tasks-columns", "name,uuid"]) == [
        "--tasks-columns=name,uuid",
        "--address=127.0.0.1",
    ]


@pytest.mark.parametrize("arg", ["--basic_auth=u:p", "--basic-auth", "--basic_auth"])
def test_flower_refuses_credentials_in_argv(arg: str) -> None:
    with pytest.raises(click.UsageError, match="REFUND_WORKER_FLOWER_BASIC_AUTH"):
        cli.flower_argv([arg, "u:p"])


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("ops:s3cret", True),
        ("ops:s3cret,audit:an0ther", True),
        ("ops:pass:with:colons", True),
        ("ops:sec,ret", False),  # Flower would accept "ops:sec" alone
        ("ops:", False),
        (":pw", False),
        ("nocolon", False),
    ],
)
def test_flower_credentials(value: str, ok: bool) -> None:
    assert (cli.flower_credentials_problem(value) is None) is ok


def _run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("refund-worker", path=os.path.dirname(sys.executable))
    assert executable is not None, "the refund-worker console script is not installed"
    return subprocess.run(
        [executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def _clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFUND_WORKER_", "FLOWER_"))}
    return {**env, **values}


@pytest.mark.parametrize(
    ("value", "message"),
    [(None, "REFUND_WORKER_FLOWER_BASIC_AUTH is not set"), ("ops:a,b", "none inside a password")],
)
def test_flower_refuses_to_start_without_sound_credentials(
    cli_run: Cli, monkeypatch: pytest.MonkeyPatch, value: str | None, message: str
) -> None:
    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    if value is not None:
        monkeypatch.setenv("REFUND_WORKER_FLOWER_BASIC_AUTH", value)
    result = cli_run.runner.invoke(cli.main, ["flower", "--port", "1"])
    assert isinstance(result.exception, ConfigurationError)
    assert message in str(result.exception)
    assert "FLOWER_BASIC_AUTH" not in os.environ


def test_entry_point_end_to_end(cli_run: Cli, tmp_path: Path) -> None:
    refund_id = cli_run.add("rma-entry", status="failed", last_error="on hold")
    env = _clean_env(
        REFUND_WORKER_DATABASE_URL=os.environ["REFUND_WORKER_DATABASE_URL"],
        REFUND_WORKER_BROKER_URL="memory://",
    )
    listed = _run("list", "--status", "failed", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == [refund_id]
    bad = _run("list", env=_clean_env(REFUND_WORKER_LEASE_SECONDS="1"), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("configuration error: invalid settings")


@pytest.mark.filterwarnings("ignore::celery.exceptions.SecurityWarning")  # tests may run as root
@pytest.mark.parametrize("exitcode", [1, 0])
def test_the_workers_exit_code_is_the_commands(
    cli_run: Cli, monkeypatch: pytest.MonkeyPatch, exitcode: int
) -> None:
    """A worker Celery stopped with an unrecoverable error exits 1 (``EX_FAILURE``), not 0 as
    through ``app.worker_main``: a supervisor restarting "on failure" would leave it down. Real
    click and Celery path; only the worker's run is replaced by its outcome."""
    from celery.worker.worker import WorkController

    monkeypatch.setenv("REFUND_WORKER_MAGENTO_URL", "http://magento.invalid")
    monkeypatch.setenv("REFUND_WORKER_MAGENTO_TOKEN", "t0ken-for-the-test")
    get_settings.cache_clear()

    def run(self: WorkController) -> None:
        self.stop(exitcode=exitcode)

    monkeypatch.setattr(WorkController, "start", run)
    result = CliRunner().invoke(cli.main, ["worker", "--loglevel", "WARNING"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == exitcode, result.output
