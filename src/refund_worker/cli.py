"""The ``refund-worker`` command: the operator's tool, and the only module that prints.

Every command that shows data takes ``--json``; tables are drawn with rich. The database is the
source of truth (Flower's history is lost when it restarts): ``list``, ``status`` and ``stats``
read it, ``replay`` re-queues failed refunds under the same idempotency key.
"""

from __future__ import annotations

import dataclasses
import getpass
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import IO, Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from refund_worker.errors import ConfigurationError, RefundWorkerError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

#: Refunds re-queued per transaction by ``replay``.
REPLAY_BATCH = 100
DEFAULT_LIST_LIMIT = 50
STATUSES = (
    "received",
    "queued",
    "processing",
    "retrying",
    "succeeded",
    "failed",
    "needs_attention",
)
SERVICES = ("invoice", "order", "creditmemo", "record_only", "auto")

#: Flower's tasks page shows each task's arguments (the refund id) and its exception.
FLOWER_TASK_COLUMNS = "name,args,state,received,runtime,retries,worker,exception,uuid"

#: Commands whose modules are imported only when used (the HTTP API pulls in FastAPI).
LAZY_COMMANDS = {
    "api": ("refund_worker.api.cli", "api_command"),
    "api-key": ("refund_worker.api.cli", "api_key_command"),
}


def _settings() -> Any:
    from refund_worker.settings import get_settings

    return get_settings()


def _database() -> Any:
    from refund_worker.db import database_for

    database = database_for(_settings().database_dsn)
    database.prepare()
    return database


def _publisher() -> Any:
    """A publisher on a Celery app built from the current settings."""
    from refund_worker.celery_app import create_app
    from refund_worker.publishing import CeleryPublisher

    return CeleryPublisher(create_app(_settings()))


def _now() -> datetime:
    from refund_worker.models import utcnow

    return utcnow()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=_json_default))


def _progress(enabled: bool) -> Progress:
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


def _id_column(header: str = "id") -> Column:
    """A column of refund ids, never shortened: operators copy them into ``replay``."""
    return Column(header, no_wrap=True, min_width=36)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


class _Group(click.Group):
    """The command group, with the HTTP API's commands loaded only when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            return lazy_command(cmd_name)
        return super().get_command(ctx, cmd_name)


def lazy_command(name: str) -> click.Command:
    """The command registered as ``name``, or one that explains why it is unavailable."""
    module_name, attribute = LAZY_COMMANDS[name]
    try:
        command = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        problem = f"{module_name}.{attribute} cannot be loaded ({type(exc).__name__}: {exc})"

        @click.command(name, help=f"Unavailable: {problem}.", context_settings=_PASSTHROUGH)
        def unavailable() -> None:
            raise click.ClickException(f"`refund-worker {name}` is not available: {problem}")

        return unavailable
    assert isinstance(command, click.Command)
    return command


_PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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


_TENANT_HELP = "The producer the refunds belong to (idempotency keys are unique per tenant)."


@main.command()
@click.argument("source", type=click.File("r"), default="-")
@click.option("--tenant", default="default", show_default=True, help=_TENANT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
def enqueue(source: IO[str], tenant: str, as_json: bool) -> None:
    """Enqueue refunds from FILE (or - for stdin): one JSON object or JSON Lines.

    Each bad line is reported with its number and the rest still go in; the exit code is 1
    when any line was refused (a repeated key with the same payload is not a refusal).
    """
    from refund_worker import intake

    try:
        intake.check_tenant(tenant)
    except RefundWorkerError as exc:
        raise click.BadParameter(str(exc), param_hint="--tenant") from None
    database = _database()
    refused = received = 0
    accepted: list[tuple[int, Any]] = []
    for number, line in read_requests(source):
        try:
            accepted.append((number, intake.validate_request(line)))
        except RefundWorkerError as exc:
            refused += 1
            _report_line(number, None, str(exc), as_json)
    with _progress(not as_json) as progress:
        task = progress.add_task("storing and publishing", total=len(accepted))

        def requests() -> Iterator[Any]:
            for _, request in accepted:
                yield request
                progress.advance(task)

        results = intake.enqueue_refunds(
            requests(),
            database=database,
            publisher=_publisher(),
            tenant=tenant,
            created_by=_default_actor(),
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
    if as_json:  # not click.echo: it flushes every line, a system call each for 100,000 lines
        sys.stdout.write(json.dumps({"line": number, "receipt": receipt, "error": error}) + "\n")
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
@click.argument("refund_id", required=False)
@click.option("--key", "idempotency_key", metavar="KEY", help="Find it by idempotency key instead.")
@click.option("--tenant", help="The tenant whose key it is (when several used the same key).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(
    refund_id: str | None, idempotency_key: str | None, tenant: str | None, as_json: bool
) -> None:
    """Show one refund (by id, or ``--key KEY``) with its Magento calls and events."""
    from refund_worker.queries import refund_events, refund_view

    if (refund_id is None) == (idempotency_key is None):
        raise click.UsageError("give a refund id, or --key KEY; one of the two")
    with _database().session_scope() as session:
        if idempotency_key is not None:
            refund_id = _one_refund_by_key(session, idempotency_key, tenant)
        assert refund_id is not None
        view = refund_view(session, refund_id)
        events = refund_events(session, view.id) if view is not None else []
    if view is None:
        err_console.print(f"no refund with id {refund_id!r}", markup=False)
        sys.exit(2)
    if as_json:
        document = view.model_dump(mode="json")
        document["events"] = [dataclasses.asdict(event) for event in events]
        _print_json(document)
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
    if events:
        history = Table("when", "event", "detail", title="events")
        for event in events:
            history.add_row(
                event.created_at.isoformat(timespec="seconds"), event.kind, event.detail or ""
            )
        console.print(history)


def _one_refund_by_key(session: Any, idempotency_key: str, tenant: str | None) -> str:
    """The id of the refund stored under ``idempotency_key`` (in ``tenant``); exits 2 when
    there is none, and asks for ``--tenant`` when several tenants used the key."""
    from refund_worker.queries import refunds_by_key

    rows = refunds_by_key(session, idempotency_key, tenant=tenant)
    if not rows:
        where = f" in tenant {tenant!r}" if tenant else ""
        err_console.print(
            f"no refund with idempotency key {idempotency_key!r}{where}", markup=False
        )
        sys.exit(2)
    if len(rows) > 1:
        tenants = ", ".join(row.tenant for row in rows)
        raise click.UsageError(
            f"tenants {tenants} each have a refund under key {idempotency_key!r}: add --tenant"
        )
    return str(rows[0].id)


def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """``2h``/``3d`` ago, an ISO date (midnight UTC) or an ISO date-time (UTC unless offset)."""
    from refund_worker.queries import parse_moment

    if value is None:
        return None
    try:
        return parse_moment(value, _now())
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    """``30m``, ``2h``, ``3d``, ``1w``."""
    from refund_worker.queries import parse_duration

    try:
        duration = parse_duration(value)
        _now() - duration  # the window must start after the year 1
    except OverflowError:
        raise click.BadParameter(f"{value!r} is out of range", ctx, param) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return duration


def _filter_options(statuses: Sequence[str], limit: int | None) -> Callable[[F], F]:
    """--status, --order, --service, --error, --since, --until, --limit."""
    options = [
        click.option("--status", type=click.Choice(statuses), help="Only this status."),
        click.option("--order", "order_id", type=click.IntRange(1), help="Magento order id."),
        click.option("--service", type=click.Choice(SERVICES), help="Magento service used."),
        click.option("--error", "error", metavar="TEXT", help="Last error contains TEXT."),
        click.option(
            "--since", metavar="WHEN", callback=_moment, help="Created at or after (2h, 3d, ISO)."
        ),
        click.option(
            "--until", metavar="WHEN", callback=_moment, help="Created before (2h, 3d, ISO)."
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


@main.command("list")
@_filter_options(STATUSES, DEFAULT_LIST_LIMIT)
@click.option("--tenant", help="Only this tenant's refunds.")
@click.option("--key", "idempotency_key", metavar="KEY", help="Only refunds with this key.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_command(
    status: str | None,
    order_id: int | None,
    service: str | None,
    error: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    tenant: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """List refunds, newest first (``list --status failed --since 1d``)."""
    from refund_worker.queries import RefundFilter, list_refunds

    refund_filter = RefundFilter(
        tenant=tenant,
        keys=(idempotency_key,) if idempotency_key else (),
        status=status,
        order_id=order_id,
        service=service,
        error_contains=error,
        since=since,
        until=until,
        limit=limit or None,
    )
    with _database().session_scope() as session:
        views = list_refunds(session, refund_filter)
    if as_json:
        _print_json([view.summary() for view in views])
        return
    if not views:
        err_console.print("no refunds match")
        return
    now = _now()
    table = Table(
        Column("created", no_wrap=True),
        _id_column(),
        Column("tenant", overflow="fold"),
        Column("idempotency key", overflow="fold"),
        Column("order", no_wrap=True),
        Column("service", no_wrap=True),
        Column("status", no_wrap=True),
        Column("tries", no_wrap=True),
        "last error",
        title=f"{len(views)} refunds",
    )
    for view in views:
        table.add_row(
            age((now - view.created_at).total_seconds()) + " ago",
            view.id,
            view.tenant,
            view.idempotency_key,
            str(view.order_id),
            view.service or view.service_requested,
            _status_markup(view.status.value),
            str(view.attempts),
            view.attention or view.last_error or "",
        )
    console.print(table)
    if limit and len(views) == limit:
        err_console.print(f"showing the newest {limit}; use --limit to see more")


def _status_markup(value: str) -> str:
    colour = {
        "succeeded": "green",
        "failed": "red",
        "needs_attention": "bold magenta",
        "retrying": "yellow",
    }.get(value)
    return f"[{colour}]{value}[/{colour}]" if colour else value


@main.command()
@click.option(
    "--window",
    metavar="DURATION",
    callback=_duration,
    default="1h",
    show_default=True,
    help="Magento latency over the calls of this last period.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(window: timedelta, as_json: bool) -> None:
    """Counts by status, the oldest unsettled refund, attempts, Magento latency p50/p95."""
    from refund_worker.queries import refund_stats

    with _database().session_scope() as session:
        result = refund_stats(session, _now(), latency_window=window)
    if as_json:
        document = dataclasses.asdict(result)
        document["oldest_unsettled_age_seconds"] = result.oldest_unsettled_age_seconds
        _print_json(document)
        return
    counts = Table("status", "refunds", title=f"{result.total} refunds")
    for name, count in result.by_status.items():
        counts.add_row(_status_markup(name), str(count))
    console.print(counts)
    facts = Table(show_header=False)
    oldest = (
        f"{age(result.oldest_unsettled_age_seconds)} ({result.oldest_unsettled_id})"
        if result.oldest_unsettled_id
        else "none: everything is settled"
    )
    facts.add_row("oldest unsettled refund", oldest)
    facts.add_row("in doubt (will reconcile with Magento first)", str(result.in_doubt))
    facts.add_row(
        "attempts (total / most for one refund)", f"{result.attempts_total} / {result.attempts_max}"
    )
    facts.add_row("refunds that needed more than one attempt", str(result.retried))
    facts.add_row(
        "notifications",
        ", ".join(f"{name} {count}" for name, count in result.notifications_by_status.items())
        or "-",
    )
    console.print(facts)
    latency = Table(
        "operation",
        "calls",
        "errors",
        "p50 ms",
        "p95 ms",
        "max ms",
        title=f"Magento latency, last {age(window.total_seconds())} "
        f"(at most {result.latency_sample_limit} calls)",
    )
    for row in [*result.latency_by_operation, result.latency]:
        latency.add_row(
            row.operation or "[bold]all[/bold]",
            str(row.calls),
            str(row.failed),
            _ms(row.p50_ms),
            _ms(row.p95_ms),
            _ms(row.max_ms),
        )
    console.print(latency)


# -- replay ----------------------------------------------------------------------------------


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user} (cli)"


class _SafePublisher:
    """Publishes, but remembers a broker failure instead of raising: by then the replay is
    committed, and the sweeper publishes what is left unpublished."""

    def __init__(self, publisher: Any) -> None:
        self._publisher = publisher
        self.error: str | None = None

    def publish_refunds(self, refund_ids: Sequence[str]) -> None:
        self._guard(self._publisher.publish_refunds, refund_ids)

    def publish_notifications(self, refund_ids: Sequence[str]) -> None:
        self._guard(self._publisher.publish_notifications, refund_ids)

    def _guard(self, publish: Callable[[Sequence[str]], None], refund_ids: Sequence[str]) -> None:
        try:
            publish(refund_ids)
        except Exception as exc:
            # The type only: a broker error's text can carry the broker URL and its password.
            self.error = type(exc).__name__


@main.command()
@click.argument("ids", nargs=-1)
@_filter_options(("failed", "needs_attention", "not_sent"), None)
@click.option("--key", "keys", metavar="KEY", multiple=True, help="A refund by idempotency key.")
@click.option("--tenant", help="Only this tenant's refunds (needed when tenants share a --key).")
@click.option("--reason", help="Why (required; kept in each refund's events).")
@click.option(
    "--notifications",
    is_flag=True,
    help="Replay failed customer emails of succeeded refunds instead of refunds.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be replayed, and change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--actor", default=_default_actor, show_default="$USER (cli)", help="Who replays.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def replay(
    ids: tuple[str, ...],
    status: str | None,
    order_id: int | None,
    service: str | None,
    error: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    keys: tuple[str, ...],
    tenant: str | None,
    reason: str | None,
    notifications: bool,
    dry_run: bool,
    yes: bool,
    actor: str,
    as_json: bool,
) -> None:
    """Re-run failed refunds under the same idempotency key: ``replay ID...``, ``replay --key
    KEY...`` or ``replay --status failed [filters]``.

    Each replayed refund is marked in doubt, so the worker first looks in Magento for a credit
    memo carrying its marker and never refunds twice. Succeeded and in-flight refunds are
    refused; the exit code is 1 when anything was refused. With ``--notifications``, failed (or
    with ``--status not_sent``, unsent) customer emails of succeeded refunds are sent again, and
    ``--error`` matches the email's error.
    """
    from refund_worker.queries import RefundFilter
    from refund_worker.replay import check_reason, plan_replay

    filtered = any(v is not None for v in (status, order_id, service, error, since, until, limit))
    named = bool(ids or keys)
    if named and filtered:
        raise click.UsageError("name refunds by id or --key, or select them with filters; not both")
    if not named and status is None:
        raise click.UsageError(
            "name refunds by id or --key KEY, or select them with --status failed [filters]"
        )
    if status == "not_sent" and not notifications:
        raise click.UsageError("--status not_sent is a notification status: add --notifications")
    if not dry_run:
        try:
            reason = check_reason(reason or "")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--reason") from None
    refund_filter = RefundFilter(
        ids=ids,
        keys=keys,
        tenant=tenant,
        status=status if not notifications else None,
        notification_status=status if notifications else None,
        order_id=order_id,
        service=service,
        error_contains=error if not notifications else None,
        notification_error_contains=error if notifications else None,
        since=since,
        until=until,
        limit=limit or None,
    )
    database = _database()
    with database.session_scope() as session:
        plan = plan_replay(session, refund_filter, notifications=notifications)
    shared = _keys_of_several_tenants(plan) if keys and tenant is None else {}
    if shared:
        raise click.UsageError(
            "; ".join(f"tenants {', '.join(t)} each have key {k!r}" for k, t in shared.items())
            + ": add --tenant"
        )
    refused = {c.refund_id: c.refused or "" for c in plan.refused}
    refused.update(dict.fromkeys(plan.missing, "no such refund"))
    what = "emails" if notifications else "refunds"
    if dry_run:
        if as_json:
            _print_json(
                {
                    "dry_run": True,
                    "would_replay": [dataclasses.asdict(c) for c in plan.ready],
                    "refused": refused,
                }
            )
        else:
            _print_plan(plan, refused, notifications)
            err_console.print(f"dry run: {len(plan.ready)} {what} would be replayed")
        sys.exit(1 if refused else 0)
    assert reason is not None
    if not as_json:
        _print_plan(plan, refused, notifications)
    if not plan.ready:
        if as_json:
            _print_json({"dry_run": False, "replayed": [], "refused": refused})
        err_console.print(f"nothing to replay: no {what} match that can be replayed")
        sys.exit(1 if refused else 0)
    if not yes:
        click.confirm(f"Replay {len(plan.ready)} {what}?", abort=True, err=True)
    replayed, unpublished, late = _run_replay(
        database,
        [c.refund_id for c in plan.ready],
        reason=reason,
        actor=actor,
        notifications=notifications,
        show_progress=not as_json,
    )
    refused.update(late)
    if as_json:
        _print_json(
            {"dry_run": False, "replayed": replayed, "refused": refused, "unpublished": unpublished}
        )
    else:
        _print_refused(late)  # changed between the table above and the replay
        err_console.print(f"replayed {len(replayed)} {what}; refused {len(refused)}")
        if unpublished:
            err_console.print(
                f"[yellow]the broker refused {len(unpublished)} messages; those {what} are "
                "queued in the database and the sweeper (beat) publishes them[/yellow]"
            )
    sys.exit(1 if refused or unpublished else 0)


def _keys_of_several_tenants(plan: Any) -> dict[str, list[str]]:
    tenants: dict[str, set[str]] = {}
    for candidate in [*plan.ready, *plan.refused]:
        tenants.setdefault(candidate.idempotency_key, set()).add(candidate.tenant)
    return {key: sorted(names) for key, names in tenants.items() if len(names) > 1}


def _run_replay(
    database: Any,
    refund_ids: list[str],
    *,
    reason: str,
    actor: str,
    notifications: bool,
    show_progress: bool,
) -> tuple[list[str], list[str], dict[str, str]]:
    """Replay in batches (one transaction and one publish each).

    Returns (replayed, replayed but not published, refused with why).
    """
    from refund_worker.replay import replay as replay_refunds

    publisher = _SafePublisher(_publisher())
    replayed: list[str] = []
    unpublished: list[str] = []
    refused: dict[str, str] = {}
    with _progress(show_progress) as progress:
        task = progress.add_task("replaying", total=len(refund_ids))
        for start in range(0, len(refund_ids), REPLAY_BATCH):
            batch = refund_ids[start : start + REPLAY_BATCH]
            report = replay_refunds(
                database,
                publisher,
                batch,
                reason=reason,
                actor=actor,
                notifications=notifications,
            )
            refused.update(report.refused)
            replayed += report.replayed
            progress.advance(task, len(batch))
            if publisher.error is not None:
                unpublished += report.replayed
                why = f"not replayed: publishing to the broker failed ({publisher.error})"
                refused.update(dict.fromkeys(refund_ids[start + REPLAY_BATCH :], why))
                break
    return replayed, unpublished, refused


def _print_plan(plan: Any, refused: dict[str, str], notifications: bool) -> None:
    if plan.ready:
        table = Table(
            _id_column(),
            "idempotency key",
            "order",
            "failed",
            "tries",
            "why it failed",
            title=f"{'emails' if notifications else 'refunds'} to replay",
        )
        now = _now()
        for candidate in plan.ready:
            table.add_row(
                candidate.refund_id,
                candidate.idempotency_key,
                str(candidate.order_id),
                age((now - candidate.updated_at).total_seconds()) + " ago",
                str(candidate.attempts),
                candidate.error or "",
            )
        console.print(table)
    _print_refused(refused)


def _print_refused(refused: dict[str, str]) -> None:
    if not refused:
        return
    table = Table(_id_column("id or key"), "refused because", title="refused", title_style="red")
    for refund_id, why in refused.items():
        table.add_row(refund_id, why)
    console.print(table)


# -- database --------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (Alembic migrations shipped with the package)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def db_upgrade(revision: str, as_json: bool) -> None:
    """Apply migrations up to REVISION."""
    from refund_worker.db import make_engine, schema_revisions, upgrade

    engine = make_engine(_settings().database_dsn)
    try:
        upgrade(engine, revision)
        current, head = schema_revisions(engine)
    finally:
        engine.dispose()
    if as_json:
        _print_json({"revision": current, "head": head})
    else:
        console.print(f"database schema at revision {current}")


@main.command()
@click.argument("what", nargs=-1, type=click.Choice(["database", "broker"]))
def check(what: tuple[str, ...]) -> None:
    """Check that the database (reachable, schema up to date) and the broker answer; exit 2 with
    one line naming the setting when one does not (compose's health checks run this)."""
    from refund_worker.db import Database

    settings = _settings()
    for name in what or ("database", "broker"):
        if name == "database":
            database = Database.from_url(settings.database_dsn, pool_size=1)
            try:
                database.prepare()
            finally:
                database.dispose()
        else:
            _check_broker(settings)
        console.print(f"{name}: ok")


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


# -- processes -------------------------------------------------------------------------------


def _celery_argv(command: str, args: Sequence[str], defaults: dict[str, str]) -> list[str]:
    argv = [command]
    for option, value in defaults.items():
        if not any(arg == option or arg.startswith(option + "=") for arg in args):
            argv += [option, value] if value else [option]
    return argv + list(args)


@main.command(context_settings=_PASSTHROUGH)
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Celery worker (extra arguments go to ``celery worker``).

    Defaults: ``--pool threads --concurrency 16 --queues refunds -E``: refunds wait on Magento,
    so an I/O pool with many threads per process suits them; run two processes per core (one
    process's threads share one interpreter lock, see docs/performance.md). Whatever ``--queues``
    says, the worker also consumes the emails' (``refunds.notify``) and the sweeper's queues.
    """
    from refund_worker.celery_app import QUEUE, app

    argv = _celery_argv(
        "worker",
        ctx.args,
        {
            "--pool": "threads",
            "--concurrency": "16",
            "--queues": QUEUE,
            "-E": "",
            "--loglevel": _settings().log_level,
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


@main.command(context_settings=_PASSTHROUGH)
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Run Celery beat, which schedules the sweeper (extra arguments go to ``celery beat``).

    Run exactly one beat per deployment.
    """
    from refund_worker.celery_app import app

    app.start(["beat", *_celery_argv("", ctx.args, {"--loglevel": _settings().log_level})[1:]])


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


@main.command(context_settings=_PASSTHROUGH)
@click.pass_context
def flower(ctx: click.Context) -> None:
    """Run Flower with basic auth from REFUND_WORKER_FLOWER_BASIC_AUTH (extra args to flower).

    ``refund-worker flower --port 5555 --address 127.0.0.1``. The credentials reach Flower
    through its environment (FLOWER_BASIC_AUTH), never through argv.
    """
    settings = _settings()
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


@main.command(context_settings=_PASSTHROUGH)
@click.pass_context
def simulator(ctx: click.Context) -> None:
    """Run the Magento simulator (``--host``, ``--port``, ``--seed demo|FILE.json``...)."""
    from refund_worker.simulator.__main__ import main as simulator_main

    sys.exit(simulator_main(list(ctx.args)))


@main.command()
@click.option("--keep", is_flag=True, help="Keep the temporary database and print its path.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def demo(keep: bool, as_json: bool) -> None:
    """Run a self-contained demo: simulator, in-process broker and worker, temporary SQLite."""
    from refund_worker.demo import run_demo

    report = run_demo(keep=keep)
    if as_json:
        _print_json(
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
        console.print(report.table())
        console.print(report.notifications_table())
        console.print(f"[bold]{report.summary()}[/bold]")
    sys.exit(0 if report.ok else 1)


def run() -> None:
    """Entry point that turns configuration errors into one clear line."""
    try:
        main(standalone_mode=True)
    except ConfigurationError as exc:
        err_console.print(f"configuration error: {exc}", markup=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    run()
