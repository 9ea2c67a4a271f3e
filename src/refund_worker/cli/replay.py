"""``refund-worker replay``: choose failed refunds (or emails), show them, re-queue them.

Choosing is ``_plan`` (ids, keys or filters, through ``replay.plan_replay``); showing is
``_print_plan``; replaying is ``_run_replay``, in batches, through ``replay.replay`` with its
guards (never a refund that succeeded or is in flight, never twice).
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from refund_worker.cli import common, output
from refund_worker.cli.common import default_actor, filter_options, open_database, utc_now
from refund_worker.cli.output import age, id_column, print_json, progress

#: Refunds re-queued per transaction by ``replay``.
REPLAY_BATCH = 100
#: The table of refunds to replay shows this many (the oldest); past it, a count per error
#: follows (``--json`` lists every one). A table of 20,000 rows helps nobody and takes rich
#: longer to draw than the rest of the command.
SHOWN_CANDIDATES = 100
#: ... and at most this many errors, the most frequent.
SHOWN_ERRORS = 20


@click.command()
@click.argument("ids", nargs=-1)
@filter_options(("failed", "needs_attention", "not_sent"), None)
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
@click.option("--actor", default=default_actor, show_default="$USER (cli)", help="Who replays.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def replay(
    ids: tuple[str, ...],
    shop: str | None,
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
    """Re-run failed refunds under the same idempotency key.

    ``replay ID...``, ``replay --key KEY...`` or ``replay --status failed [filters]``.

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
        shop=shop,
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
    database = open_database()
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
            print_json(
                {
                    "dry_run": True,
                    "would_replay": [_as_dict(c) for c in plan.ready],
                    "refused": refused,
                }
            )
        else:
            _print_plan(plan, refused, notifications)
            output.err_console.print(f"dry run: {len(plan.ready)} {what} would be replayed")
        sys.exit(1 if refused else 0)
    assert reason is not None
    if not as_json:
        _print_plan(plan, refused, notifications)
    if not plan.ready:
        if as_json:
            print_json({"dry_run": False, "replayed": [], "refused": refused})
        output.err_console.print(f"nothing to replay: no {what} match that can be replayed")
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
        print_json(
            {"dry_run": False, "replayed": replayed, "refused": refused, "unpublished": unpublished}
        )
    else:
        _print_refused(late)  # changed between the table above and the replay
        output.err_console.print(f"replayed {len(replayed)} {what}; refused {len(refused)}")
        if unpublished:
            output.err_console.print(
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
    from refund_worker.publishing import GuardedPublisher
    from refund_worker.replay import replay as replay_refunds

    guarded = GuardedPublisher(common.broker_publisher())
    replayed: list[str] = []
    unpublished: list[str] = []
    refused: dict[str, str] = {}
    with progress(show_progress) as bar:
        task = bar.add_task("replaying", total=len(refund_ids))
        for start in range(0, len(refund_ids), REPLAY_BATCH):
            batch = refund_ids[start : start + REPLAY_BATCH]
            report = replay_refunds(
                database,
                guarded,
                batch,
                reason=reason,
                actor=actor,
                notifications=notifications,
            )
            refused.update(report.refused)
            replayed += report.replayed
            bar.advance(task, len(batch))
            if report.unpublished is not None:
                unpublished += report.replayed
                why = f"not replayed: {report.unpublished}"
                refused.update(dict.fromkeys(refund_ids[start + REPLAY_BATCH :], why))
                break
    return replayed, unpublished, refused


def _as_dict(candidate: Any) -> dict[str, Any]:
    """A candidate's fields (flat, so no deep copy as ``dataclasses.asdict`` makes)."""
    return {f.name: getattr(candidate, f.name) for f in dataclasses.fields(candidate)}


def _print_plan(plan: Any, refused: dict[str, str], notifications: bool) -> None:
    what = "emails" if notifications else "refunds"
    if plan.ready:
        shown = plan.ready[:SHOWN_CANDIDATES]
        more = len(plan.ready) - len(shown)
        table = Table(
            id_column(),
            "idempotency key",
            "order",
            "failed",
            "tries",
            "why it failed",
            title=f"{what} to replay" + (f": the oldest {len(shown)}" if more else ""),
        )
        now = utc_now()
        for candidate in shown:
            table.add_row(
                candidate.refund_id,
                candidate.idempotency_key,
                str(candidate.order_id),
                age((now - candidate.updated_at).total_seconds()) + " ago",
                str(candidate.attempts),
                candidate.error or "",
            )
        output.console.print(table)
        if more:
            _print_errors(plan.ready, what)
    _print_refused(refused)


def _print_errors(candidates: list[Any], what: str) -> None:
    """All the candidates, counted by why they failed (most first)."""
    counts: dict[str, int] = {}
    for candidate in candidates:
        counts[candidate.error or ""] = counts.get(candidate.error or "", 0) + 1
    table = Table(
        "refunds" if what == "refunds" else "emails",
        "why it failed",
        title=f"all {len(candidates)} {what}, by error",
        caption="--json lists each one",
    )
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    for error, count in ranked[:SHOWN_ERRORS]:
        table.add_row(str(count), error)
    if len(ranked) > SHOWN_ERRORS:
        rest = sum(count for _, count in ranked[SHOWN_ERRORS:])
        table.add_row(str(rest), f"({len(ranked) - SHOWN_ERRORS} other errors)")
    output.console.print(table)


def _print_refused(refused: dict[str, str]) -> None:
    if not refused:
        return
    table = Table(id_column("id or key"), "refused because", title="refused", title_style="red")
    for refund_id, why in refused.items():
        table.add_row(refund_id, why)
    output.console.print(table)
