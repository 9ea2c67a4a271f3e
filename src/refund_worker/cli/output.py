"""How the CLI shows things: rich tables on a terminal, JSON with ``--json``, ages for people.

The ``refund-worker`` command is the only part of the package that prints.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Column

if TYPE_CHECKING:
    from rich.progress import Progress

console = Console()
err_console = Console(stderr=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=_json_default))


def progress(enabled: bool) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not (enabled and err_console.is_terminal),
    )


def age(seconds: float | None) -> str:
    """``45s``, ``12m``, ``3h 20m``, ``2d 4h``: how long ago, for people."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        big, small = f"{whole // 60}m", f"{whole % 60}s"
    elif whole < 86400:
        big, small = f"{whole // 3600}h", f"{whole % 3600 // 60}m"
    else:
        big, small = f"{whole // 86400}d", f"{whole % 86400 // 3600}h"
    return big if small[0] == "0" else f"{big} {small}"


def id_column(header: str = "id") -> Column:
    """A column of refund ids, never shortened: operators copy them into ``replay``."""
    return Column(header, no_wrap=True, min_width=36)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def status_markup(value: str) -> str:
    """A status in its colour."""
    colour = {
        "succeeded": "green",
        "failed": "red",
        "needs_attention": "bold magenta",
        "retrying": "yellow",
    }.get(value)
    return f"[{colour}]{value}[/{colour}]" if colour else value
