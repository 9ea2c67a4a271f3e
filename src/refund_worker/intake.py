"""The one way in: validate, store under the idempotency key, publish after commit.

Idempotency follows Stripe's rule: the same key with the same payload returns the refund that
already exists; the same key with a different payload is refused as a conflict. Rows are
committed before any task is published; a crash in between leaves them ``received``, and the
sweeper publishes them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from refund_worker.db import Database
from refund_worker.errors import IdempotencyConflict, InvalidRefund, RefundWorkerError
from refund_worker.models import Refund, utcnow
from refund_worker.schemas import NotificationStatus, RefundReceipt, RefundRequest, RefundStatus

#: Rows per INSERT / SELECT ... IN batch.
BATCH_SIZE = 500
#: The largest JSON request accepted (1 MiB); a valid request is a few kilobytes at most.
MAX_REQUEST_BYTES = 1024 * 1024
#: Longer (unknown) field names are cut in error messages.
MAX_FIELD_NAME = 64


class Publisher(Protocol):
    """Publishes ``refunds.process`` messages for refund ids (after their rows are committed)."""

    def publish_refunds(self, refund_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class IntakeRejection:
    """A request of a bulk call that was not accepted, with why."""

    index: int
    error: RefundWorkerError


def validate_request(data: RefundRequest | Mapping[str, Any] | str | bytes) -> RefundRequest:
    """A ``RefundRequest`` from a model, a mapping or JSON; ``InvalidRefund`` names each field.

    JSON text over ``MAX_REQUEST_BYTES`` is refused before it is parsed.
    """
    if isinstance(data, RefundRequest):
        return data
    if isinstance(data, str | bytes):
        size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
        if size > MAX_REQUEST_BYTES:
            raise InvalidRefund(
                f"request: {size} bytes is larger than the {MAX_REQUEST_BYTES} bytes (1 MiB) "
                "a refund request may have"
            )
    try:
        if isinstance(data, str | bytes):
            return RefundRequest.model_validate_json(data)
        return RefundRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidRefund(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field: reason``."""
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(_field_name(part) for part in error["loc"]) or "request"
        message = error["msg"]
        if error["type"] == "json_invalid":
            location = "request"
            message = f"malformed JSON: {error.get('ctx', {}).get('error', message)}"
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


def _field_name(part: str | int) -> str:
    """A field name as it can be shown: an unknown key may be huge or hold control characters."""
    text = str(part)
    shortened = text[:MAX_FIELD_NAME] + ("..." if len(text) > MAX_FIELD_NAME else "")
    if shortened.isprintable() and " " not in shortened:
        return shortened
    return json.dumps(shortened)  # quoted, every control character escaped


def enqueue_refund(
    data: RefundRequest | Mapping[str, Any] | str | bytes,
    *,
    database: Database,
    publisher: Publisher,
    created_by: str | None = None,
) -> RefundReceipt:
    """Accept one refund request; raises ``InvalidRefund`` or ``IdempotencyConflict``."""
    request = validate_request(data)
    result = enqueue_refunds(
        [request], database=database, publisher=publisher, created_by=created_by
    )[0]
    if isinstance(result, IntakeRejection):
        raise result.error
    return result


def enqueue_refunds(
    requests: Iterable[RefundRequest],
    *,
    database: Database,
    publisher: Publisher,
    created_by: str | None = None,
) -> list[RefundReceipt | IntakeRejection]:
    """Accept many validated requests in batches: one result per request, in order."""
    results: list[RefundReceipt | IntakeRejection] = []
    batch: list[RefundRequest] = []
    offset = 0
    for request in requests:
        batch.append(request)
        if len(batch) == BATCH_SIZE:
            results.extend(_enqueue_batch(batch, offset, database, publisher, created_by))
            offset += len(batch)
            batch = []
    if batch:
        results.extend(_enqueue_batch(batch, offset, database, publisher, created_by))
    return results


def _enqueue_batch(
    batch: list[RefundRequest],
    offset: int,
    database: Database,
    publisher: Publisher,
    created_by: str | None,
) -> list[RefundReceipt | IntakeRejection]:
    now = utcnow()
    hashes = [request.payload_hash() for request in batch]
    first_by_key: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    for position, request in enumerate(batch):
        if request.idempotency_key in first_by_key:
            continue
        first_by_key[request.idempotency_key] = position
        rows.append(_row(request, hashes[position], now, created_by))

    with database.session_scope() as session:
        dialect = session.get_bind().dialect.name
        insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
        inserted = (
            set(
                session.scalars(
                    insert_fn(Refund)
                    .on_conflict_do_nothing(index_elements=["idempotency_key"])
                    .returning(Refund.id),
                    rows,
                ).all()
            )
            if dialect in ("postgresql", "sqlite")
            else _insert_portably(session, rows)
        )
        existing = {
            key: (refund_id, payload_hash, status)
            for key, refund_id, payload_hash, status in session.execute(
                select(Refund.idempotency_key, Refund.id, Refund.payload_hash, Refund.status).where(
                    Refund.idempotency_key.in_(list(first_by_key))
                )
            )
        }
    new_ids = [row["id"] for row in rows if row["id"] in inserted]
    if new_ids:
        publisher.publish_refunds(new_ids)
        with database.session_scope() as session:
            session.execute(
                update(Refund)
                .where(Refund.id.in_(new_ids), Refund.status == RefundStatus.RECEIVED.value)
                .values(status=RefundStatus.QUEUED.value, published_at=utcnow())
            )

    results: list[RefundReceipt | IntakeRejection] = []
    for position, request in enumerate(batch):
        refund_id, stored_hash, status = existing[request.idempotency_key]
        fresh = refund_id in inserted and first_by_key[request.idempotency_key] == position
        if stored_hash != hashes[position]:
            results.append(
                IntakeRejection(
                    offset + position,
                    IdempotencyConflict(
                        f"idempotency_key: {request.idempotency_key!r} was already used for a "
                        f"different refund ({refund_id}); use a new key for a new refund",
                        refund_id=refund_id,
                        idempotency_key=request.idempotency_key,
                    ),
                )
            )
            continue
        shown = RefundStatus.QUEUED if fresh else RefundStatus(status)
        results.append(
            RefundReceipt(
                refund_id=refund_id,
                idempotency_key=request.idempotency_key,
                status=shown,
                duplicate=not fresh,
            )
        )
    return results


def _row(
    request: RefundRequest, payload_hash: str, now: Any, created_by: str | None
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "idempotency_key": request.idempotency_key,
        "payload_hash": payload_hash,
        "request_json": request.canonical_json(),
        "order_id": request.order_id,
        "invoice_id": request.invoice_id,
        "store_code": request.store_code,
        "service_requested": request.service,
        "status": RefundStatus.RECEIVED.value,
        "attempts": 0,
        "in_doubt": False,
        "version": 0,
        "notify_customer": request.notify_customer,
        "notification_status": NotificationStatus.NOT_REQUESTED.value,
        "notification_attempts": 0,
        "next_attempt_at": now,
        "created_by": created_by,
        "created_at": now,
        "updated_at": now,
    }


def _insert_portably(session: Any, rows: list[dict[str, Any]]) -> set[str]:
    """Fallback for other databases: insert only the keys not stored yet."""
    keys = [row["idempotency_key"] for row in rows]
    stored = set(
        session.scalars(select(Refund.idempotency_key).where(Refund.idempotency_key.in_(keys)))
    )
    fresh = [row for row in rows if row["idempotency_key"] not in stored]
    if fresh:
        session.execute(insert(Refund), fresh)
    return {row["id"] for row in fresh}
