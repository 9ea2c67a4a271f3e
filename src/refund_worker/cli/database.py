"""``refund-worker db upgrade``, ``db prune`` and ``refund-worker check``: the schema, the history
and the wiring."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from refund_worker.cli import output
from refund_worker.cli.common import current_settings, duration, open_database, utc_now
from refund_worker.cli.output import print_json
from refund_worker.errors import ConfigurationError


@click.group()
def db() -> None:
    """Database schema (Alembic migrations shipped with the package) and history pruning."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def db_upgrade(revision: str, as_json: bool) -> None:
    """Apply migrations up to REVISION."""
    from refund_worker.db import make_engine, schema_revisions, upgrade

    engine = make_engine(current_settings().database_dsn)
    try:
        upgrade(engine, revision)
        current, head = schema_revisions(engine)
    finally:
        engine.dispose()
    if as_json:
        print_json({"revision": current, "head": head})
    else:
        output.console.print(f"database schema at revision {current}")


def _retention(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    """``--older-than``: a duration (``180d``, ``26w``) of at least the minimum retention."""
    from refund_worker.retention import check_retention

    older_than = duration(ctx, param, value)
    try:
        return check_retention(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@db.command("prune")
@click.option(
    "--older-than",
    "older_than",
    metavar="DURATION",
    required=True,
    callback=_retention,
    help="History of refunds settled and unchanged this long (180d, 26w; at least 30d).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
@click.option(
    "--batch",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Rows removed per transaction.",
)
@click.option(
    "--pause",
    type=click.FloatRange(0, 60),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Sleep between batches (leave the database to the workers).",
)
@click.option(
    "--include-refunds",
    is_flag=True,
    help="Remove the settled refund rows themselves too (by default they stay).",
)
@click.option(
    "--archive",
    type=click.Path(dir_okay=False, writable=True),
    metavar="FILE.jsonl.gz",
    help="Write every removed row to this new gzip JSON Lines file before it is removed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def db_prune(
    older_than: timedelta,
    dry_run: bool,
    batch: int,
    pause: float,
    include_refunds: bool,
    archive: str | None,
    as_json: bool,
) -> None:
    """Remove the audit rows and events of refunds settled longer ago than --older-than.

    Only refunds that are succeeded, failed or need attention, not in doubt, with no email on
    its way and unchanged since the cutoff lose their history; a refund in flight keeps all of
    it. Each batch is one short transaction.
    """
    from refund_worker.retention import Archive, prune

    if archive is not None and dry_run:
        raise click.UsageError("--archive writes what is removed: it cannot go with --dry-run")
    if archive is not None and Path(archive).exists():
        raise click.BadParameter(
            f"{archive} exists; an archive is never overwritten", param_hint="--archive"
        )
    database = open_database()
    cutoff = utc_now() - older_than
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(Archive.create(archive)) if archive is not None else None
        report = prune(
            database,
            cutoff=cutoff,
            batch=batch,
            dry_run=dry_run,
            include_refunds=include_refunds,
            archive=sink,
            pause=pause,
        )
    if as_json:
        print_json(
            {
                "dry_run": dry_run,
                "cutoff": cutoff.isoformat(),
                "removed": report.removed,
                "batches": report.batches,
                "seconds": round(report.seconds, 3),
                "archive": archive,
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    table = Table("table", f"rows {verb}", title=f"history before {cutoff:%Y-%m-%d %H:%M} UTC")
    for name, count in report.removed.items():
        table.add_row(name, f"{count:,}")
    output.console.print(table)
    done = "counted" if dry_run else f"in {report.batches} batches"
    where = f"; archived to {archive}" if archive else ""
    output.err_console.print(
        f"{verb} {report.total:,} rows {done} ({report.seconds:.1f} s){where}", markup=False
    )


@click.command()
@click.argument("what", nargs=-1, type=click.Choice(["database", "broker"]))
def check(what: tuple[str, ...]) -> None:
    """Check that the database and the broker answer; exit 2 naming the setting if not.

    The database must be reachable with its schema up to date; compose's health checks run this.
    """
    from refund_worker.db import Database

    settings = current_settings()
    for name in what or ("database", "broker"):
        if name == "database":
            database = Database.from_url(settings.database_dsn, pool_size=1)
            try:
                database.prepare()
            finally:
                database.dispose()
        else:
            _check_broker(settings)
        output.console.print(f"{name}: ok")


def _check_broker(settings: Any) -> None:
    from refund_worker.celery_app import create_app

    app = create_app(settings)
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # the type only: a broker error's text can carry its password
        raise ConfigurationError(
            f"cannot reach the broker of REFUND_WORKER_BROKER_URL: {type(exc).__name__}"
        ) from None
