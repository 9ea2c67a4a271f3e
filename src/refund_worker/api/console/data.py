"""What the console's pages show, read from the database: a page of refunds, one refund's timeline.

Read only, small functions over a session, like ``refund_worker.queries`` (which they build on).
Everything here is plain data for the templates; escaping is the templates' job (autoescape).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from refund_worker.models import MagentoCall, Refund
from refund_worker.queries import RefundFilter, get_refund, refund_events, to_view
from refund_worker.replay import refusal
from refund_worker.schemas import NotificationStatus, RefundStatus, RefundView

#: What the list shows unless told otherwise: the refunds a person has to act on.
ATTENTION_STATUSES = (RefundStatus.FAILED.value, RefundStatus.NEEDS_ATTENTION.value)
IN_FLIGHT_STATUSES = frozenset(
    {
        RefundStatus.RECEIVED.value,
        RefundStatus.QUEUED.value,
        RefundStatus.PROCESSING.value,
        RefundStatus.RETRYING.value,
    }
)
EMAIL_IN_FLIGHT = frozenset(
    {
        NotificationStatus.PENDING.value,
        NotificationStatus.SENDING.value,
        NotificationStatus.RETRYING.value,
    }
)

# -- the list --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundPageOfList:
    """One page of the list: its refunds (newest first), how many match in all, and the id to
    continue after (None on the last page)."""

    refunds: list[RefundView]
    matching: int
    next_before: str | None


def list_refunds(
    session: Session,
    refund_filter: RefundFilter,
    *,
    statuses: Sequence[str],
    limit: int,
    before: str | None = None,
) -> RefundPageOfList:
    """Refunds matching ``refund_filter`` whose status is one of ``statuses`` (any when empty),
    newest first, ``limit`` at a time; ``before`` (a refund id) continues after that refund.

    Keyset paging on (created_at, id), the list's order: a refund replayed or settled while
    someone pages does not shift the pages after it.
    """
    query = replace(refund_filter, status=None, limit=None).statement()
    if statuses:
        query = query.where(Refund.status.in_(tuple(statuses)))
    matching = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    if before is not None:
        anchor = session.execute(
            select(Refund.created_at, Refund.id).where(Refund.id == before)
        ).first()
        if anchor is not None:
            created_at, anchor_id = anchor
            query = query.where(
                or_(
                    Refund.created_at < created_at,
                    and_(Refund.created_at == created_at, Refund.id < anchor_id),
                )
            )
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return RefundPageOfList(
        refunds=[to_view(row) for row in rows],
        matching=int(matching or 0),
        next_before=rows[-1].id if more and rows else None,
    )


def counts_by_status(session: Session) -> dict[str, int]:
    """How many refunds are in each status (every tenant's)."""
    return {
        str(status): int(count)
        for status, count in session.execute(
            select(Refund.status, func.count()).group_by(Refund.status)
        ).all()
    }


# -- one refund ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """A labelled value in a timeline entry."""

    label: str
    value: str


@dataclass(frozen=True)
class TimelineEntry:
    """Something that happened to a refund: intake, a Magento call, an event, its settling."""

    at: datetime
    kind: str  # received | call | call-failed | reconciled | attention | replayed | settled | event
    title: str
    facts: list[Fact] = field(default_factory=list)
    text: str | None = None


@dataclass(frozen=True)
class Replay:
    """A replay: who, why, and the error it replaced (from its ``*_replayed`` event)."""

    at: datetime
    what: str  # refund | email
    actor: str
    reason: str
    previous_error: str | None


@dataclass(frozen=True)
class WebhookDelivery:
    """One delivery of a webhook event about a refund, as the refund page lists it."""

    event_id: str
    event_type: str
    endpoint: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None = None


def webhook_deliveries(session: Session, refund_id: str) -> list[WebhookDelivery]:
    """The webhook deliveries about one refund, oldest first (the outbox: one row per event
    and endpoint; operators see every tenant's)."""
    from refund_worker.models import WebhookDelivery as Delivery
    from refund_worker.models import WebhookEndpoint

    rows = session.execute(
        select(Delivery, WebhookEndpoint.url)
        .join(WebhookEndpoint, WebhookEndpoint.id == Delivery.endpoint_id)
        .where(Delivery.refund_id == refund_id)
        .order_by(Delivery.created_at, Delivery.id)
    ).all()
    return [
        WebhookDelivery(
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            endpoint=url,
            status=delivery.status,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            created_at=delivery.created_at,
            delivered_at=delivery.delivered_at,
        )
        for delivery, url in rows
    ]


@dataclass(frozen=True)
class RefundTimeline:
    """Everything the refund page shows."""

    view: RefundView
    request_fields: list[Fact]
    request_json: str
    timeline: list[TimelineEntry]
    replays: list[Replay]
    notify_customer: bool
    notification_attempts: int
    settled_at: datetime | None
    webhooks: list[WebhookDelivery]
    #: Why the refund (or its email) cannot be replayed now; None when it can.
    refund_refusal: str | None
    email_refusal: str | None

    @property
    def in_flight(self) -> bool:
        """The refund or its email is still moving: the page refreshes itself."""
        return (
            self.view.status.value in IN_FLIGHT_STATUSES
            or self.view.notification_status.value in EMAIL_IN_FLIGHT
        )


#: ``by <actor>: <reason> (previous error: <error>)``, as ``replay.replay`` writes it.
_REPLAYED = re.compile(
    r"^by (?P<actor>[^:]*): (?P<reason>.*) \(previous error: (?P<previous>.*)\)$", re.S
)


def parse_replay(at: datetime, kind: str, detail: str | None) -> Replay | None:
    """The replay a ``refund_replayed`` or ``notification_replayed`` event records."""
    matched = _REPLAYED.match(detail or "")
    if matched is None:
        return None
    previous = matched["previous"]
    return Replay(
        at=at,
        what="email" if kind == "notification_replayed" else "refund",
        actor=matched["actor"],
        reason=matched["reason"],
        previous_error=None if previous == "None" else previous,
    )


def request_fields(request_json: str) -> tuple[list[Fact], str]:
    """The stored request's fields (scalars as text, lists and objects as compact JSON) and the
    whole request, indented. The request is what the producer sent, validated; the marker
    token is not in it (it has a column of its own, never shown)."""
    try:
        document: Any = json.loads(request_json)
    except ValueError:
        return [Fact("request", "(not readable JSON)")], request_json
    if not isinstance(document, dict):
        return [Fact("request", request_json)], request_json
    facts = []
    for name, value in document.items():
        if isinstance(value, (dict, list)):
            shown = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        else:
            shown = str(value)
        facts.append(Fact(name, shown))
    return facts, json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)


def _milliseconds(value: float) -> str:
    return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


def _call_entry(call: MagentoCall) -> TimelineEntry:
    failed = call.error is not None or call.http_status is None or call.http_status >= 400
    facts = [
        Fact("attempt", str(call.attempt)),
        Fact("HTTP", str(call.http_status) if call.http_status is not None else "no answer"),
        Fact("duration", _milliseconds(call.duration_ms)),
        Fact("request", f"{call.method} {call.path}"),
    ]
    return TimelineEntry(
        at=call.created_at,
        kind="call-failed" if failed else "call",
        title=f"Magento call: {call.operation}",
        facts=facts,
        text=call.error,
    )


#: Calls the email task makes (after the refund settled, in a task of its own).
EMAIL_CALLS = frozenset({"creditmemo_emails"})
#: An attempt records its Magento calls at its end, in the transaction that records its outcome.
_SAME_TRANSACTION = timedelta(seconds=1)
_OUTCOMES = frozenset({"settled", "reconciled", "attention"})


def _sort_key(entry: TimelineEntry, attempt_calls: list[datetime]) -> tuple[datetime, int]:
    """Oldest first: intake first in its instant, an attempt's outcome after its calls.

    An attempt's calls are stamped when they are recorded, at the attempt's end and just after
    its outcome (settled, reconciled, needs attention) in the same transaction: an outcome is
    placed after the calls recorded within a second of it, which are its attempt's.
    """
    if entry.kind == "received":
        return entry.at, 0
    if entry.kind in _OUTCOMES:
        own = [at for at in attempt_calls if entry.at <= at <= entry.at + _SAME_TRANSACTION]
        return max(own, default=entry.at), 2
    return entry.at, 1


_EVENT_TITLES = {
    "reconciled": ("reconciled", "Reconciled with Magento"),
    "needs_attention": ("attention", "Needs attention"),
}


def refund_timeline(session: Session, refund_id: str) -> RefundTimeline | None:
    """One refund's page: the request, its timeline (oldest first), replays, email, webhooks."""
    row = get_refund(session, refund_id)
    if row is None:
        return None
    calls = list(
        session.scalars(
            select(MagentoCall).where(MagentoCall.refund_id == row.id).order_by(MagentoCall.id)
        )
    )
    view = to_view(row)
    fields, pretty = request_fields(row.request_json)
    entries: list[TimelineEntry] = [
        TimelineEntry(
            at=row.created_at,
            kind="received",
            title="Received",
            facts=[
                Fact("tenant", row.tenant),
                Fact("by key", row.created_by or "(Python or CLI)"),
                Fact("idempotency key", row.idempotency_key),
            ],
        )
    ]
    entries.extend(_call_entry(call) for call in calls)
    replays: list[Replay] = []
    for event in refund_events(session, row.id):
        replayed = (
            parse_replay(event.created_at, event.kind, event.detail)
            if event.kind.endswith("_replayed")
            else None
        )
        if replayed is not None:
            replays.append(replayed)
            facts = [Fact("by", replayed.actor), Fact("reason", replayed.reason)]
            if replayed.previous_error is not None:
                facts.append(Fact("previous error", replayed.previous_error))
            entries.append(
                TimelineEntry(
                    at=event.created_at,
                    kind="replayed",
                    title=f"Replayed ({replayed.what})",
                    facts=facts,
                )
            )
            continue
        kind, title = _EVENT_TITLES.get(event.kind, ("event", event.kind.replace("_", " ")))
        entries.append(
            TimelineEntry(at=event.created_at, kind=kind, title=title, text=event.detail)
        )
    if row.settled_at is not None:
        entries.append(
            TimelineEntry(
                at=row.settled_at,
                kind="settled",
                title=f"Settled: {row.status}",
                facts=[Fact("credit memo", str(row.creditmemo_id))] if row.creditmemo_id else [],
                text=row.outcome if row.status == RefundStatus.SUCCEEDED else row.last_error,
            )
        )
    attempt_calls = sorted(call.created_at for call in calls if call.operation not in EMAIL_CALLS)
    entries.sort(key=lambda entry: _sort_key(entry, attempt_calls))
    return RefundTimeline(
        view=view,
        request_fields=fields,
        request_json=pretty,
        timeline=entries,
        replays=replays,
        notify_customer=row.notify_customer,
        notification_attempts=row.notification_attempts,
        settled_at=row.settled_at,
        webhooks=webhook_deliveries(session, row.id),
        refund_refusal=refusal(row, False),
        email_refusal=refusal(row, True),
    )
