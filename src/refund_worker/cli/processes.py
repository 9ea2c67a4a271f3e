"""The long-running processes: ``worker``, ``beat``, ``flower``, ``simulator``, and ``demo``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from refund_worker.cli import output
from refund_worker.cli.common import PASSTHROUGH, current_settings
from refund_worker.cli.output import print_json
from refund_worker.errors import ConfigurationError

#: Flower's tasks page shows each task's arguments (the refund id) and its exception.
FLOWER_TASK_COLUMNS = "name,args,state,received,runtime,retries,worker,exception,uuid"


def _celery_argv(command: str, args: Sequence[str], defaults: dict[str, str]) -> list[str]:
    argv = [command]
    for option, value in defaults.items():
        if not any(arg == option or arg.startswith(option + "=") for arg in args):
            argv += [option, value] if value else [option]
    return argv + list(args)


@click.command(context_settings=PASSTHROUGH)
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Celery worker (extra arguments go to ``celery worker``).

    Defaults: ``--pool threads --concurrency 16 --queues refunds -E``: refunds wait on Magento,
    so an I/O pool with many threads per process suits them; run two processes per core (one
    process's threads share one interpreter lock, see docs/performance.md). Whatever ``--queues``
    says, the worker also consumes the emails' (``refunds.notify``) and the sweeper's queues.

    With ``REFUND_WORKER_METRICS_PORT`` set it serves ``/metrics`` (every process's counts, prefork
    children included, summed from ``PROMETHEUS_MULTIPROC_DIR``; docs/metrics.md), or refuses to
    start naming the setting that is wrong.
    """
    settings = current_settings()
    if settings.metrics_port is not None:
        from refund_worker.exporter import serve_worker_metrics

        serve_worker_metrics(settings)
    from refund_worker.celery_app import QUEUE, app

    argv = _celery_argv(
        "worker",
        ctx.args,
        {
            "--pool": "threads",
            "--concurrency": "16",
            "--queues": QUEUE,
            "-E": "",
            "--loglevel": settings.log_level,
        },
    )
    sys.exit(_run_worker(app, argv))


def _run_worker(app: Any, argv: list[str]) -> int:
    """Run the worker; its exit code, which ``app.worker_main`` drops.

    Celery ends a worker stopped by an unrecoverable error with exit code 1 (``EX_FAILURE``), but
    through ``worker_main`` (click in non-standalone mode) the process would exit 0, and a
    supervisor that restarts "on failure" would leave the worker down. The code is read from the
    worker itself, which ``worker_init`` hands over.
    """
    from celery.signals import worker_init

    workers: list[Any] = []

    def remember(sender: Any = None, **_: Any) -> None:
        workers.append(sender)

    worker_init.connect(remember, weak=False)
    try:
        app.worker_main(argv=argv)
    finally:
        worker_init.disconnect(remember)
    code = getattr(workers[-1], "exitcode", None) if workers else None
    return code if isinstance(code, int) else 0


@click.command(context_settings=PASSTHROUGH)
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run Celery beat, which schedules the sweeper (extra arguments go to ``celery beat``).

    Run exactly one beat per deployment.
    """
    from refund_worker.celery_app import app

    level = current_settings().log_level
    app.start(["beat", *_celery_argv("", ctx.args, {"--loglevel": level})[1:]])


def flower_argv(args: Sequence[str]) -> list[str]:
    """Flower's options as Flower parses them: ``--port 5555`` becomes ``--port=5555``; the tasks
    page shows ``FLOWER_TASK_COLUMNS`` unless ``--tasks_columns`` is given, and Flower listens
    on 127.0.0.1 unless ``--address`` says otherwise.

    Flower takes no positional arguments, so a bare word after ``--name`` is its value.
    Refuses ``--basic_auth`` on the command line: every user of the machine can read argv.
    """
    argv: list[str] = []
    names: set[str] = set()
    index = 0
    while index < len(args):
        arg = args[index]
        name = arg.split("=", 1)[0].lstrip("-").replace("-", "_")
        names.add(name)
        if arg.startswith("--") and name == "basic_auth":
            raise click.UsageError(
                "do not pass --basic_auth: set REFUND_WORKER_FLOWER_BASIC_AUTH (argv is visible "
                "to every user in `ps`)"
            )
        following = args[index + 1] if index + 1 < len(args) else None
        if arg.startswith("--") and "=" not in arg and following and not following.startswith("-"):
            argv.append(f"{arg}={following}")
            index += 2
            continue
        argv.append(arg)
        index += 1
    if "tasks_columns" not in names:
        argv.append(f"--tasks_columns={FLOWER_TASK_COLUMNS}")
    if "address" not in names:
        argv.append("--address=127.0.0.1")  # like the API: loopback unless told otherwise
    return argv


def flower_credentials_problem(value: str) -> str | None:
    """Why ``user:password[,user:password]`` would not work as Flower's basic auth, or None.

    Flower splits the value on commas, so a comma inside a password would silently turn its
    halves into separate (and weaker) credentials.
    """
    for credential in value.split(","):
        user, colon, password = credential.partition(":")
        if not (user and colon and password):
            return "must be user:password (several separated by commas, none inside a password)"
    return None


@click.command(context_settings=PASSTHROUGH)
@click.pass_context
def flower(ctx: click.Context) -> None:
    """Run Flower with basic auth from REFUND_WORKER_FLOWER_BASIC_AUTH (extra args to flower).

    ``refund-worker flower --port 5555 --address 127.0.0.1``. The credentials reach Flower
    through its environment (FLOWER_BASIC_AUTH), never through argv.
    """
    settings = current_settings()
    argv = flower_argv(ctx.args)
    credentials = (
        settings.flower_basic_auth.get_secret_value()
        if settings.flower_basic_auth is not None
        else os.environ.get("FLOWER_BASIC_AUTH")
    )
    if not credentials:
        raise ConfigurationError(
            "REFUND_WORKER_FLOWER_BASIC_AUTH is not set: Flower would be open to anyone"
        )
    problem = flower_credentials_problem(credentials)
    if problem is not None:
        raise ConfigurationError(f"REFUND_WORKER_FLOWER_BASIC_AUTH {problem}")
    # Through the environment, not argv: argv is visible to every user in `ps`.
    os.environ["FLOWER_BASIC_AUTH"] = credentials
    from refund_worker.celery_app import app

    app.start(["flower", *argv])


@click.command(context_settings=PASSTHROUGH)
@click.pass_context
def simulator(ctx: click.Context) -> None:
    """Run the Magento simulator (``--host``, ``--port``, ``--seed demo|FILE.json``...)."""
    from refund_worker.simulator.__main__ import main as simulator_main

    sys.exit(simulator_main(list(ctx.args)))


@click.command()
@click.option("--keep", is_flag=True, help="Keep the temporary database and print its path.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def demo(keep: bool, as_json: bool) -> None:
    """Run a self-contained demo: simulator, in-process broker and worker, temporary SQLite."""
    from refund_worker.demo import run_demo

    report = run_demo(keep=keep)
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "summary": report.summary(),
                "seconds": report.seconds,
                "database_path": report.database_path,
                "refunds": [
                    {"scenario": scenario.title, "expected": scenario.expect, **view.summary()}
                    for scenario, _, view in report.rows
                ],
                "emails_by_creditmemo": report.emails,
            }
        )
    else:
        output.console.print(report.table())
        output.console.print(report.notifications_table())
        output.console.print(f"[bold]{report.summary()}[/bold]")
    sys.exit(0 if report.ok else 1)
