"""The ``refund-worker`` command: the operator's tool, and the only part of the package that prints.

Each subcommand lives in a module of its own and is imported only when it runs, so ``--help``
and the read-only commands start without loading Celery, FastAPI or the simulator:

=============  ===============================================================
``intake``     ``enqueue``
``reading``    ``status``, ``list``, ``stats``
``replay``     ``replay`` (choosing, showing, replaying)
``database``   ``db upgrade``, ``db prune``, ``check``
``processes``  ``worker``, ``beat``, ``flower``, ``simulator``, ``demo``
``api.cli``    ``api``, ``api-key``
``webhooks``   ``webhooks add|list|enable|disable|deliveries|replay``
=============  ===============================================================

Every command that shows data takes ``--json``; tables are drawn with rich.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from refund_worker.errors import ConfigurationError

#: Every subcommand: (module, attribute, the one-line help ``--help`` shows without importing
#: the module; a test checks each line is the command's own).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "enqueue": (
        "refund_worker.cli.intake",
        "enqueue",
        "Enqueue refunds from FILE (or - for stdin): one JSON object or JSON Lines.",
    ),
    "status": (
        "refund_worker.cli.reading",
        "status",
        "Show one refund (by id, or ``--key KEY``) with its Magento calls and events.",
    ),
    "list": (
        "refund_worker.cli.reading",
        "list_command",
        "List refunds, newest first (``list --status failed --since 1d``).",
    ),
    "stats": (
        "refund_worker.cli.reading",
        "stats",
        "Counts by status, the oldest unsettled refund, attempts, Magento latency p50/p95.",
    ),
    "replay": (
        "refund_worker.cli.replay",
        "replay",
        "Re-run failed refunds under the same idempotency key.",
    ),
    "db": (
        "refund_worker.cli.database",
        "db",
        "Database schema (Alembic migrations shipped with the package) and history pruning.",
    ),
    "check": (
        "refund_worker.cli.database",
        "check",
        "Check that the database and the broker answer; exit 2 naming the setting if not.",
    ),
    "worker": (
        "refund_worker.cli.processes",
        "worker",
        "Run a Celery worker (extra arguments go to ``celery worker``).",
    ),
    "beat": (
        "refund_worker.cli.processes",
        "beat",
        "Run Celery beat, which schedules the sweeper (extra arguments go to ``celery beat``).",
    ),
    "flower": (
        "refund_worker.cli.processes",
        "flower",
        "Run Flower with basic auth from REFUND_WORKER_FLOWER_BASIC_AUTH (extra args to flower).",
    ),
    "simulator": (
        "refund_worker.cli.processes",
        "simulator",
        "Run the Magento simulator (``--host``, ``--port``, ``--seed demo|FILE.json``...).",
    ),
    "demo": (
        "refund_worker.cli.processes",
        "demo",
        "Run a self-contained demo: simulator, in-process broker and worker, temporary SQLite.",
    ),
    "api": (
        "refund_worker.api.cli",
        "api_command",
        "Serve the HTTP API (POST /v1/refunds ...; docs at /docs).",
    ),
    "api-key": (
        "refund_worker.api.cli",
        "api_key_command",
        "Make an API key for NAME: prints the key (once) and the entry for REFUND_WORKER_API_KEYS.",
    ),
    "webhooks": (
        "refund_worker.cli.webhooks",
        "webhooks",
        "Webhook endpoints and their deliveries (docs/webhooks.md).",
    ),
}


class LazyGroup(click.Group):
    """The command group: each command's module is imported when the command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        return load_command(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from ``COMMANDS``, importing nothing."""
        rows = [(name, help_line) for name, (_, _, help_line) in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def load_command(name: str) -> click.Command:
    """The command registered as ``name``, or one that explains why it is unavailable."""
    module_name, attribute, _ = COMMANDS[name]
    try:
        command = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        problem = f"{module_name}.{attribute} cannot be loaded ({type(exc).__name__}: {exc})"

        @click.command(
            name,
            help=f"Unavailable: {problem}.",
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        )
        def unavailable() -> None:
            raise click.ClickException(f"`refund-worker {name}` is not available: {problem}")

        return unavailable
    assert isinstance(command, click.Command)
    return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Refund Magento 2 orders asynchronously: never lose a refund, never refund twice."""


def run(argv: list[str] | None = None) -> Any:
    """Entry point that turns configuration errors into one clear line (exit code 2)."""
    try:
        return main(args=argv, standalone_mode=True)
    except ConfigurationError as exc:
        from refund_worker.cli.output import err_console

        err_console.print(f"configuration error: {exc}", markup=False, soft_wrap=True)
        sys.exit(2)
