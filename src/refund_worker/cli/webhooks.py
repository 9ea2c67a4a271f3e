"""``refund-worker webhooks``: endpoints (add, list, disable, enable) and their deliveries
(deliveries, replay). The CLI is the operator's tool: it sees every tenant."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table

from refund_worker.cli.common import current_settings, default_actor, open_database
from refund_worker.cli.output import console, err_console, print_json

EVENT_TYPES = (
    "refund.succeeded",
    "refund.failed",
    "refund.needs_attention",
    "refund.notification_sent",
    "refund.replayed",
)
DELIVERY_STATUSES = ("pending", "delivering", "retrying", "delivered", "failed")


@click.group()
def webhooks() -> None:
    """Webhook endpoints and their deliveries (docs/webhooks.md)."""


@webhooks.command("add")
@click.argument("url")
@click.option("--tenant", required=True, help="The producer tenant whose events it receives.")
@click.option(
    "--event",
    "events",
    type=click.Choice(EVENT_TYPES),
    multiple=True,
    help="An event type to receive (repeat; default: all).",
)
@click.option("--description", help="What it is, for people (at most 200 characters).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with the secret).")
def add(
    url: str, tenant: str, events: tuple[str, ...], description: str | None, as_json: bool
) -> None:
    """Register URL for TENANT's events; prints its signing secret, once."""
    from pydantic import ValidationError

    from refund_worker.webhooks.endpoints import EndpointRequest, InvalidEndpoint, register

    try:
        request = EndpointRequest(
            url=url,
            event_types=list(events or EVENT_TYPES),
            description=description,
            tenant=tenant,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise click.ClickException(problems) from None
    try:
        view, secret = register(
            open_database(), current_settings(), request, tenant=tenant, created_by=default_actor()
        )
    except InvalidEndpoint as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json({**view.model_dump(mode="json"), "secret": secret.get_secret_value()})
        return
    console.print(f"endpoint {view.id} for tenant {view.tenant}: {view.url}", markup=False)
    console.print(f"events: {', '.join(view.event_types)}", markup=False)
    click.echo(f"secret (shown once; give it to the receiver): {secret.get_secret_value()}")


@webhooks.command("list")
@click.option("--tenant", help="Only this tenant's endpoints.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(tenant: str | None, as_json: bool) -> None:
    """Endpoints, oldest first (never a secret)."""
    from refund_worker.webhooks.endpoints import list_endpoints

    views = list_endpoints(open_database(), tenant=tenant)
    if as_json:
        print_json([view.model_dump(mode="json") for view in views])
        return
    table = Table("id", "tenant", "url", "events", "enabled", "failing since / disabled")
    for view in views:
        state = view.disabled_reason or (
            f"failing since {view.failing_since:%Y-%m-%d %H:%M}" if view.failing_since else ""
        )
        table.add_row(view.id, view.tenant, view.url, "\n".join(view.event_types),
                      "yes" if view.enabled else "[red]no[/red]", state)
    console.print(table)


def _set(endpoint_id: str, enabled: bool, reason: str | None, as_json: bool) -> None:
    from refund_worker.webhooks.endpoints import set_enabled

    view = set_enabled(open_database(), endpoint_id, enabled=enabled, tenant=None,
                       actor=default_actor(), reason=reason)
    if view is None:
        raise click.ClickException(f"no webhook endpoint with id {endpoint_id!r}")
    if as_json:
        print_json(view.model_dump(mode="json"))
    else:
        console.print(f"endpoint {view.id}: {'enabled' if view.enabled else 'disabled'}",
                      markup=False)


@webhooks.command("enable")
@click.argument("endpoint_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def enable(endpoint_id: str, as_json: bool) -> None:
    """Enable a disabled endpoint (its failure clock starts afresh); replay what it missed
    with ``webhooks replay --endpoint ID --status failed``."""
    _set(endpoint_id, True, None, as_json)


@webhooks.command("disable")
@click.argument("endpoint_id")
@click.option("--reason", required=True, help="Why (kept on the endpoint).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def disable(endpoint_id: str, reason: str, as_json: bool) -> None:
    """Disable an endpoint: no new events for it; its waiting deliveries fail."""
    _set(endpoint_id, False, reason, as_json)


def _deliveries(**filters: Any) -> list[Any]:
    from refund_worker.outbox import DeliveryStatus
    from refund_worker.webhooks.endpoints import list_deliveries

    status = filters.pop("status")
    return list_deliveries(
        open_database(),
        tenant=filters.pop("tenant"),
        status=DeliveryStatus(status) if status else None,
        **filters,
    )


@webhooks.command("deliveries")
@click.option("--endpoint", "endpoint_id", help="Only this endpoint's.")
@click.option("--refund", "refund_id", help="Only this refund's.")
@click.option("--event", "event_id", help="Only this event's (its webhook-id).")
@click.option("--status", type=click.Choice(DELIVERY_STATUSES), help="Only this status.")
@click.option("--tenant", help="Only this tenant's.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def deliveries(
    endpoint_id: str | None,
    refund_id: str | None,
    event_id: str | None,
    status: str | None,
    tenant: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Deliveries, newest first: event, endpoint, status, attempts, the last error."""
    views = _deliveries(endpoint_id=endpoint_id, refund_id=refund_id, event_id=event_id,
                        status=status, tenant=tenant, limit=limit)
    if as_json:
        print_json([view.model_dump(mode="json") for view in views])
        return
    table = Table("id", "event", "type", "refund", "status", "attempts", "last error")
    for view in views:
        table.add_row(str(view.id), view.event_id, view.event_type, view.refund_id, view.status,
                      str(view.attempts), view.last_error or "")
    console.print(table)


@webhooks.command("replay")
@click.argument("delivery_ids", nargs=-1, type=int)
@click.option("--endpoint", "endpoint_id", help="Every delivery of this endpoint with --status.")
@click.option("--status", type=click.Choice(("failed", "delivered")),
              help="With --endpoint: which ones.")
@click.option("--limit", type=click.IntRange(1, 100000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def replay(
    delivery_ids: tuple[int, ...],
    endpoint_id: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Send deliveries again, with the same event id and body: ``replay ID...`` or
    ``replay --endpoint ID --status failed``. Exit code 1 when any was refused."""
    from refund_worker.cli.common import broker_publisher
    from refund_worker.publishing import GuardedPublisher
    from refund_worker.webhooks.endpoints import replay_deliveries

    if bool(delivery_ids) == bool(endpoint_id):
        raise click.UsageError("name deliveries by id, or choose them with --endpoint and --status")
    if endpoint_id and not status:
        raise click.UsageError("--endpoint needs --status failed (or delivered)")
    ids = list(delivery_ids) or [
        view.id for view in _deliveries(endpoint_id=endpoint_id, refund_id=None, event_id=None,
                                        status=status, tenant=None, limit=limit)
    ]
    outcome = replay_deliveries(open_database(), current_settings(), ids, tenant=None)
    unpublished = None
    if outcome.replayed:
        from refund_worker.errors import BrokerUnavailable

        try:
            GuardedPublisher(broker_publisher()).publish_webhooks(outcome.replayed)
        except BrokerUnavailable as exc:
            unpublished = f"{exc.message}; the sweeper will publish them"
    if as_json:
        print_json({"replayed": outcome.replayed,
                    "refused": {str(k): v for k, v in outcome.refused.items()},
                    "unpublished": unpublished})
    else:
        console.print(f"replayed {len(outcome.replayed)} deliveries", markup=False)
        for delivery_id, why in outcome.refused.items():
            err_console.print(f"refused {delivery_id}: {why}", markup=False)
        if unpublished:
            err_console.print(unpublished, markup=False)
    if outcome.refused:
        sys.exit(1)
