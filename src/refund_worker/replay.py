"""Replay failed refunds (or failed emails) under the same idempotency key, never twice.

Refunds that need attention can be replayed too, once a person has looked: the replay reconciles
first, as every replay does, and a credit memo that still does not fit sets them back to
``needs_attention``.

A replayed refund is marked in doubt, so its next attempt searches Magento for a credit memo
carrying its marker before it could refund again. Succeeded and in-flight refunds are refused.
Every replay leaves a ``refund_replayed`` (or ``notification_replayed``) event with who replayed,
why, and the error it replaced.

``plan_replay`` shows what a replay would do (the CLI's ``--dry-run`` and its confirmation);
``replay`` does it, re-checking each row under compare-and-set, and publishes after commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from refund_worker import tables
from refund_worker.db import Database, rowcount
from refund_worker.errors import BrokerUnavailable
from refund_worker.models import Refund, RefundEvent, utcnow
from refund_worker.outbox import OUTBOX_INSERT, EventType, event_params
from refund_worker.queries import RefundFilter, select_refunds
from refund_worker.schemas import NotificationStatus, RefundStatus

if TYPE_CHECKING:  # publishing loads Celery: a dry run needs none of it
    from refund_worker.publishing import Publisher

__all__ = [
    "MAX_REASON_LENGTH",
    "REPLAYABLE_NOTIFICATIONS",
    "RefundFilter",
    "ReplayCandidate",
    "ReplayPlan",
    "ReplayReport",
    "check_reason",
    "plan_replay",
    "refusal",
    "replay",
    "replayable_filter",
    "select_refunds",
]

REPLAYABLE_NOTIFICATIONS = (NotificationStatus.FAILED.value, NotificationStatus.NOT_SENT.value)
REPLAYABLE_STATUSES = (RefundStatus.FAILED.value, RefundStatus.NEEDS_ATTENTION.value)
MAX_REASON_LENGTH = 500


@dataclass
class ReplayReport:
    """What a replay did: ids re-queued, and ids refused with why."""

    replayed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    #: The broker refused the replayed refunds' messages (why): they are committed, and the
    #: sweeper publishes them.
    unpublished: str | None = None
    #: The ``refund.replayed`` webhook deliveries written with the replays.
    webhooks: list[int] = field(default_factory=list)


def refusal(row: Any, notifications: bool) -> str | None:
    """Why ``row`` cannot be replayed, or None."""
    if notifications:
        if row.status != RefundStatus.SUCCEEDED:
            return f"the refund is {row.status}; only a succeeded refund has an email to send"
        if row.notification_status not in REPLAYABLE_NOTIFICATIONS:
            return f"its notification is {row.notification_status}, not failed"
        return None
    if row.status == RefundStatus.SUCCEEDED:
        return f"already succeeded (credit memo {row.creditmemo_id}); replaying would refund twice"
    if row.status not in REPLAYABLE_STATUSES:
        return f"still in flight ({row.status}); only failed refunds can be replayed"
    return None


@dataclass(frozen=True)
class ReplayCandidate:
    """A refund a replay would touch: what it is, why it failed, and why it is refused (if so)."""

    refund_id: str
    tenant: str
    idempotency_key: str
    order_id: int | None
    status: str
    notification_status: str
    attempts: int
    error: str | None  # the refund's last error, or the email's with ``notifications``
    updated_at: datetime
    refused: str | None = None


#: What ``plan_replay`` reads of each refund (Core columns: no ORM row per refund).
_CANDIDATE_COLUMNS = tuple(
    tables.refunds.c[name]
    for name in (
        "id",
        "tenant",
        "idempotency_key",
        "order_id",
        "status",
        "creditmemo_id",
        "notification_status",
        "attempts",
        "notification_attempts",
        "last_error",
        "notification_error",
        "updated_at",
    )
)


@dataclass
class ReplayPlan:
    """What a replay would do: refunds it would re-queue, refunds (or ids) it would refuse."""

    ready: list[ReplayCandidate] = field(default_factory=list)
    refused: list[ReplayCandidate] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # ids (or keys) that match nothing


def check_reason(reason: str) -> str:
    """The reason, stripped; ``ValueError`` when empty, too long or with control characters."""
    cleaned = reason.strip()
    if not cleaned:
        raise ValueError("a reason is required: say why these refunds are replayed")
    if len(cleaned) > MAX_REASON_LENGTH:
        raise ValueError(f"the reason is longer than {MAX_REASON_LENGTH} characters")
    if any((ord(char) < 32 and char not in "\t\n\r") or ord(char) == 127 for char in cleaned):
        raise ValueError("the reason contains control characters")
    return cleaned


def replayable_filter(refund_filter: RefundFilter, *, notifications: bool) -> RefundFilter:
    """``refund_filter`` restricted to what can be replayed, unless it names refunds by id.

    Named refunds are kept whatever their state, so each one that cannot be replayed is
    reported with why instead of being silently left out.
    """
    if refund_filter.ids or refund_filter.keys:
        return refund_filter
    if notifications:
        return replace(
            refund_filter,
            status=RefundStatus.SUCCEEDED.value,
            notification_status=refund_filter.notification_status
            or NotificationStatus.FAILED.value,
        )
    return replace(refund_filter, status=refund_filter.status or RefundStatus.FAILED.value)


def plan_replay(
    session: Session, refund_filter: RefundFilter, *, notifications: bool
) -> ReplayPlan:
    """What ``replay`` would do for the refunds matching the filter (read only), oldest first.

    Reads only the columns a candidate shows (not whole rows with their requests): a dry run
    over 20,000 failed refunds stays a fraction of a second of database and Python time.
    """
    plan = ReplayPlan()
    chosen = replayable_filter(refund_filter, notifications=notifications)
    rows = session.execute(chosen.select(*_CANDIDATE_COLUMNS)).all()
    found = {row.id for row in rows} | {row.idempotency_key for row in rows}
    wanted = (*refund_filter.ids, *refund_filter.keys)
    plan.missing = [name for name in dict.fromkeys(wanted) if name not in found]
    for row in reversed(rows):  # the statement lists newest first
        candidate = ReplayCandidate(
            refund_id=row.id,
            tenant=row.tenant,
            idempotency_key=row.idempotency_key,
            order_id=row.order_id,
            status=row.status,
            notification_status=row.notification_status,
            attempts=row.notification_attempts if notifications else row.attempts,
            error=row.notification_error if notifications else row.last_error,
            updated_at=row.updated_at,
            refused=refusal(row, notifications),
        )
        (plan.ready if candidate.refused is None else plan.refused).append(candidate)
    return plan


def replay(
    database: Database,
    publisher: Publisher,
    refund_ids: Sequence[str],
    *,
    reason: str,
    actor: str = "operator",
    notifications: bool = False,
) -> ReplayReport:
    """Re-queue failed refunds (or failed emails); commit, then publish (through a publisher
    that raises ``BrokerUnavailable``, such as ``publishing.GuardedPublisher``).

    ``reason`` is required (see ``check_reason``) and kept in each refund's ``*_replayed`` event.
    """
    reason = check_reason(reason)
    report = ReplayReport()
    now = utcnow()
    with database.session_scope() as session:
        rows = select_refunds(session, RefundFilter(ids=tuple(refund_ids)))
        found = {row.id for row in rows}
        for missing in sorted(set(refund_ids) - found):
            report.refused[missing] = "no such refund"
        for row in sorted(rows, key=lambda row: (row.created_at, row.id)):
            why = refusal(row, notifications)
            if why is not None:
                report.refused[row.id] = why
                continue
            previous = row.notification_error if notifications else row.attention or row.last_error
            if _requeue(session, row, now, notifications, actor):
                what = "notification" if notifications else "refund"
                session.add(
                    RefundEvent(
                        refund_id=row.id,
                        kind=f"{what}_replayed",
                        detail=f"by {actor}: {reason} (previous error: {previous})",
                    )
                )
                report.webhooks.extend(
                    _replayed_event(session, row.id, what, actor, reason, previous, now)
                )
                report.replayed.append(row.id)
            else:
                report.refused[row.id] = "changed while replaying; try again"
    try:
        if notifications:
            publisher.publish_notifications(report.replayed)
        else:
            publisher.publish_refunds(report.replayed)
        from refund_worker.publishing import publish_webhooks_of  # loads Celery: not for a dry run

        publish_webhooks_of(publisher, report.webhooks)
    except BrokerUnavailable as exc:
        report.unpublished = exc.message
    return report


def _replayed_event(
    session: Session,
    refund_id: str,
    what: str,
    actor: str,
    reason: str,
    previous: str | None,
    now: datetime,
) -> list[int]:
    """The ``refund.replayed`` deliveries, in the replay's own transaction."""
    status = RefundStatus.QUEUED if what == "refund" else RefundStatus.SUCCEEDED
    data = {
        "replayed": what,
        "replayed_by": actor,
        "reason": reason,
        "previous_error": previous,
        "status": status.value,
    }
    params = {"p_refund_id": refund_id, "p_now": now, **event_params(data)}
    return list(session.execute(OUTBOX_INSERT[EventType.REPLAYED], params).scalars())


def _requeue(
    session: Session, row: Refund, now: datetime, notifications: bool, actor: str
) -> bool:
    """Re-queue the refund (or its email), compare-and-set on that state machine's version."""
    if notifications:
        fence = Refund.notification_version == row.notification_version
        values: dict[str, object] = {
            "notification_status": NotificationStatus.PENDING.value,
            "notification_error": None,
            # Counted as a later attempt: Magento's email_sent flag is checked before sending.
            "notification_attempts": 1,
            "notification_next_at": now,
            "notification_published_at": now,
            "notification_version": Refund.notification_version + 1,
        }
    else:
        fence = Refund.version == row.version
        values = {
            "status": RefundStatus.QUEUED.value,
            "attempts": 0,
            "last_error": None,
            "last_error_kind": None,
            "last_http_status": None,
            "attention": None,
            "in_doubt": True,  # reconcile with Magento before any new refund call
            "next_attempt_at": now,
            "published_at": now,
            "settled_at": None,
            "version": Refund.version + 1,
        }
    replayed = session.execute(
        update(Refund)
        .where(Refund.id == row.id, fence)
        .values(updated_at=now, replayed_by=actor[:64], **values)
    )
    return rowcount(replayed) == 1
