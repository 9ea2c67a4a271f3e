"""Named state changes of a refund and of its customer email: the only module that writes them.

Two faces, one per state machine, over the ``refunds`` row (and ``order_locks``,
``magento_calls``, ``refund_events``):

* ``RefundStore``: claim (compare-and-set to ``processing`` under a lease, with the order's
  lock), renew the lease, record success / retry / failure / needs-attention (each only while the
  attempt still holds its lease; a success is never undone), with the attempt's audit rows;
* ``EmailStore``: claim the email, renew its lease, record its outcome, fenced by the row's
  ``notification_version`` (the email's own version: the two machines never fence each other).

Every statement is built once, at import, and run with a parameter dict: on this path building a
statement and its cache key costs more CPU than the database round trip (docs/performance.md,
"prebuilt statements"). Per-call values are ``p_*`` parameters (a name that is a column's would
join an UPDATE's SET list). The callers (``refunds``, ``notifications``) never see SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    BindParameter,
    ColumnElement,
    Connection,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from refund_worker.db import Database, rowcount
from refund_worker.magento import CallRecord
from refund_worker.models import MagentoCall, OrderLock, Refund, RefundEvent, utcnow
from refund_worker.outbox import OUTBOX_INSERT, EventType, event_params, outbox_insert
from refund_worker.schemas import (
    SETTLED_STATUSES,
    ErrorKind,
    NotificationStatus,
    RefundStatus,
)

__all__ = [
    "ClaimedEmail",
    "ClaimedRefund",
    "CreditmemoTaken",
    "EmailStore",
    "NotClaimed",
    "OrderBusy",
    "RefundStore",
    "Renewal",
    "Resolution",
]

_refunds = cast(Table, Refund.__table__)
_order_locks = cast(Table, OrderLock.__table__)
_magento_calls = cast(Table, MagentoCall.__table__)
_refund_events = cast(Table, RefundEvent.__table__)


def _param(name: str, column: ColumnElement[Any]) -> BindParameter[Any]:
    """A per-call value typed like ``column`` (UTC datetimes and booleans bind alike on SQLite
    and PostgreSQL)."""
    return bindparam(name, type_=column.type)


# -- what the stores answer ------------------------------------------------------------------


@dataclass(frozen=True)
class NotClaimed:
    """Nothing to do for this delivery: ``detail`` says why, ``status`` what the row is."""

    status: str
    detail: str


@dataclass(frozen=True)
class OrderBusy:
    """Another refund of the same order holds its lock: nothing was claimed."""

    order_id: int
    shop: str = "default"


@dataclass
class ClaimedRefund:
    """A refund this attempt holds under ``token`` until ``lease_until``."""

    refund_id: str
    #: None while the request names its order by increment id only (``RefundStore.resolve_order``
    #: stores it; until then no order lock is held, and no money call is ever made).
    order_id: int | None
    request_json: str
    marker_token: str | None
    token: str
    attempt: int
    #: An earlier attempt may have reached Magento: reconcile before anything is sent.
    was_in_doubt: bool
    first_attempt_at: datetime
    claimed_at: datetime
    last_error: str | None
    #: The shop the row names: the only Magento this attempt may call.
    shop: str = "default"
    #: The Magento service this attempt chose, once routing has run (kept on every outcome).
    service: str | None = None
    calls: list[CallRecord] = field(default_factory=list)
    #: Webhook deliveries the recorded outcome wrote to the outbox (to publish after commit).
    webhooks: list[int] = field(default_factory=list)


@dataclass
class ClaimedEmail:
    """A refund's email this attempt holds; every later write is fenced by ``version``."""

    refund_id: str
    creditmemo_id: int
    request_json: str
    attempt: int
    version: int
    last_error: str | None
    claimed_at: datetime
    #: The shop the row names: the only Magento this email may be sent through.
    shop: str = "default"
    calls: list[CallRecord] = field(default_factory=list)
    #: Webhook deliveries the recorded outcome wrote to the outbox (to publish after commit).
    webhooks: list[int] = field(default_factory=list)


class Renewal(Enum):
    """What renewing a lease right before the money-moving call found."""

    RENEWED = "renewed"
    LEASE_LOST = "lease lost"  # another worker took the refund over: do not call
    ORDER_LOCK_LOST = "order lock lost"  # another refund of the order holds it: do not call


class Resolution(Enum):
    """What storing a refund's resolved order found."""

    LOCKED = "locked"  # stored, and the order's lock is this attempt's: go on
    ORDER_BUSY = "order busy"  # stored; another refund of the order is in flight: defer
    LEASE_LOST = "lease lost"  # another worker took the refund over: nothing stored


class CreditmemoTaken(Exception):
    """Raised when a success names a credit memo that already backs another refund."""

    def __init__(self, creditmemo_id: int, owner: str | None) -> None:
        super().__init__(f"credit memo {creditmemo_id} already backs refund {owner}")
        self.creditmemo_id = creditmemo_id
        self.owner = owner


# -- the refund's statements -----------------------------------------------------------------

_P_REFUND_ID = _param("p_refund_id", _refunds.c.id)
_P_TOKEN = _param("p_token", _refunds.c.lease_token)
_P_NOW = _param("p_now", _refunds.c.updated_at)
_P_UNTIL = _param("p_until", _refunds.c.lease_expires_at)
_P_SERVICE = _param("p_service", _refunds.c.service)
_P_ORDER_ID = _param("p_order_id", _order_locks.c.order_id)
_P_SHOP = _param("p_shop", _order_locks.c.shop)

_THIS_REFUND = _refunds.c.id == _P_REFUND_ID
_HELD = and_(_THIS_REFUND, _refunds.c.lease_token == _P_TOKEN)
_NOT_SUCCEEDED = _refunds.c.status != RefundStatus.SUCCEEDED.value
_NEXT_VERSION = _refunds.c.version + 1
_PROCESSING = RefundStatus.PROCESSING.value

#: Claimable: not settled; not in flight under a live lease; due (a retry's message may come up
#: to ``DUE_SLACK`` early). Equalities, not ``in_``: an IN list is rendered at every execution.
_CLAIMABLE = and_(
    *(_refunds.c.status != status.value for status in sorted(SETTLED_STATUSES)),
    not_(and_(_refunds.c.status == _PROCESSING, _refunds.c.lease_expires_at > _P_NOW)),
    or_(
        _refunds.c.status == _PROCESSING,
        _refunds.c.next_attempt_at.is_(None),
        _refunds.c.next_attempt_at <= _param("p_due", _refunds.c.next_attempt_at),
    ),
)

#: The claim, one conditional UPDATE: the row is ``processing`` under this attempt's lease. The
#: SET list reads the old row, so ``in_doubt`` comes back true when an earlier attempt may have
#: reached Magento (it was in doubt, or its worker died mid-attempt: still ``processing``).
_CLAIM = (
    update(_refunds)
    .where(_THIS_REFUND, _CLAIMABLE)
    .values(
        status=_PROCESSING,
        attempts=_refunds.c.attempts + 1,
        lease_token=_P_TOKEN,
        lease_expires_at=_P_UNTIL,
        in_doubt=or_(_refunds.c.in_doubt, _refunds.c.status == _PROCESSING),
        first_attempt_at=func.coalesce(_refunds.c.first_attempt_at, _P_NOW),
        last_call_at=_P_NOW,
        version=_NEXT_VERSION,
        updated_at=_P_NOW,
    )
    .returning(
        _refunds.c.shop,
        _refunds.c.order_id,
        _refunds.c.request_json,
        _refunds.c.marker_token,
        _refunds.c.attempts,
        _refunds.c.in_doubt,
        _refunds.c.first_attempt_at,
        _refunds.c.last_error,
    )
)

#: A refund of a shop known to be paused, put off without a claim: one statement, no attempt
#: counted, no order lock, its status and doubt untouched (only while some shop is paused).
_DEFER_UNCLAIMED = (
    update(_refunds)
    .where(_THIS_REFUND, _refunds.c.shop == _param("p_shop", _refunds.c.shop), _CLAIMABLE)
    .values(
        next_attempt_at=_param("p_next_attempt_at", _refunds.c.next_attempt_at),
        published_at=_P_NOW,
        version=_NEXT_VERSION,
        updated_at=_P_NOW,
    )
)
#: The same, parked: ``published_at`` cleared says no message is out for it, so the sweep
#: publishes it once it is due (a shop down for long costs no retry message per refund).
_PARK_UNCLAIMED = _DEFER_UNCLAIMED.values(published_at=None)

#: Why a claim took nothing (read only then).
_CLAIM_EXPLAIN = select(
    _refunds.c.status, _refunds.c.lease_expires_at, _refunds.c.next_attempt_at
).where(_THIS_REFUND)


def _order_lock_upsert(
    insert_fn: Any,
) -> Any:
    """Insert the order's lock, or take it if it is already this refund's or has expired;
    RETURNING gives a row exactly when the lock is now ours."""
    statement = insert_fn(_order_locks).values(
        shop=_P_SHOP, order_id=_P_ORDER_ID, refund_id=_P_REFUND_ID, expires_at=_P_UNTIL
    )
    return statement.on_conflict_do_update(
        index_elements=[_order_locks.c.shop, _order_locks.c.order_id],
        set_={
            "refund_id": statement.excluded.refund_id,
            "expires_at": statement.excluded.expires_at,
        },
        where=(_order_locks.c.refund_id == _P_REFUND_ID) | (_order_locks.c.expires_at < _P_NOW),
    ).returning(_order_locks.c.order_id)


_TAKE_ORDER_LOCK = {
    "postgresql": _order_lock_upsert(postgresql.insert),
    "sqlite": _order_lock_upsert(sqlite.insert),
}
_THIS_ORDER_LOCK = and_(
    _order_locks.c.shop == _P_SHOP,
    _order_locks.c.order_id == _P_ORDER_ID,
    _order_locks.c.refund_id == _P_REFUND_ID,
)
_RENEW_ORDER_LOCK = update(_order_locks).where(_THIS_ORDER_LOCK).values(expires_at=_P_UNTIL)
_RELEASE_ORDER_LOCK = delete(_order_locks).where(_THIS_ORDER_LOCK)

#: The order an increment id resolved to, stored once, while this attempt holds the lease.
_RESOLVE_ORDER = (
    update(_refunds)
    .where(_HELD, _refunds.c.status == _PROCESSING, _refunds.c.order_id.is_(None))
    .values(order_id=_param("p_order_id", _refunds.c.order_id), updated_at=_P_NOW)
)

_RENEW_LEASE = (
    update(_refunds)
    .where(_HELD, _refunds.c.status == _PROCESSING)
    .values(lease_expires_at=_P_UNTIL, last_call_at=_P_NOW)
)
#: Gives the lease back without touching the outcome (the refund succeeded meanwhile).
_RELEASE_LEASE = (
    update(_refunds)
    .where(_HELD)
    .values(lease_token=None, lease_expires_at=None, version=_NEXT_VERSION)
)

#: A success, while this attempt holds the lease (which it gives back). The email becomes due
#: at once when the request asked for it; the service is kept if this attempt did not route.
_SUCCESS_VALUES: dict[str, Any] = {
    "status": RefundStatus.SUCCEEDED.value,
    "creditmemo_id": _param("p_creditmemo_id", _refunds.c.creditmemo_id),
    "outcome": _param("p_outcome", _refunds.c.outcome),
    "service": func.coalesce(_P_SERVICE, _refunds.c.service),
    "in_doubt": False,
    "last_error": None,
    "last_error_kind": None,
    "last_http_status": None,
    "attention": None,
    "settled_at": _P_NOW,
    "updated_at": _P_NOW,
    "version": _NEXT_VERSION,
    "notification_status": case(
        (_refunds.c.notify_customer, NotificationStatus.PENDING.value),
        else_=_refunds.c.notification_status,
    ),
    "notification_next_at": case((_refunds.c.notify_customer, _P_NOW), else_=None),
    "notification_published_at": case((_refunds.c.notify_customer, _P_NOW), else_=None),
}
_RECORD_SUCCESS = (
    update(_refunds)
    .where(_HELD, _NOT_SUCCEEDED)
    .values(lease_token=None, lease_expires_at=None, **_SUCCESS_VALUES)
)
#: A success recorded by an attempt whose lease was taken over meanwhile: a success is a fact,
#: so it is recorded, but the lease (and the order lock) stay with the worker holding them now.
_RECORD_SUCCESS_UNHELD = update(_refunds).where(_THIS_REFUND, _NOT_SUCCEEDED).values(
    **_SUCCESS_VALUES
)

#: The outcomes that are not a success, each while this attempt holds the lease (given back).
_OWNED_OUTCOME = update(_refunds).where(_HELD, _NOT_SUCCEEDED)
_OUTCOME_VALUES: dict[str, Any] = {
    "lease_token": None,
    "lease_expires_at": None,
    "version": _NEXT_VERSION,
    "service": func.coalesce(_P_SERVICE, _refunds.c.service),
    "last_error": _param("p_error", _refunds.c.last_error),
    "last_error_kind": _param("p_error_kind", _refunds.c.last_error_kind),
    "last_http_status": _param("p_http_status", _refunds.c.last_http_status),
    "in_doubt": _param("p_in_doubt", _refunds.c.in_doubt),
    "updated_at": _P_NOW,
}
_RECORD_RETRY = _OWNED_OUTCOME.values(
    status=RefundStatus.RETRYING.value,
    next_attempt_at=_param("p_next_attempt_at", _refunds.c.next_attempt_at),
    published_at=_P_NOW,
    last_call_at=_param("p_last_call_at", _refunds.c.last_call_at),
    **_OUTCOME_VALUES,
)
_RECORD_FAILURE = _OWNED_OUTCOME.values(
    status=RefundStatus.FAILED.value, settled_at=_P_NOW, **_OUTCOME_VALUES
)
_RECORD_ATTENTION = _OWNED_OUTCOME.values(
    status=RefundStatus.NEEDS_ATTENTION.value,
    attention=_param("p_attention", _refunds.c.attention),
    settled_at=_P_NOW,
    **_OUTCOME_VALUES,
)

_INSERT_EVENT = insert(_refund_events).values(
    refund_id=_P_REFUND_ID,
    kind=_param("p_kind", _refund_events.c.kind),
    detail=_param("p_detail", _refund_events.c.detail),
)
#: The audit rows of an attempt's calls (executemany: one dict of columns per call).
_INSERT_CALLS = insert(_magento_calls)
_CREDITMEMO_OWNER = select(_refunds.c.id).where(
    _refunds.c.shop == _param("p_shop", _refunds.c.shop),
    _refunds.c.creditmemo_id == _param("p_creditmemo_id", _refunds.c.creditmemo_id),
)
#: Gives a claim back untouched (no call was made): the attempt is not counted, the row is due
#: again at ``p_next_attempt_at``, and its doubt is kept (``p_in_doubt``, what the claim read).
_RECORD_DEFERRAL = (
    update(_refunds)
    .where(_HELD, _NOT_SUCCEEDED, _refunds.c.status == _PROCESSING)
    .values(
        status=RefundStatus.RETRYING.value,
        attempts=_refunds.c.attempts - 1,
        lease_token=None,
        lease_expires_at=None,
        in_doubt=_param("p_in_doubt", _refunds.c.in_doubt),
        next_attempt_at=_param("p_next_attempt_at", _refunds.c.next_attempt_at),
        published_at=_P_NOW,
        last_error=func.coalesce(_param("p_error", _refunds.c.last_error), _refunds.c.last_error),
        version=_NEXT_VERSION,
        updated_at=_P_NOW,
    )
)

# -- PostgreSQL: a state change and what goes with it in one statement -------------------------
#
# On PostgreSQL a data-modifying CTE writes the row, the order lock and the audit rows in one
# statement: one round trip and, outside a claim, no BEGIN/COMMIT, where three statements in a
# transaction were five (docs/performance.md, "one statement per state change"). The audit rows
# travel as one array per column. Whenever the one statement does not apply (it changed no row),
# the portable path runs and decides.

_AUDIT_COLUMNS: dict[str, ARRAY[Any]] = {
    "refund_id": ARRAY(String),
    "attempt": ARRAY(Integer),
    "operation": ARRAY(String),
    "method": ARRAY(String),
    "path": ARRAY(String),
    "http_status": ARRAY(Integer),
    "duration_ms": ARRAY(Float),
    "error": ARRAY(Text),
    "created_at": ARRAY(DateTime(timezone=True)),  # when each call started
}


def _audit_insert(only_if: Any = None) -> Any:
    """INSERT the ``a_<column>`` arrays' rows into ``magento_calls`` (``only_if``: a CTE that
    must have returned a row)."""
    rows = select(
        *(func.unnest(bindparam(f"a_{name}", type_=kind)) for name, kind in _AUDIT_COLUMNS.items()),
    )
    if only_if is not None:
        rows = rows.where(exists(select(only_if.c.id)))
    return insert(_magento_calls).from_select(list(_AUDIT_COLUMNS), rows)


def _audit_arrays(refund_id: str, attempt: int, calls: list[CallRecord]) -> dict[str, Any]:
    recorded_at = utcnow()
    return {
        "a_refund_id": [refund_id] * len(calls),
        "a_attempt": [attempt] * len(calls),
        "a_operation": [call.operation for call in calls],
        "a_method": [call.method for call in calls],
        "a_path": [call.path[:255] for call in calls],
        "a_http_status": [call.http_status for call in calls],
        "a_duration_ms": [call.duration_ms for call in calls],
        "a_error": [call.error for call in calls],
        "a_created_at": [call.started_at or recorded_at for call in calls],
    }


def _pg_claim() -> Any:
    """The claim and the order's lock in one statement; ``locked`` says whether the lock is
    ours (when not, the caller rolls the claim back)."""
    claimed = _CLAIM.cte("claimed")
    statement = postgresql.insert(_order_locks).from_select(
        ["shop", "order_id", "refund_id", "expires_at"],
        select(claimed.c.shop, claimed.c.order_id, _P_REFUND_ID, _P_UNTIL).where(
            claimed.c.order_id.is_not(None)  # an unresolved increment id: no order to lock yet
        ),
    )
    locked = (
        statement.on_conflict_do_update(
            index_elements=[_order_locks.c.shop, _order_locks.c.order_id],
            set_={
                "refund_id": statement.excluded.refund_id,
                "expires_at": statement.excluded.expires_at,
            },
            where=(_order_locks.c.refund_id == _P_REFUND_ID)
            | (_order_locks.c.expires_at < _P_NOW),
        )
        .returning(_order_locks.c.order_id)
        .cte("locked")
    )
    return select(
        claimed, exists(select(locked.c.order_id)).label("locked")
    ).add_cte(locked)


def _pg_success() -> Any:
    """A success while this attempt holds the lease, the order lock released and the audit
    rows written, in one statement; it counts the rows it recorded (0: the portable path
    decides)."""
    recorded = _RECORD_SUCCESS.returning(_refunds.c.id, _refunds.c.tenant).cte("recorded")
    released = (
        _RELEASE_ORDER_LOCK.where(exists(select(recorded.c.id)))
        .returning(_order_locks.c.order_id)
        .cte("released")
    )
    audited = _audit_insert(only_if=recorded).returning(_magento_calls.c.id).cte("audited")
    return _counted(recorded, EventType.SUCCEEDED, released, audited)


def _counted(recorded: Any, event_type: EventType | None, *ctes: Any) -> Any:
    """``SELECT`` the rows ``recorded`` changed (``recorded``) and the ids of the webhook
    deliveries its ``event_type`` wrote to the outbox (``webhooks``: an array, NULL if none)."""
    count = select(func.count()).select_from(recorded).scalar_subquery().label("recorded")
    if event_type is None:
        return select(count).add_cte(*ctes)
    outboxed = outbox_insert(event_type, recorded).cte("outboxed")
    webhooks = select(func.array_agg(outboxed.c.id)).scalar_subquery().label("webhooks")
    return select(count, webhooks).add_cte(*ctes, outboxed)


def _pg_outcome(statement: Any, event_type: EventType) -> Any:
    """A failure or needs-attention outcome and its outbox rows in one statement: the first
    statement of the portable path, which runs the rest (``_record``)."""
    recorded = statement.returning(_refunds.c.id, _refunds.c.tenant).cte("recorded")
    return _counted(recorded, event_type)


def _pg_email_record(statement: Any, event_type: EventType | None = None) -> Any:
    """The email's outcome and its audit rows in one statement (the rows whether or not the
    outcome was written, as on the portable path); it counts the outcomes written, and writes
    ``event_type``'s outbox rows when one was."""
    recorded = statement.returning(_refunds.c.id, _refunds.c.tenant).cte("recorded")
    audited = _audit_insert().returning(_magento_calls.c.id).cte("audited")
    return _counted(recorded, event_type, audited)


_PG_CLAIM = _pg_claim()
_PG_SUCCESS = _pg_success()
_PG_RECORD_FAILURE = _pg_outcome(_RECORD_FAILURE, EventType.FAILED)
_PG_RECORD_ATTENTION = _pg_outcome(_RECORD_ATTENTION, EventType.NEEDS_ATTENTION)
#: An outcome's first statement and its outbox rows, in one statement on PostgreSQL.
_PG_OUTCOMES = {
    EventType.FAILED: _PG_RECORD_FAILURE,
    EventType.NEEDS_ATTENTION: _PG_RECORD_ATTENTION,
}


class RefundStore:
    """The refund's state changes, each one short transaction on ``database``."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._postgres = database.engine.dialect.name == "postgresql"

    def claim(
        self, refund_id: str, *, token: str, now: datetime, due_by: datetime, lease_until: datetime
    ) -> ClaimedRefund | NotClaimed | OrderBusy:
        """Claim ``refund_id`` for one attempt, with its order's lock, or say why not.

        The refund row first, then the order lock: every transaction that touches both locks
        them in this order, so two of them can never deadlock on PostgreSQL.
        """
        params = {
            "p_refund_id": refund_id,
            "p_token": token,
            "p_now": now,
            "p_due": due_by,
            "p_until": lease_until,
        }
        with self.database.connection_scope() as connection:
            if self._postgres:
                claimed = connection.execute(_PG_CLAIM, params).first()
                locked = claimed is not None and (claimed.locked or claimed.order_id is None)
            else:
                claimed = connection.execute(_CLAIM, params).first()
                locked = claimed is not None and (
                    claimed.order_id is None
                    or take_order_lock(
                        connection, claimed.order_id, refund_id, now, lease_until,
                        shop=claimed.shop,
                    )
                )
            if claimed is None:
                return self._why_not(connection, refund_id, now, due_by)
            if not locked:
                connection.rollback()  # no attempt spent
                return OrderBusy(claimed.order_id, claimed.shop)
        return ClaimedRefund(
            refund_id=refund_id,
            shop=claimed.shop,
            order_id=claimed.order_id,
            request_json=claimed.request_json,
            marker_token=claimed.marker_token,
            token=token,
            attempt=claimed.attempts,
            was_in_doubt=bool(claimed.in_doubt),
            first_attempt_at=claimed.first_attempt_at,
            claimed_at=now,
            last_error=claimed.last_error,
        )

    @staticmethod
    def _why_not(
        connection: Connection, refund_id: str, now: datetime, due_by: datetime
    ) -> NotClaimed:
        row = connection.execute(_CLAIM_EXPLAIN, {"p_refund_id": refund_id}).first()
        if row is None:
            return NotClaimed("unknown", "no such refund; message dropped")
        if row.status in SETTLED_STATUSES:
            return NotClaimed(row.status, "already settled; duplicate delivery")
        if row.status == _PROCESSING and row.lease_expires_at and row.lease_expires_at > now:
            return NotClaimed(row.status, "in flight in another worker")
        if row.next_attempt_at is not None and row.next_attempt_at > due_by:
            return NotClaimed(row.status, "not due yet; an earlier copy")
        return NotClaimed(row.status, "claimed by another worker first")

    def resolve_order(
        self, claim: ClaimedRefund, order_id: int, *, now: datetime, until: datetime
    ) -> Resolution:
        """Store the order ``claim``'s increment id resolved to and take the order's lock, in
        one transaction (the row first, then the lock, as every transaction does). The order is
        stored even when its lock is busy: it is resolved once, whatever comes next."""
        params = {
            "p_refund_id": claim.refund_id,
            "p_token": claim.token,
            "p_shop": claim.shop,
            "p_order_id": order_id,
            "p_until": until,
            "p_now": now,
        }
        with self.database.connection_scope() as connection:
            if rowcount(connection.execute(_RESOLVE_ORDER, params)) != 1:
                connection.rollback()
                return Resolution.LEASE_LOST
            claim.order_id = order_id
            locked = take_order_lock(
                connection, order_id, claim.refund_id, now, until, shop=claim.shop
            )
        return Resolution.LOCKED if locked else Resolution.ORDER_BUSY

    def renew_lease(self, claim: ClaimedRefund, *, now: datetime, until: datetime) -> Renewal:
        """Extend the lease and the order lock, fenced by the lease token."""
        params = {
            "p_refund_id": claim.refund_id,
            "p_token": claim.token,
            "p_shop": claim.shop,
            "p_order_id": claim.order_id,
            "p_until": until,
            "p_now": now,
        }
        with self.database.connection_scope() as connection:
            if rowcount(connection.execute(_RENEW_LEASE, params)) != 1:
                connection.rollback()
                return Renewal.LEASE_LOST
            if rowcount(connection.execute(_RENEW_ORDER_LOCK, params)) != 1:
                connection.rollback()
                return Renewal.ORDER_LOCK_LOST
        return Renewal.RENEWED

    def record_success(
        self,
        claim: ClaimedRefund,
        *,
        creditmemo_id: int,
        reconciled: bool,
        outcome: str,
        now: datetime,
    ) -> bool:
        """Record the success (``reconciled``: found in Magento, with its event); False when one
        was recorded already. ``CreditmemoTaken`` when the memo backs another refund."""
        params = {
            "p_refund_id": claim.refund_id,
            "p_token": claim.token,
            "p_shop": claim.shop,
            "p_order_id": claim.order_id,
            "p_creditmemo_id": creditmemo_id,
            "p_outcome": outcome,
            "p_service": None if reconciled else claim.service,
            "p_now": now,
        }
        params.update(
            event_params(
                {
                    "status": RefundStatus.SUCCEEDED.value,
                    "creditmemo_id": creditmemo_id,
                    "outcome": outcome,
                    "service": claim.service,
                    "reconciled": reconciled,
                }
            )
        )
        try:
            if self._postgres and not reconciled:
                with self.database.statement_scope() as connection:
                    audit = _audit_arrays(claim.refund_id, claim.attempt, claim.calls)
                    row = connection.execute(_PG_SUCCESS, {**params, **audit}).one()
                    if row.recorded == 1:
                        claim.webhooks = list(row.webhooks or ())
                        return True
            with self.database.connection_scope() as connection:
                recorded = held = rowcount(connection.execute(_RECORD_SUCCESS, params)) == 1
                if not held:  # already succeeded (then let go), or taken over meanwhile
                    held = rowcount(connection.execute(_RELEASE_LEASE, params)) == 1
                if not held:
                    recorded = rowcount(connection.execute(_RECORD_SUCCESS_UNHELD, params)) == 1
                self._finish(connection, claim, release_lock=held)
                if recorded and reconciled:
                    self._event(connection, claim.refund_id, "reconciled", outcome)
                webhooks = (
                    _outbox(connection, EventType.SUCCEEDED, params) if recorded else []
                )
        except IntegrityError:
            owner = self.creditmemo_owner(creditmemo_id, shop=claim.shop)
            raise CreditmemoTaken(creditmemo_id, owner) from None
        claim.webhooks = webhooks
        return recorded

    def record_retry(
        self,
        claim: ClaimedRefund,
        *,
        error: str,
        http_status: int | None,
        in_doubt: bool,
        next_attempt_at: datetime,
        last_call_at: datetime,
        now: datetime,
    ) -> bool:
        """The attempt will be retried at ``next_attempt_at``; False if the lease was lost."""
        return self._record(
            _RECORD_RETRY,
            claim,
            {
                "p_error": error,
                "p_error_kind": ErrorKind.RETRYABLE.value,
                "p_http_status": http_status,
                "p_in_doubt": in_doubt,
                "p_next_attempt_at": next_attempt_at,
                "p_last_call_at": last_call_at,
                "p_now": now,
            },
        )

    def record_failure(
        self,
        claim: ClaimedRefund,
        *,
        error: str,
        kind: ErrorKind,
        http_status: int | None,
        in_doubt: bool,
        now: datetime,
    ) -> bool:
        """The refund failed for good; False if the lease was lost."""
        return self._record(
            _RECORD_FAILURE,
            claim,
            {
                "p_error": error,
                "p_error_kind": kind.value,
                "p_http_status": http_status,
                "p_in_doubt": in_doubt,
                "p_now": now,
                **event_params(
                    {
                        "status": RefundStatus.FAILED.value,
                        "error": error,
                        "error_kind": kind.value,
                        "http_status": http_status,
                        "service": claim.service,
                    }
                ),
            },
            event_type=EventType.FAILED,
        )

    def record_attention(self, claim: ClaimedRefund, *, reason: str, now: datetime) -> bool:
        """A person must look (``needs_attention``, with its event); it stays in doubt, since
        money may have moved. False if the lease was lost."""
        return self._record(
            _RECORD_ATTENTION,
            claim,
            {
                "p_error": reason,
                "p_error_kind": ErrorKind.ATTENTION.value,
                "p_http_status": None,
                "p_in_doubt": True,
                "p_attention": reason,
                "p_now": now,
                **event_params(
                    {
                        "status": RefundStatus.NEEDS_ATTENTION.value,
                        "reason": reason,
                        "service": claim.service,
                    }
                ),
            },
            event=("needs_attention", reason),
            event_type=EventType.NEEDS_ATTENTION,
        )

    def defer_if_of_shop(
        self, refund_id: str, *, shop: str, next_attempt_at: datetime, now: datetime,
        due_by: datetime, park: bool = False,
    ) -> bool:
        """Put ``refund_id`` off until ``next_attempt_at`` if it is ``shop``'s and could be
        claimed now; True when it was (nothing else changed). ``park``: its message is to be
        acknowledged without a retry, and the sweep publishes it when it is due."""
        params = {
            "p_refund_id": refund_id,
            "p_shop": shop,
            "p_next_attempt_at": next_attempt_at,
            "p_now": now,
            "p_due": due_by,
        }
        with self.database.statement_scope() as connection:
            statement = _PARK_UNCLAIMED if park else _DEFER_UNCLAIMED
            return rowcount(connection.execute(statement, params)) == 1

    def record_deferral(
        self, claim: ClaimedRefund, *, next_attempt_at: datetime, reason: str | None, now: datetime
    ) -> bool:
        """Give the claim back without having called Magento (its shop is paused, full or not
        configured here): not counted as an attempt, due again at ``next_attempt_at``, its doubt
        kept. False if the lease was lost meanwhile (the next owner decides)."""
        params = {
            "p_refund_id": claim.refund_id,
            "p_token": claim.token,
            "p_shop": claim.shop,
            "p_order_id": claim.order_id,
            "p_in_doubt": claim.was_in_doubt,
            "p_next_attempt_at": next_attempt_at,
            "p_error": reason,
            "p_now": now,
        }
        with self.database.connection_scope() as connection:
            held = rowcount(connection.execute(_RECORD_DEFERRAL, params)) == 1
            if held:
                connection.execute(_RELEASE_ORDER_LOCK, params)
            insert_calls(connection, claim.refund_id, claim.attempt, claim.calls)
        return held

    def creditmemo_owner(self, creditmemo_id: int, *, shop: str = "default") -> str | None:
        """The refund of ``shop`` that records ``creditmemo_id``, if any."""
        with self.database.connection_scope() as connection:
            owner = connection.execute(
                _CREDITMEMO_OWNER, {"p_creditmemo_id": creditmemo_id, "p_shop": shop}
            ).scalar()
        return str(owner) if owner is not None else None

    def _record(
        self,
        statement: Any,
        claim: ClaimedRefund,
        values: dict[str, Any],
        *,
        event: tuple[str, str] | None = None,
        event_type: EventType | None = None,
    ) -> bool:
        """Write an outcome while this attempt holds the lease. When it no longer does, the
        refund either succeeded meanwhile (the lease is let go: True) or was taken over (the
        next owner decides: False). Audit rows are written either way; ``event_type``'s
        webhook deliveries only with the outcome."""
        params = {
            **values,
            "p_refund_id": claim.refund_id,
            "p_token": claim.token,
            "p_shop": claim.shop,
            "p_order_id": claim.order_id,
            "p_service": claim.service,
        }
        webhooks: list[int] = []
        with self.database.connection_scope() as connection:
            if self._postgres and event_type is not None:  # the outcome and its outbox rows
                row = connection.execute(_PG_OUTCOMES[event_type], params).one()
                written = row.recorded == 1
                webhooks = list(row.webhooks or ())
            else:
                written = rowcount(connection.execute(statement, params)) == 1
                if written and event_type is not None:
                    webhooks = _outbox(connection, event_type, params)
            held = written or rowcount(connection.execute(_RELEASE_LEASE, params)) == 1
            self._finish(connection, claim, release_lock=held)
            if written and event is not None:
                self._event(connection, claim.refund_id, *event)
        claim.webhooks = webhooks
        return held

    @staticmethod
    def _finish(connection: Connection, claim: ClaimedRefund, *, release_lock: bool) -> None:
        """The attempt's audit rows; the order lock released if this attempt still holds it."""
        insert_calls(connection, claim.refund_id, claim.attempt, claim.calls)
        if release_lock:
            connection.execute(
                _RELEASE_ORDER_LOCK,
                {
                    "p_shop": claim.shop,
                    "p_order_id": claim.order_id,
                    "p_refund_id": claim.refund_id,
                },
            )

    @staticmethod
    def _event(connection: Connection, refund_id: str, kind: str, detail: str) -> None:
        connection.execute(
            _INSERT_EVENT, {"p_refund_id": refund_id, "p_kind": kind, "p_detail": detail}
        )


def _outbox(connection: Connection, event_type: EventType, params: dict[str, Any]) -> list[int]:
    """Write ``event_type``'s deliveries to the outbox in ``connection``'s transaction (the
    portable path; PostgreSQL's one-statement paths carry it in a CTE); their ids."""
    return list(connection.execute(OUTBOX_INSERT[event_type], params).scalars())


def take_order_lock(
    connection: Connection,
    order_id: int,
    refund_id: str,
    now: datetime,
    until: datetime,
    *,
    shop: str = "default",
) -> bool:
    """Take (or take over, once expired) the lock of ``shop``'s order for this refund, in
    ``connection``'s transaction: one upsert, whose RETURNING gives a row exactly when the lock
    is now ours."""
    params = {
        "p_shop": shop,
        "p_order_id": order_id,
        "p_refund_id": refund_id,
        "p_until": until,
        "p_now": now,
    }
    upsert = _TAKE_ORDER_LOCK[connection.dialect.name]
    return connection.execute(upsert, params).first() is not None


def insert_calls(
    connection: Connection, refund_id: str, attempt: int, calls: list[CallRecord]
) -> None:
    """The audit rows (``magento_calls``) of one attempt's calls, in one INSERT."""
    if not calls:
        return  # an empty parameter list would insert one row of defaults
    recorded_at = utcnow()
    connection.execute(
        _INSERT_CALLS,
        [
            {
                "refund_id": refund_id,
                "attempt": attempt,
                "operation": call.operation,
                "method": call.method,
                "path": call.path[:255],
                "http_status": call.http_status,
                "duration_ms": call.duration_ms,
                "error": call.error,
                "created_at": call.started_at or recorded_at,
            }
            for call in calls
        ],
    )


# -- the email's statements ------------------------------------------------------------------

_email_version = _refunds.c.notification_version
_P_EMAIL_VERSION = _param("p_version", _email_version)
_email_status = _refunds.c.notification_status
_email_lease = _refunds.c.notification_lease_expires_at
_email_next_at = _refunds.c.notification_next_at
_email_attempts = _refunds.c.notification_attempts
_THIS_EMAIL_VERSION = and_(_THIS_REFUND, _email_version == _P_EMAIL_VERSION)
_SENDING = NotificationStatus.SENDING.value
#: Sendable now: pending, or retrying and due, or abandoned (sending with an expired lease).
_SENDABLE = (NotificationStatus.PENDING.value, NotificationStatus.RETRYING.value)
_ABANDONED = and_(_email_status == _SENDING, or_(_email_lease.is_(None), _email_lease <= _P_NOW))

#: The email's claim, in one statement (so it runs without ``BEGIN``/``COMMIT``). An abandoned
#: email counts as a later attempt (at least the second), which checks Magento's
#: ``email_sent`` flag before sending again.
_EMAIL_CLAIM = (
    update(_refunds)
    .where(
        _THIS_REFUND,
        _refunds.c.status == RefundStatus.SUCCEEDED.value,
        _refunds.c.creditmemo_id.is_not(None),
        or_(*(_email_status == status for status in _SENDABLE), _ABANDONED),
        not_(
            and_(
                _email_status == NotificationStatus.RETRYING.value,
                _email_next_at.is_not(None),
                _email_next_at > _param("p_due", _email_next_at),
            )
        ),
    )
    .values(
        notification_status=_SENDING,
        notification_attempts=case(
            (and_(_email_status == _SENDING, _email_attempts < 1), 2), else_=_email_attempts + 1
        ),
        notification_lease_expires_at=_P_UNTIL,
        notification_version=_email_version + 1,
    )
    .returning(
        _refunds.c.shop,
        _refunds.c.creditmemo_id,
        _refunds.c.request_json,
        _email_version,
        _email_attempts,
        _refunds.c.notification_error,
    )
)
_EMAIL_EXPLAIN = select(
    _refunds.c.status, _refunds.c.creditmemo_id, _email_status, _email_lease, _email_next_at
).where(_THIS_REFUND)
_EMAIL_RENEW = (
    update(_refunds)
    .where(_THIS_EMAIL_VERSION, _email_status == _SENDING)
    .values(notification_lease_expires_at=_P_UNTIL)
)
_EMAIL_RECORD = (
    update(_refunds)
    .where(_THIS_EMAIL_VERSION)
    .values(
        notification_status=_param("p_status", _email_status),
        notification_error=_param("p_error", _refunds.c.notification_error),
        notification_lease_expires_at=None,
        notification_version=_email_version + 1,
        updated_at=_P_NOW,
    )
)
_EMAIL_RECORD_RETRY = _EMAIL_RECORD.values(
    notification_next_at=_param("p_next_at", _email_next_at),
    notification_published_at=_P_NOW,
)
#: A retry that was never an attempt (the shop was paused: nothing sent): not counted.
_EMAIL_RECORD_DEFERRAL = _EMAIL_RECORD_RETRY.values(
    notification_attempts=_refunds.c.notification_attempts - 1
)
_PG_EMAIL_RECORD = _pg_email_record(_EMAIL_RECORD)
_PG_EMAIL_RECORD_SENT = _pg_email_record(_EMAIL_RECORD, EventType.NOTIFICATION_SENT)
_PG_EMAIL_RECORD_RETRY = _pg_email_record(_EMAIL_RECORD_RETRY)
_PG_EMAIL_RECORD_DEFERRAL = _pg_email_record(_EMAIL_RECORD_DEFERRAL)


class EmailStore:
    """The customer email's state changes, fenced by ``notification_version``."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._postgres = database.engine.dialect.name == "postgresql"

    def claim(
        self, refund_id: str, *, now: datetime, due_by: datetime, lease_until: datetime
    ) -> ClaimedEmail | NotClaimed:
        """Claim the email of ``refund_id`` for one attempt, or say why not."""
        with self.database.statement_scope() as connection:
            row = connection.execute(
                _EMAIL_CLAIM,
                {"p_refund_id": refund_id, "p_now": now, "p_due": due_by, "p_until": lease_until},
            ).first()
            if row is None:
                return self._why_not(connection, refund_id, now, due_by)
        return ClaimedEmail(
            refund_id=refund_id,
            shop=row.shop,
            creditmemo_id=row.creditmemo_id,
            request_json=row.request_json,
            attempt=row.notification_attempts,
            version=row.notification_version,
            last_error=row.notification_error,
            claimed_at=now,
        )

    @staticmethod
    def _why_not(
        connection: Connection, refund_id: str, now: datetime, due_by: datetime
    ) -> NotClaimed:
        """Why the claim took nothing (read after it, so it may say what a rival did)."""
        row = connection.execute(_EMAIL_EXPLAIN, {"p_refund_id": refund_id}).first()
        if row is None or row.status != RefundStatus.SUCCEEDED or row.creditmemo_id is None:
            return NotClaimed("skipped", "no succeeded refund to notify about")
        status = NotificationStatus(row.notification_status)
        expired = status is NotificationStatus.SENDING and not (
            row.notification_lease_expires_at and row.notification_lease_expires_at > now
        )
        if status.value not in _SENDABLE and not expired:
            return NotClaimed(status.value, f"notification is {status.value}")
        if (
            status is NotificationStatus.RETRYING
            and row.notification_next_at
            and row.notification_next_at > due_by
        ):
            return NotClaimed(status.value, "not due yet; an earlier copy")
        return NotClaimed("skipped", "claimed by another worker first")

    def renew_lease(self, claim: ClaimedEmail, *, until: datetime) -> bool:
        """Extend the lease right before the send; False if another worker took it over."""
        with self.database.statement_scope() as connection:
            renewed = connection.execute(
                _EMAIL_RENEW,
                {"p_refund_id": claim.refund_id, "p_version": claim.version, "p_until": until},
            )
            return rowcount(renewed) == 1

    def record(
        self,
        claim: ClaimedEmail,
        *,
        status: NotificationStatus,
        error: str | None,
        next_at: datetime | None = None,
        now: datetime | None = None,
        counted: bool = True,
    ) -> bool:
        """The send's outcome and its audit rows (``next_at``: retried then; not ``counted``: the
        attempt is given back, as for a shop that was paused); False if the email changed
        meanwhile (the next owner decides)."""
        params: dict[str, Any] = {
            "p_refund_id": claim.refund_id,
            "p_version": claim.version,
            "p_status": status.value,
            "p_error": error,
            "p_now": now or utcnow(),
        }
        statement, one_statement = _EMAIL_RECORD, _PG_EMAIL_RECORD
        sent = status is NotificationStatus.SENT
        if sent:
            one_statement = _PG_EMAIL_RECORD_SENT
            params.update(
                event_params(
                    {
                        "status": RefundStatus.SUCCEEDED.value,
                        "notification_status": status.value,
                        "creditmemo_id": claim.creditmemo_id,
                    }
                )
            )
        if next_at is not None:
            statement, one_statement = _EMAIL_RECORD_RETRY, _PG_EMAIL_RECORD_RETRY
            if not counted:
                statement, one_statement = _EMAIL_RECORD_DEFERRAL, _PG_EMAIL_RECORD_DEFERRAL
            params["p_next_at"] = next_at
        if self._postgres:
            audit = _audit_arrays(claim.refund_id, claim.attempt, claim.calls)
            with self.database.statement_scope() as connection:
                row = connection.execute(one_statement, {**params, **audit}).one()
            claim.webhooks = list(getattr(row, "webhooks", None) or ())
            return bool(row.recorded == 1)
        with self.database.connection_scope() as connection:
            recorded = rowcount(connection.execute(statement, params)) == 1
            insert_calls(connection, claim.refund_id, claim.attempt, claim.calls)
            if recorded and sent:
                claim.webhooks = _outbox(connection, EventType.NOTIFICATION_SENT, params)
        return recorded
