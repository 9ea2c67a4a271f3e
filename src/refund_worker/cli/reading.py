"""``refund-worker status``, ``list`` and ``stats``: reading the database, the source of truth
(Flower's history is lost when it restarts).

They read through ``views`` (SQLAlchemy Core) with the database URL alone (``environment``), so
they start without the ORM, pydantic, the settings' model or Celery (a test holds them to it).
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import datetime, timedelta
from typing import Any

import click
from rich.table import Column, Table

from refund_worker.cli import output
from refund_worker.cli.common import (
    STATUSES,
    duration,
    filter_options,
    open_read_database,
    utc_now,
)
from refund_worker.cli.output import age, id_column, ms, print_json, status_markup

DEFAULT_LIST_LIMIT = 50


@click.command()
@click.argument("refund_id", required=False)
@click.option("--key", "idempotency_key", metavar="KEY", help="Find it by idempotency key instead.")
@click.option("--tenant", help="The tenant whose key it is (when several used the same key).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(
    refund_id: str | None, idempotency_key: str | None, tenant: str | None, as_json: bool
) -> None:
    """Show one refund (by id, or ``--key KEY``) with its Magento calls and events."""
    from refund_worker import views

    if (refund_id is None) == (idempotency_key is None):
        raise click.UsageError("give a refund id, or --key KEY; one of the two")
    with open_read_database().connection_scope() as connection:
        if idempotency_key is not None:
            refund_id = _one_refund_by_key(connection, idempotency_key, tenant)
        assert refund_id is not None
        view = views.refund_document(connection, refund_id)
        events = views.events(connection, view["id"]) if view is not None else []
    if view is None:
        output.err_console.print(f"no refund with id {refund_id!r}", markup=False)
        sys.exit(2)
    if as_json:
        view["events"] = [dataclasses.asdict(event) for event in events]
        print_json(view)
        return
    calls_shown = view.pop("calls")
    table = Table(show_header=False, title=f"refund {view['id']}")
    for key, value in view.items():
        table.add_row(key, "" if value is None else str(value))
    output.console.print(table)
    calls = Table("attempt", "operation", "HTTP", "ms", "error", title="Magento calls")
    for call in calls_shown:
        calls.add_row(
            str(call["attempt"]),
            call["operation"],
            str(call["http_status"] or "-"),
            f"{call['duration_ms']:.0f}",
            call["error"] or "",
        )
    output.console.print(calls)
    if events:
        history = Table("when", "event", "detail", title="events")
        for event in events:
            history.add_row(
                event.created_at.isoformat(timespec="seconds"), event.kind, event.detail or ""
            )
        output.console.print(history)


def _one_refund_by_key(connection: Any, idempotency_key: str, tenant: str | None) -> str:
    """The id of the refund stored under ``idempotency_key`` (in ``tenant``); exits 2 when
    there is none, and asks for ``--tenant`` when several tenants used the key."""
    from refund_worker.views import refund_ids_by_key

    rows = refund_ids_by_key(connection, idempotency_key, tenant=tenant)
    if not rows:
        where = f" in tenant {tenant!r}" if tenant else ""
        output.err_console.print(
            f"no refund with idempotency key {idempotency_key!r}{where}", markup=False
        )
        sys.exit(2)
    if len(rows) > 1:
        tenants = ", ".join(row.tenant for row in rows)
        raise click.UsageError(
            f"tenants {tenants} each have a refund under key {idempotency_key!r}: add --tenant"
        )
    return str(rows[0].id)


@click.command("list")
@filter_options(STATUSES, DEFAULT_LIST_LIMIT)
@click.option("--tenant", help="Only this tenant's refunds.")
@click.option("--key", "idempotency_key", metavar="KEY", help="Only refunds with this key.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_command(
    shop: str | None,
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
    from refund_worker.views import RefundFilter, document, summaries

    refund_filter = RefundFilter(
        tenant=tenant,
        shop=shop,
        keys=(idempotency_key,) if idempotency_key else (),
        status=status,
        order_id=order_id,
        service=service,
        error_contains=error,
        since=since,
        until=until,
        limit=limit or None,
    )
    with open_read_database().connection_scope() as connection:
        rows = summaries(connection, refund_filter)
    if as_json:
        print_json([document(row) for row in rows])
        return
    if not rows:
        output.err_console.print("no refunds match")
        return
    now = utc_now()
    table = Table(
        Column("created", no_wrap=True),
        id_column(),
        Column("tenant", overflow="fold"),
        Column("shop", overflow="fold"),
        Column("idempotency key", overflow="fold"),
        Column("order", no_wrap=True),
        Column("service", no_wrap=True),
        Column("status", no_wrap=True),
        Column("tries", no_wrap=True),
        "last error",
        title=f"{len(rows)} refunds",
    )
    for row in rows:
        table.add_row(
            age((now - row.created_at).total_seconds()) + " ago",
            row.id,
            row.tenant,
            row.shop,
            row.idempotency_key,
            _order(row.order_id, row.order_increment_id),
            row.service or row.service_requested,
            status_markup(row.status),
            str(row.attempts),
            row.attention or row.last_error or "",
        )
    output.console.print(table)
    if limit and len(rows) == limit:
        output.err_console.print(f"showing the newest {limit}; use --limit to see more")


@click.command()
@click.option(
    "--window",
    metavar="DURATION",
    callback=duration,
    default="1h",
    show_default=True,
    help="Magento latency over the calls of this last period.",
)
@click.option("--shop", metavar="NAME", help="Only this shop's refunds and Magento calls.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(window: timedelta, shop: str | None, as_json: bool) -> None:
    """Counts by status, the oldest unsettled refund, attempts, Magento latency p50/p95."""
    from refund_worker.views import refund_stats

    with open_read_database().connection_scope() as connection:
        result = refund_stats(connection, utc_now(), latency_window=window, shop=shop)
    if as_json:
        document = dataclasses.asdict(result)
        document["oldest_unsettled_age_seconds"] = result.oldest_unsettled_age_seconds
        print_json(document)
        return
    where = f" of shop {shop}" if shop else ""
    counts = Table("status", "refunds", title=f"{result.total} refunds{where}")
    for name, count in result.by_status.items():
        counts.add_row(status_markup(name), str(count))
    output.console.print(counts)
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
    if not shop and len(result.by_shop) > 1:
        facts.add_row(
            "by shop", ", ".join(f"{name} {count}" for name, count in result.by_shop.items())
        )
    facts.add_row(
        "notifications",
        ", ".join(f"{name} {count}" for name, count in result.notifications_by_status.items())
        or "-",
    )
    output.console.print(facts)
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
            ms(row.p50_ms),
            ms(row.p95_ms),
            ms(row.max_ms),
        )
    output.console.print(latency)


def _order(order_id: int | None, increment_id: str | None) -> str:
    """The order as a table shows it: its id, its increment id (``#000000123``), or both."""
    if increment_id is None:
        return str(order_id)
    return f"#{increment_id}" if order_id is None else f"{order_id} (#{increment_id})"
