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
from refund_worker.cli import processes
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
    monkeypatch.setitem(
        cli.COMMANDS, "api", ("refund_worker.api.nowhere", "api_command", "Serve the HTTP API.")
    )
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
    columns = f"--tasks_columns={processes.FLOWER_TASK_COLUMNS}"
    loopback = [] if "--address" in args else ["--address=127.0.0.1"]
    assert processes.flower_argv(args) == [*expected, columns, *loopback]
    assert "args" in processes.FLOWER_TASK_COLUMNS.split(",")  # the refund id is visible


def test_flower_listens_on_loopback_unless_told_otherwise() -> None:
    assert "--address=127.0.0.1" in processes.flower_argv([])
    assert processes.flower_argv(["--address=0.0.0.0"]).count("--address=0.0.0.0") == 1
    given = processes.flower_argv(["--address", "::"])
    assert not any(a.startswith("--address=127") for a in given)


def test_flower_argv_keeps_chosen_columns() -> None:
    assert processes.flower_argv(["--tasks-columns", "name,uuid"]) == [
        "--tasks-columns=name,uuid",
        "--address=127.0.0.1",
    ]


@pytest.mark.parametrize("arg", ["--basic_auth=u:p", "--basic-auth", "--basic_auth"])
def test_flower_refuses_credentials_in_argv(arg: str) -> None:
    with pytest.raises(click.UsageError, match="REFUND_WORKER_FLOWER_BASIC_AUTH"):
        processes.flower_argv([arg, "u:p"])


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
    assert (processes.flower_credentials_problem(value) is None) is ok


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
    bad = _run("list", env=_clean_env(REFUND_WORKER_DATABASE_URL="mysql://h/db"), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        "configuration error: invalid settings: REFUND_WORKER_DATABASE_URL: the 'mysql' database"
    )
    # The read-only commands read the database URL alone; the others build every setting.
    unsound = _clean_env(REFUND_WORKER_LEASE_SECONDS="1")
    assert _run("list", env=unsound, cwd=tmp_path).returncode == 0
    bad = _run("replay", "--status", "failed", "--dry-run", env=unsound, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("configuration error: invalid settings")
    assert bad.stderr.count("\n") == 1


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


def test_the_registry_shows_each_commands_own_help_line() -> None:
    for name, (_, _, help_line) in cli.COMMANDS.items():
        assert cli.load_command(name).get_short_help_str(limit=300) == help_line, name


#: What no read-only command may load: the broker's client, the API, and (for their start time,
#: docs/performance.md) pydantic, the settings' model and the ORM.
READ_ONLY_NEVER = {
    "celery",
    "kombu",
    "fastapi",
    "alembic",
    "prometheus_client",
    "pydantic",
    "pydantic_settings",
    "sqlalchemy.orm",
    "refund_worker.simulator",
    "refund_worker.settings",
    "refund_worker.models",
}


def _loaded_by(argv: list[str]) -> set[str]:
    """The modules ``refund-worker argv`` loads, in a fresh interpreter."""
    probe = (
        "import sys\n"
        "from refund_worker.cli import run\n"
        f"try:\n    run({argv!r})\nexcept SystemExit as exc:\n    assert not exc.code, exc\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stderr.split())


def _among(loaded: set[str], never: set[str]) -> set[str]:
    return {name for name in loaded if name in never or name.split(".")[0] in never}


@pytest.mark.parametrize(
    ("argv", "never"),
    [
        (["--help"], {"celery", "sqlalchemy", "pydantic", "fastapi", "rich", "refund_worker.db"}),
        (["list", "--help"], READ_ONLY_NEVER),
        (["status", "--help"], READ_ONLY_NEVER),
        (["stats", "--help"], READ_ONLY_NEVER),
    ],
)
def test_commands_import_only_what_they_need(argv: list[str], never: set[str]) -> None:
    assert not _among(_loaded_by(argv), never)


def test_read_only_commands_load_neither_celery_nor_pydantic_nor_the_orm(any_cli: Cli) -> None:
    """``status``, ``list`` and ``stats`` answering from a database (SQLite, then PostgreSQL)
    load none of ``READ_ONLY_NEVER``: a property of their imports, not a timing."""
    refund_id = any_cli.add("rma-light", status="failed", last_error="on hold")
    any_cli.add_call(refund_id, "order_get", 12.0)
    for argv in (
        ["status", refund_id],
        ["status", "--key", "rma-light", "--json"],
        ["list"],
        ["list", "--status", "failed", "--since", "1d", "--json"],
        ["stats"],
        ["stats", "--json"],
    ):
        loaded = _loaded_by(argv)
        assert "sqlalchemy" in loaded, argv  # it did read the database
        assert not _among(loaded, READ_ONLY_NEVER), argv
