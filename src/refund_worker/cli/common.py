"""What the CLI's commands share: settings, the database, a publisher, the clock, filters.

Nothing here loads pydantic, the ORM or Celery at import: the read-only commands must not.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from refund_worker.statuses import RefundStatus, Service

F = TypeVar("F", bound=Callable[..., Any])

#: Options a launcher hands on to the program it runs (celery, flower, the simulator).
PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}
#: Every refund status and every service a filter may name, from the enums.
STATUSES = tuple(status.value for status in RefundStatus)
SERVICES = (*(service.value for service in Service), "auto")


def current_settings() -> Any:
    """The process's settings (``REFUND_WORKER_*``)."""
    from refund_worker.settings import get_settings

    return get_settings()


def open_database() -> Any:
    """The settings' database, its schema checked (one line naming the setting when not)."""
    from refund_worker.db import database_for

    opened = database_for(current_settings().database_dsn)
    opened.prepare()
    return opened


def open_read_database() -> Any:
    """``open_database`` for the read-only commands: the database URL is read as the settings
    read it (``environment``), without building the settings; the other settings are not
    checked, since these commands use none of them."""
    from refund_worker.db import database_for
    from refund_worker.environment import database_url

    opened = database_for(database_url())
    opened.prepare()
    return opened


def broker_publisher() -> Any:
    """A publisher on a Celery app built from the current settings."""
    from refund_worker.celery_app import create_app
    from refund_worker.publishing import CeleryPublisher

    return CeleryPublisher(create_app(current_settings()))


def utc_now() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


def moment(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """``2h``/``3d`` ago, an ISO date (midnight UTC) or an ISO date-time (UTC unless offset)."""
    from refund_worker.views import parse_moment

    if value is None:
        return None
    try:
        return parse_moment(value, utc_now())
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    """``30m``, ``2h``, ``3d``, ``1w``."""
    from refund_worker.views import parse_duration

    try:
        duration = parse_duration(value)
        utc_now() - duration  # the window must start after the year 1
    except OverflowError:
        raise click.BadParameter(f"{value!r} is out of range", ctx, param) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return duration


def filter_options(statuses: Sequence[str], limit: int | None) -> Callable[[F], F]:
    """--shop, --status, --order, --service, --error, --since, --until, --limit."""
    options = [
        click.option("--shop", metavar="NAME", help="Only this shop's refunds."),
        click.option("--status", type=click.Choice(statuses), help="Only this status."),
        click.option("--order", "order_id", type=click.IntRange(1), help="Magento order id."),
        click.option("--service", type=click.Choice(SERVICES), help="Magento service used."),
        click.option("--error", "error", metavar="TEXT", help="Last error contains TEXT."),
        click.option(
            "--since", metavar="WHEN", callback=moment, help="Created at or after (2h, 3d, ISO)."
        ),
        click.option(
            "--until", metavar="WHEN", callback=moment, help="Created before (2h, 3d, ISO)."
        ),
        click.option(
            "--limit",
            type=click.IntRange(0),
            default=limit,
            show_default=limit is not None,
            help="At most this many, newest first (0: no limit).",
        ),
    ]

    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user} (cli)"
