"""``refund-worker db upgrade`` and ``refund-worker check``: the schema and the wiring."""

from __future__ import annotations

from typing import Any

import click

from refund_worker.cli import output
from refund_worker.cli.common import current_settings
from refund_worker.cli.output import print_json
from refund_worker.errors import ConfigurationError


@click.group()
def db() -> None:
    """Database schema (Alembic migrations shipped with the package)."""


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
