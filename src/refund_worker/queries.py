"""Read-only views of refunds for the HTTP API and the console: ORM rows and their pydantic views.

Small functions over a session; nothing here writes or prints. The Core reads the CLI uses (the
filter, time parsing, statistics) are in ``views`` and re-exported here.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from refund_worker.models import MagentoCall, Refund, RefundEvent
from refund_worker.schemas import MagentoCallView, NotificationStatus, RefundStatus, RefundView
from refund_worker.views import DEFAULT_LATENCY_WINDOW as DEFAULT_LATENCY_WINDOW
from refund_worker.views import LATENCY_SAMPLE_LIMIT as LATENCY_SAMPLE_LIMIT
from refund_worker.views import EventView as EventView
from refund_worker.views import Latency as Latency
from refund_worker.views import RefundFilter as RefundFilter
from refund_worker.views import Stats as Stats
from refund_worker.views import latency_of as latency_of
from refund_worker.views import parse_duration as parse_duration
from refund_worker.views import parse_moment as parse_moment
from refund_worker.views import percentile as percentile
from refund_worker.views import refund_stats as refund_stats

# -- one refund ------------------------------------------------------------------------------


def get_refund(session: Session, refund_id: str, *, tenant: str | None = None) -> Refund | None:
    """A refund by id (only ``tenant``'s when given); never looked up by idempotency key."""
    row = session.get(Refund, refund_id)
    if row is None or (tenant is not None and row.tenant != tenant):
        return None
    return row


def refunds_by_key(
    session: Session, idempotency_key: str, *, tenant: str | None = None
) -> list[Refund]:
    """The refunds stored under ``idempotency_key``: one per tenant that used it (only
    ``tenant``'s when given); never looked up by id."""
    query = select(Refund).where(Refund.idempotency_key == idempotency_key)
    if tenant is not None:
        query = query.where(Refund.tenant == tenant)
    return list(session.scalars(query.order_by(Refund.tenant)))


def to_view(row: Refund, calls: list[MagentoCall] | None = None) -> RefundView:
    """The public view of a refund row."""
    return RefundView(
        id=row.id,
        tenant=row.tenant,
        idempotency_key=row.idempotency_key,
        shop=row.shop,
        order_id=row.order_id,
        order_increment_id=row.order_increment_id,
        invoice_id=row.invoice_id,
        status=RefundStatus(row.status),
        service_requested=row.service_requested,
        service=row.service,
        creditmemo_id=row.creditmemo_id,
        attempts=row.attempts,
        last_error=row.last_error,
        outcome=row.outcome,
        notification_status=NotificationStatus(row.notification_status),
        notification_error=row.notification_error,
        attention=row.attention,
        created_by=row.created_by,
        replayed_by=row.replayed_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        calls=[
            MagentoCallView(
                attempt=call.attempt,
                operation=call.operation,
                http_status=call.http_status,
                duration_ms=call.duration_ms,
                error=call.error,
                created_at=call.created_at,
            )
            for call in calls or []
        ],
    )


def refund_view(
    session: Session, refund_id: str, *, tenant: str | None = None
) -> RefundView | None:
    """One refund (by id; only ``tenant``'s when given) with its Magento calls, oldest first."""
    row = get_refund(session, refund_id, tenant=tenant)
    if row is None:
        return None
    calls = list(
        session.scalars(
            select(MagentoCall).where(MagentoCall.refund_id == row.id).order_by(MagentoCall.id)
        )
    )
    return to_view(row, calls)


def refund_events(session: Session, refund_id: str) -> list[EventView]:
    """The audit events of one refund, oldest first."""
    rows = session.scalars(
        select(RefundEvent).where(RefundEvent.refund_id == refund_id).order_by(RefundEvent.id)
    )
    return [EventView(row.kind, row.detail, row.created_at) for row in rows]


# -- lists -----------------------------------------------------------------------------------


def select_refunds(session: Session, refund_filter: RefundFilter) -> list[Refund]:
    """Rows matching the filter, newest first."""
    return list(session.scalars(refund_filter.statement()))


def list_refunds(session: Session, refund_filter: RefundFilter) -> list[RefundView]:
    """Views (without calls) of the rows matching the filter, newest first."""
    return [to_view(row) for row in select_refunds(session, refund_filter)]
