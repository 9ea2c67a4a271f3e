"""The ``refund-worker`` command: the operator's tool, and the only module that prints."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any

import click
from rich.console import Console
from rich.table import Table

from refund_worker.errors import ConfigurationError, RefundWorkerError

console = Console()
err_console = Console(stderr=True)


def _settings() -> Any:
    from refund_worker.settings import get_settings

    return get_settings()


def _database() -> Any:
    from refund_worker.db import database_for

    database = database_for(_settings().database_url)
    database.prepare()
    return database


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Refund Magento 2 orders asynchronously: never lose a refund, never refund twice."""


# -- intake ----------------------------------------------------------------------------------


def read_requests(stream: IO[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of each request: one JSON object, or JSON Lines."""
    text = stream.read()
    stripped = text.strip()
    if not stripped:
        return
    if stripped.startswith("{") and "\n" in stripped:
        try:
            json.loads(stripped)
        except json.JSONDecodeError:
            pass
        else:
            yield 1, stripped  # one pretty-printed object
            return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


@main.command()
@click.argument("source", type=click.File("r"), default="-")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
def enqueue(source: IO[str], as_json: bool) -> None:
    """Enqueue refunds from FILE (or - for stdin): one JSON object or JSON Lines.

    Each bad line is reported with its number and the rest still go in; the exit code is 1
    when any line was refused (a repeated key with the same payload is not a refusal).
    """
    from refund_worker import intake
    from refund_worker.tasks import CeleryPublisher

    database = _database()
    refused = received = 0
    accepted: list[tuple[int, Any]] = []
    for number, line in read_requests(source):
        try:
            accepted.append((number, intake.validate_request(line)))
        except RefundWorkerError as exc:
            refused += 1
            _report_line(number, None, str(exc), as_json)
    results = intake.enqueue_refunds(
        (request for _, request in accepted), database=database, publisher=CeleryPublisher()
    )
    for (number, _), result in zip(accepted, results, strict=True):
        if isinstance(result, intake.IntakeRejection):
            refused += 1
            _report_line(number, None, str(result.error), as_json)
        else:
            received += 1
            _report_line(number, result.model_dump(mode="json"), None, as_json)
    if not as_json:
        err_console.print(f"{received} accepted, {refused} refused")
    sys.exit(1 if refused else 0)


def _report_line(
    number: int, receipt: dict[str, Any] | None, error: str | None, as_json: bool
) -> None:
    if as_json:
        click.echo(json.dumps({"line": number, "receipt": receipt, "error": error}))
    elif error is not None:
        err_console.print(f"line {number}: refused: {error}", markup=False, highlight=False)
    else:
        assert receipt is not None
        note = " (duplicate: already accepted)" if receipt["duplicate"] else ""
        console.print(
            f"line {number}: {receipt['refund_id']} {receipt['status']}{note}",
            markup=False,
            highlight=False,
        )


# -- looking at refunds ----------------------------------------------------------------------


@main.command()
@click.argument("id_or_key")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(id_or_key: str, as_json: bool) -> None:
    """Show one refund (by id or idempotency key) with its Magento calls."""
    from refund_worker.queries import refund_view

    with _database().session_scope() as session:
        view = refund_view(session, id_or_key)
    if view is None:
        err_console.print(f"no refund with id or idempotency key {id_or_key!r}", markup=False)
        sys.exit(2)
    if as_json:
        _print_json(view.model_dump(mode="json"))
        return
    table = Table(show_header=False, title=f"refund {view.id}")
    for key, value in view.summary().items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)
    calls = Table("attempt", "operation", "HTTP", "ms", "error", title="Magento calls")
    for call in view.calls:
        calls.add_row(
            str(call.attempt),
            call.operation,
            str(call.http_status or "-"),
            f"{call.duration_ms:.0f}",
            call.error or "",
        )
    console.print(calls)


# -- database --------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (Alembic migrations shipped with the package)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION."""
    from refund_worker.db import make_engine, schema_revisions, upgrade

    engine = make_engine(_settings().database_url)
    upgrade(engine, revision)
    current, _ = schema_revisions(engine)
    console.print(f"database schema at revision {current}")


# -- processes -------------------------------------------------------------------------------


def _celery_argv(command: str, args: Sequence[str], defaults: dict[str, str]) -> list[str]:
    argv = [command]
    for option, value in defaults.items():
        if not any(arg == option or arg.startswith(option + "=") for arg in args):
            argv += [option, value] if value else [option]
    return argv + list(args)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Celery worker (extra arguments go to ``celery worker``).

    Defaults: ``--pool threads --concurrency 32 --queues refunds -E``: refunds wait on Magento,
    so an I/O pool with many threads per process suits them; run one process per core.
    """
    from refund_worker.celery_app import QUEUE, app

    argv = _celery_argv(
        "worker",
        ctx.args,
        {
            "--pool": "threads",
            "--concurrency": "32",
            "--queues": QUEUE,
            "-E": "",
            "--loglevel": _settings().log_level,
        },
    )
    app.worker_main(argv=argv)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run Celery beat, which schedules the sweeper (extra arguments go to ``celery beat``)."""
    from refund_worker.celery_app import app

    app.start(["beat", *_celery_argv("", ctx.args, {"--loglevel": _settings().log_level})[1:]])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def flower(ctx: click.Context) -> None:
    """Run Flower with basic auth from REFUND_WORKER_FLOWER_BASIC_AUTH (extra args to flower)."""
    from refund_worker.celery_app import app

    settings = _settings()
    if settings.flower_basic_auth is None and not os.environ.get("FLOWER_BASIC_AUTH"):
        raise ConfigurationError(
            "REFUND_WORKER_FLOWER_BASIC_AUTH is not set: Flower would be open to anyone"
        )
    if settings.flower_basic_auth is not None:
        # Through the environment, not argv: argv is visible to every user in `ps`.
        os.environ["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
    app.start(["flower", *ctx.args])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def simulator(ctx: click.Context) -> None:
    """Run the Magento simulator (``--host``, ``--port``, ``--seed demo|FILE.json``...)."""
    from refund_worker.simulator.__main__ import main as simulator_main

    sys.exit(simulator_main(list(ctx.args)))


@main.command()
@click.option("--keep", is_flag=True, help="Keep the temporary database and print its path.")
def demo(keep: bool) -> None:
    """Run a self-contained demo: simulator, in-process broker and worker, temporary SQLite."""
    from refund_worker.demo import run_demo

    report = run_demo(keep=keep)
    console.print(report.table())
    console.print(report.notifications_table())
    console.print(f"[bold]{report.summary()}[/bold]")
    sys.exit(0 if report.ok else 1)


def run() -> None:
    """Entry point that turns configuration errors into one clear line."""
    try:
        main(standalone_mode=True)
    except ConfigurationError as exc:
        err_console.print(f"configuration error: {exc}", markup=False)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    run()
