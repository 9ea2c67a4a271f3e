"""Read-only views of refunds for people: one refund with its calls, lists, statistics."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from refund_worker.models import MagentoCall, Refund
from refund_worker.schemas import MagentoCallView, NotificationStatus, RefundStatus, RefundView


def find_refund(session: Session, id_or_key: str) -> Refund | None:
    """A refund by id, else by idempotency key."""
    row = session.get(Refund, id_or_key)
    if row is None:
        row = session.scalars(select(Refund).where(Refund.idempotency_key == id_or_key)).first()
    return row


def to_view(row: Refund, calls: list[MagentoCall] | None = None) -> RefundView:
    """The public view of a refund row."""
    return RefundView(
        id=row.id,
        idempotency_key=row.idempotency_key,
        order_id=row.order_id,
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


def refund_view(session: Session, id_or_key: str) -> RefundView | None:
    """One refund with its Magento calls, oldest first."""
    row = find_refund(session, id_or_key)
    if row is None:
        return None
    calls = list(
        session.scalars(
            select(MagentoCall).where(MagentoCall.refund_id == row.id).order_by(MagentoCall.id)
        )
    )
    return to_view(row, calls)
