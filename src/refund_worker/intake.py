"""The one way in: validate, store under the idempotency key, publish after commit.

Idempotency follows Stripe's rule: the same key with the same payload returns the refund that
already exists; the same key with a different payload is refused as a conflict. Keys are per
tenant (each producer's API key, or ``default``): two tenants may both use ``RMA-1`` and get two
refunds, and neither learns of the other's. Rows are
committed before any task is published; a crash in between leaves them ``received``, and the
sweeper publishes them.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from pydantic import ValidationError
from sqlalchemy import ARRAY, String, Table, any_, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from refund_worker.db import Database
from refund_worker.errors import IdempotencyConflict, InvalidRefund, RefundWorkerError
from refund_worker.markers import new_marker_token
from refund_worker.models import Refund, utcnow
from refund_worker.schemas import (
    DEFAULT_SHOP,
    DEFAULT_TENANT,
    TENANT_PATTERN,
    NotificationStatus,
    RefundReceipt,
    RefundRequest,
    RefundStatus,
    load_json,
)

#: Requests per batch: one insert, one lookup, one pipelined publish and one update each.
#: (``python bench/intake.py``: 2,000 gave 8-10% more than 500; SQLite's statements stay under
#: its 32,766 variables, SQLAlchemy splits the multi-row insert.)
BATCH_SIZE = 2000
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
    if isinstance(data, str | bytes):
        try:
            data = load_json(data, constants=True)  # NaN: refused by its field's name
        except RecursionError:
            raise InvalidRefund("request: malformed JSON: nested too deeply") from None
        except ValueError as exc:  # JSONDecodeError, bad UTF-8, NaN, a key twice
            raise InvalidRefund(f"request: malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidRefund("request: must be a JSON object: one refund request")
    try:
        return RefundRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidRefund(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field: reason``."""
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(_field_name(part) for part in error["loc"]) or "request"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


def _field_name(part: str | int) -> str:
    """A field name as it can be shown: an unknown key may be huge or hold control characters."""
    text = str(part)
    shortened = text[:MAX_FIELD_NAME] + ("..." if len(text) > MAX_FIELD_NAME else "")
    if shortened.isprintable() and " " not in shortened:
        return shortened
    return json.dumps(shortened)  # quoted, every control character escaped


def resolve_shop(request: RefundRequest, shops: Sequence[str]) -> RefundRequest:
    """``request`` naming one of ``shops`` (the configured shops, or those a caller may use):
    its own ``shop``, or the only one when it names none. ``InvalidRefund`` naming ``shop``
    otherwise; no other shop is ever chosen for it."""
    if request.shop is not None:
        if request.shop not in shops:
            raise InvalidRefund(
                f"shop: {request.shop!r} is not a shop you may refund in "
                f"(configured: {', '.join(shops) or 'none'})"
            )
        return request
    if len(shops) != 1:
        raise InvalidRefund(
            f"shop: required, since several shops are configured ({', '.join(shops)})"
            if shops
            else "shop: no shop is configured"
        )
    return request.in_shop(shops[0])


def enqueue_refund(
    data: RefundRequest | Mapping[str, Any] | str | bytes,
    *,
    database: Database,
    publisher: Publisher,
    tenant: str = DEFAULT_TENANT,
    created_by: str | None = None,
    shops: Sequence[str] = (DEFAULT_SHOP,),
) -> RefundReceipt:
    """Accept one refund request for ``tenant`` in one of ``shops`` (the configured ones);
    raises ``InvalidRefund`` or ``IdempotencyConflict``."""
    request = validate_request(data)
    result = enqueue_refunds(
        [request],
        database=database,
        publisher=publisher,
        tenant=tenant,
        created_by=created_by,
        shops=shops,
    )[0]
    if isinstance(result, IntakeRejection):
        raise result.error
    return result


def enqueue_refunds(
    requests: Iterable[RefundRequest],
    *,
    database: Database,
    publisher: Publisher,
    tenant: str = DEFAULT_TENANT,
    created_by: str | None = None,
    shops: Sequence[str] = (DEFAULT_SHOP,),
) -> list[RefundReceipt | IntakeRejection]:
    """Accept many validated requests of one tenant in batches: one result per request, in
    order. Each names one of ``shops`` (the configured shops), or none when there is one."""
    owner = _Owner(check_tenant(tenant), created_by, tuple(shops))
    results: list[RefundReceipt | IntakeRejection] = []
    batch: list[RefundRequest] = []
    offset = 0
    for request in requests:
        batch.append(request)
        if len(batch) == BATCH_SIZE:
            results.extend(_enqueue_batch(batch, offset, database, publisher, owner))
            offset += len(batch)
            batch = []
    if batch:
        results.extend(_enqueue_batch(batch, offset, database, publisher, owner))
    return results


@dataclass(frozen=True)
class _Owner:
    tenant: str
    created_by: str | None
    shops: tuple[str, ...] = (DEFAULT_SHOP,)


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant name (as API key names are), else ``InvalidRefund``."""
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
        raise InvalidRefund(
            f"tenant: {tenant!r} is not a tenant name (1-64 of A-Z a-z 0-9 _ . -)"
        )
    return tenant


def _enqueue_batch(
    batch: list[RefundRequest],
    offset: int,
    database: Database,
    publisher: Publisher,
    owner: _Owner,
) -> list[RefundReceipt | IntakeRejection]:
    now = utcnow()
    refused: dict[int, IntakeRejection] = {}
    resolved: list[RefundRequest] = []
    only_default = owner.shops == (DEFAULT_SHOP,)
    for position, request in enumerate(batch):
        if only_default and request.shop is None:
            resolved.append(request)  # stored and hashed as if it named it (``canonical_json``)
            continue
        try:
            resolved.append(resolve_shop(request, owner.shops))
        except InvalidRefund as exc:
            refused[position] = IntakeRejection(offset + position, exc)
            resolved.append(request)
    batch = resolved
    hashes = [request.payload_hash() for request in batch]
    first_by_key: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    for position, request in enumerate(batch):
        if position in refused:
            continue
        if request.idempotency_key in first_by_key:
            continue
        first_by_key[request.idempotency_key] = position
        rows.append(_row(request, hashes[position]))

    if not rows:
        return [refused[position] for position in range(len(batch))]
    shared = _batch_values(now, owner)
    with database.session_scope() as session:
        if session.get_bind().dialect.name == "postgresql":
            inserted, existing = _store_with_arrays(session, rows, shared, list(first_by_key))
        else:
            inserted, existing = _store_with_orm(session, rows, shared, list(first_by_key))
    new_ids = [row["id"] for row in rows if row["id"] in inserted]
    if new_ids:
        publisher.publish_refunds(new_ids)
        with database.session_scope() as session:
            _mark_queued(session, new_ids)

    results: list[RefundReceipt | IntakeRejection] = []
    for position, request in enumerate(batch):
        if position in refused:
            results.append(refused[position])
            continue
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


#: (refund id, payload hash, status) of each stored idempotency key of a batch.
_Stored = dict[str, tuple[str, str, str]]

_refunds = cast(Table, Refund.__table__)
#: Marks the batch's published rows queued; ``= ANY(array)`` keeps the SQL text the same for any
#: batch size, so it is parsed and planned once (an ``IN`` list of 500 would be new text each time).
_MARK_QUEUED = (
    update(_refunds)
    .where(
        _refunds.c.id == any_(bindparam("ids", type_=ARRAY(String))),
        _refunds.c.status == RefundStatus.RECEIVED.value,
    )
    .values(status=RefundStatus.QUEUED.value, published_at=bindparam("now"))
)
_LOOKUP_BY_KEYS = select(
    _refunds.c.idempotency_key, _refunds.c.id, _refunds.c.payload_hash, _refunds.c.status
).where(
    _refunds.c.tenant == bindparam("tenant"),
    _refunds.c.idempotency_key == any_(bindparam("keys", type_=ARRAY(String))),
)


@functools.cache
def _array_insert_sql(columns: tuple[str, ...], shared: tuple[str, ...]) -> str:
    """``INSERT .. SELECT FROM unnest(one array per column) ON CONFLICT DO NOTHING RETURNING id``,
    the ``shared`` columns (one value for the whole batch) given once each.

    One short text whatever the batch size: psycopg caches and prepares it, where a 500-row
    ``VALUES`` list is 10,000 placeholders to re-parse and re-plan on every batch. Arrays are sent
    binary (``%b``), so no element is escaped as text.
    """
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]

    def sql_type(name: str) -> str:
        return str(_refunds.c[name].type.compile(dialect=dialect))

    arrays = ", ".join(f"%({name})b::{sql_type(name)}[]" for name in columns)
    values = ", ".join(f"%({name})s::{sql_type(name)}" for name in shared)
    names = ", ".join(columns)  # our own table's column names: no input reaches this text
    insert_into = (
        f"INSERT INTO {_refunds.name} ({names}, {', '.join(shared)}) SELECT {names}, {values} "
    )
    return (
        f"{insert_into}FROM unnest({arrays}) AS batch({names}) "
        "ON CONFLICT (tenant, idempotency_key) DO NOTHING RETURNING id"
    )


def _store_with_arrays(
    session: Session, rows: list[dict[str, Any]], shared: dict[str, Any], keys: list[str]
) -> tuple[set[str], _Stored]:
    """PostgreSQL: insert the rows whose key is new, then read back every key of the batch."""
    columns = tuple(rows[0])
    params = {name: [row[name] for row in rows] for name in columns} | shared
    connection = session.connection()
    sql = _array_insert_sql(columns, tuple(shared))
    inserted = set(connection.exec_driver_sql(sql, params).scalars())
    lookup = connection.execute(_LOOKUP_BY_KEYS, {"tenant": shared["tenant"], "keys": keys})
    return inserted, _lookup(lookup)


def _store_with_orm(
    session: Session, rows: list[dict[str, Any]], shared: dict[str, Any], keys: list[str]
) -> tuple[set[str], _Stored]:
    """SQLite: a multi-row insert that skips stored keys."""
    statement = (
        sqlite.insert(Refund)
        .on_conflict_do_nothing(index_elements=["tenant", "idempotency_key"])
        .returning(Refund.id)
    )
    inserted = set(session.scalars(statement, [row | shared for row in rows]).all())
    lookup = select(Refund.idempotency_key, Refund.id, Refund.payload_hash, Refund.status).where(
        Refund.tenant == shared["tenant"], Refund.idempotency_key.in_(keys)
    )
    return inserted, _lookup(session.execute(lookup))


def _mark_queued(session: Session, refund_ids: list[str]) -> None:
    """``received`` → ``queued`` for the rows just published (a sweeper may have been quicker)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(_MARK_QUEUED, {"ids": refund_ids, "now": utcnow()})
        return
    session.connection().execute(
        update(_refunds)
        .where(_refunds.c.id.in_(refund_ids), _refunds.c.status == RefundStatus.RECEIVED.value)
        .values(status=RefundStatus.QUEUED.value, published_at=utcnow())
    )


def _lookup(result: Any) -> _Stored:
    return {key: (refund_id, digest, status) for key, refund_id, digest, status in result}


def _row(request: RefundRequest, payload_hash: str) -> dict[str, Any]:
    """The columns of a new refund that differ from one request to the next."""
    return {
        "id": str(uuid.uuid4()),
        "idempotency_key": request.idempotency_key,
        "shop": request.shop or DEFAULT_SHOP,
        "marker_token": new_marker_token(),
        "payload_hash": payload_hash,
        "request_json": request.canonical_json(),
        "order_id": request.order_id,
        "order_increment_id": request.order_increment_id,
        "invoice_id": request.invoice_id,
        "store_code": request.store_code,
        "service_requested": request.service,
        "notify_customer": request.notify_customer,
    }


def _batch_values(now: Any, owner: _Owner) -> dict[str, Any]:
    """The columns every new refund of a batch shares: its owner, its start, its counters."""
    return {
        "tenant": owner.tenant,
        "created_by": owner.created_by,
        "status": RefundStatus.RECEIVED.value,
        "attempts": 0,
        "in_doubt": False,
        "version": 0,
        "notification_status": NotificationStatus.NOT_REQUESTED.value,
        "notification_attempts": 0,
        "notification_version": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
