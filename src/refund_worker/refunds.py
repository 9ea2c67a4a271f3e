"""The refund domain service: claim the row, reconcile, call Magento, record the outcome.

One attempt is three short steps, never one long transaction:

1. **Claim** (one transaction): compare-and-set the refund row to ``processing`` with a lease,
   take the order's lock (at most one refund per order in flight), mark the attempt in doubt.
2. **Act** (no transaction open): if an earlier attempt may have reached Magento, look for our
   marker in the order's credit memos first; otherwise route, renew the lease (fenced by the
   lease token: a lost lease means no call), and make the one money-moving call.
3. **Record** (one transaction): the outcome, the audit rows, and the order lock released.

A worker killed anywhere leaves the row ``processing`` and in doubt; once its lease expires the
next delivery reconciles before it could ever call Magento again. A refund whose outcome is
unknown is never failed: past ``max_attempts`` its attempts only look for the marker, and it fails
only once Magento has answered that search without it. Never imports Celery.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol, cast

from pydantic import ValidationError
from sqlalchemy import Connection, Table, Update, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import ReturningInsert

from refund_worker import reconcile
from refund_worker.db import Database, param, rowcount
from refund_worker.errors import (
    AttentionRequired,
    MagentoRateLimited,
    MagentoRejected,
    PermanentError,
    RefundWorkerError,
    RetryableError,
)
from refund_worker.magento import CallRecord
from refund_worker.markers import marker_for
from refund_worker.models import MagentoCall, OrderLock, Refund, RefundEvent, utcnow
from refund_worker.ratelimit import CallLimiter, NoLimit
from refund_worker.routing import RefundCall, needs_invoices, order_items_by_id, plan_refund
from refund_worker.schemas import (
    SETTLED_STATUSES,
    NotificationStatus,
    RefundRequest,
    RefundStatus,
    Service,
)
from refund_worker.settings import Settings

log = logging.getLogger(__name__)

#: How long a refund waits for another refund of the same order to finish.
ORDER_BUSY_DELAY = 2.0
#: A retry's message may arrive this much before its due time (countdowns and clocks drift) and
#: still run; one that comes earlier is an older copy, and is dropped.
DUE_SLACK = timedelta(seconds=1)

# Tables for Core statements (no ORM instances, identity map or session synchronization).
_refunds = cast(Table, Refund.__table__)
_order_locks = cast(Table, OrderLock.__table__)
_magento_calls = cast(Table, MagentoCall.__table__)
_refund_events = cast(Table, RefundEvent.__table__)

# The statements of an attempt are built once and run with a parameter dict: on this path,
# building a statement and its cache key costs more CPU than the database round trip, and a
# statement object computes its cache key only once. Per-call values are ``p_*`` parameters.
_P_REFUND_ID = param("p_refund_id", _refunds.c.id)
_P_VERSION = param("p_version", _refunds.c.version)
_P_TOKEN = param("p_token", _refunds.c.lease_token)
_P_ORDER_ID = param("p_order_id", _order_locks.c.order_id)
_P_NOW = param("p_now", _refunds.c.updated_at)
_P_UNTIL = param("p_until", _refunds.c.lease_expires_at)
_P_SERVICE = param("p_service", _refunds.c.service)

_THIS_REFUND = _refunds.c.id == _P_REFUND_ID
_NOT_SUCCEEDED = _refunds.c.status != RefundStatus.SUCCEEDED.value
_NEXT_VERSION = _refunds.c.version + 1
_THIS_ORDER_LOCK = (
    _order_locks.c.order_id == _P_ORDER_ID,
    _order_locks.c.refund_id == _P_REFUND_ID,
)

#: The columns a claim reads.
_CLAIM_READ = select(
    _refunds.c.status,
    _refunds.c.order_id,
    _refunds.c.request_json,
    _refunds.c.attempts,
    _refunds.c.version,
    _refunds.c.in_doubt,
    _refunds.c.lease_expires_at,
    _refunds.c.next_attempt_at,
    _refunds.c.first_attempt_at,
    _refunds.c.last_error,
    _refunds.c.marker_token,
).where(_THIS_REFUND)

#: The claim: compare-and-set on the version read.
_CLAIM = (
    update(_refunds)
    .where(_THIS_REFUND, _refunds.c.version == _P_VERSION)
    .values(
        status=RefundStatus.PROCESSING.value,
        attempts=_refunds.c.attempts + 1,
        lease_token=_P_TOKEN,
        lease_expires_at=_P_UNTIL,
        in_doubt=True,
        first_attempt_at=param("p_first_attempt_at", _refunds.c.first_attempt_at),
        last_call_at=_P_NOW,
        version=_NEXT_VERSION,
        updated_at=_P_NOW,
    )
)

#: Settles a refund whose stored request cannot be parsed (compare-and-set on the version read).
_FAIL_UNREADABLE = (
    update(_refunds)
    .where(_THIS_REFUND, _refunds.c.version == _P_VERSION)
    .values(
        status=RefundStatus.FAILED.value,
        last_error=param("p_error", _refunds.c.last_error),
        last_error_kind="permanent",
        settled_at=_P_NOW,
        version=_NEXT_VERSION,
    )
)

#: Extends the lease right before the refund call, fenced by the lease token.
_RENEW_LEASE = (
    update(_refunds)
    .where(
        _THIS_REFUND,
        _refunds.c.lease_token == _P_TOKEN,
        _refunds.c.status == RefundStatus.PROCESSING.value,
    )
    .values(lease_expires_at=_P_UNTIL, last_call_at=_P_NOW)
)

#: Extends the order lock along with the lease, if this refund still holds it.
_RENEW_ORDER_LOCK = update(_order_locks).where(*_THIS_ORDER_LOCK).values(expires_at=_P_UNTIL)

#: Gives the lease back without touching the outcome.
_RELEASE_LEASE = (
    update(_refunds)
    .where(_THIS_REFUND, _refunds.c.lease_token == _P_TOKEN)
    .values(lease_token=None, lease_expires_at=None, version=_NEXT_VERSION)
)

#: Releases the order lock if this refund still holds it.
_RELEASE_ORDER_LOCK = delete(_order_locks).where(*_THIS_ORDER_LOCK)

#: The audit row of a refund settled by reconciliation.
_RECONCILED_EVENT = insert(_refund_events).values(
    refund_id=_P_REFUND_ID, kind="reconciled", detail=param("p_detail", _refund_events.c.detail)
)

#: The audit rows of an attempt's calls (executemany with one dict of columns per call).
_INSERT_CALLS = insert(_magento_calls)


@cache
def _success_update(*, owned: bool, with_service: bool, notify: bool) -> Update:
    """Records a success unless one is recorded already. ``owned``: only while this attempt holds
    the lease, and gives it back; ``with_service``: sets ``p_service``; ``notify``: the email is
    due now."""
    values: dict[str, Any] = {
        "status": RefundStatus.SUCCEEDED.value,
        "creditmemo_id": param("p_creditmemo_id", _refunds.c.creditmemo_id),
        "outcome": param("p_outcome", _refunds.c.outcome),
        "in_doubt": False,
        "last_error": None,
        "last_error_kind": None,
        "last_http_status": None,
        "settled_at": _P_NOW,
        "updated_at": _P_NOW,
        "version": _NEXT_VERSION,
    }
    if with_service:
        values["service"] = _P_SERVICE
    if notify:
        values["notification_status"] = NotificationStatus.PENDING.value
        values["notification_next_at"] = _P_NOW
        values["notification_published_at"] = _P_NOW
    if not owned:
        return update(_refunds).where(_THIS_REFUND).where(_NOT_SUCCEEDED).values(**values)
    return (
        update(_refunds)
        .where(_THIS_REFUND, _refunds.c.lease_token == _P_TOKEN)
        .where(_NOT_SUCCEEDED)
        .values(lease_token=None, lease_expires_at=None, **values)
    )


@cache
def _owned_outcome_update(columns: frozenset[str]) -> Update:
    """Writes ``columns`` (each from ``p_<column>``) while this attempt holds the lease, gives the
    lease back, and keeps the service chosen (``p_service``, if not None); never undoes a
    success."""
    return (
        update(_refunds)
        .where(_THIS_REFUND, _refunds.c.lease_token == _P_TOKEN, _NOT_SUCCEEDED)
        .values(
            lease_token=None,
            lease_expires_at=None,
            version=_NEXT_VERSION,
            service=func.coalesce(_P_SERVICE, _refunds.c.service),
            **{name: param(f"p_{name}", _refunds.c[name]) for name in columns},
        )
    )


def _order_lock_upsert(
    insert_fn: Callable[[Table], postgresql.Insert | sqlite.Insert],
) -> ReturningInsert[tuple[int]]:
    """Insert the order's lock, or take it if it is already this refund's or has expired;
    RETURNING gives a row exactly when the lock is now ours."""
    stmt = insert_fn(_order_locks).values(
        order_id=_P_ORDER_ID, refund_id=_P_REFUND_ID, expires_at=_P_UNTIL
    )
    return stmt.on_conflict_do_update(
        index_elements=[_order_locks.c.order_id],
        set_={"refund_id": stmt.excluded.refund_id, "expires_at": stmt.excluded.expires_at},
        where=(_order_locks.c.refund_id == _P_REFUND_ID) | (_order_locks.c.expires_at < _P_NOW),
    ).returning(_order_locks.c.order_id)


_POSTGRESQL_ORDER_LOCK_UPSERT = _order_lock_upsert(postgresql.insert)
_SQLITE_ORDER_LOCK_UPSERT = _order_lock_upsert(sqlite.insert)


class MagentoAPI(Protocol):
    """The part of ``refund_worker.magento.MagentoClient`` the refund service uses."""

    def get_order(self, order_id: int, *, store_code: str | None = None) -> dict[str, Any]: ...
    def get_invoice(self, invoice_id: int, *, store_code: str | None = None) -> dict[str, Any]: ...
    def search_invoices(
        self, *, order_id: int, store_code: str | None = None
    ) -> list[dict[str, Any]]: ...
    def refund_invoice(
        self, invoice_id: int, body: dict[str, Any], *, store_code: str | None = None
    ) -> int: ...
    def refund_order(
        self, order_id: int, body: dict[str, Any], *, store_code: str | None = None
    ) -> int: ...
    def refund_creditmemo(
        self, body: dict[str, Any], *, store_code: str | None = None
    ) -> dict[str, Any]: ...
    def save_creditmemo(
        self, body: dict[str, Any], *, store_code: str | None = None
    ) -> dict[str, Any]: ...
    def get_creditmemo(
        self, creditmemo_id: int, *, store_code: str | None = None
    ) -> dict[str, Any]: ...
    def search_creditmemos(
        self,
        *,
        order_id: int,
        created_from: datetime | None = None,
        page_size: int = 100,
        store_code: str | None = None,
    ) -> list[dict[str, Any]]: ...
    def send_creditmemo_email(
        self, creditmemo_id: int, *, store_code: str | None = None
    ) -> bool: ...


#: Builds a client that reports each call to the given callback (one per attempt).
ClientFactory = Callable[[Callable[[CallRecord], None]], MagentoAPI]


@dataclass(frozen=True)
class AttemptResult:
    """What one delivery of a task achieved, for the thin task to act on."""

    refund_id: str
    status: str
    detail: str = ""
    retry_in: float | None = None  # seconds until the task should run again
    publish_notification: bool = False
    error: RefundWorkerError | None = None  # a permanent failure, re-raised so Flower shows it


@dataclass
class _Claim:
    refund_id: str
    request: RefundRequest
    marker: str
    token: str
    attempt: int
    was_in_doubt: bool
    first_attempt_at: datetime
    #: The clock reading the lease was granted from: it expires at claimed_at + lease_seconds.
    claimed_at: datetime
    #: Past ``max_attempts`` with the outcome still unknown: only look for the marker.
    reconcile_only: bool = False
    last_error: str | None = None
    service: str | None = None  # the Magento service chosen, once routing has run
    calls: list[CallRecord] = field(default_factory=list)


class _LeaseLost(Exception):
    """Raised when another worker took this refund over before the money-moving call."""


def backoff_seconds(settings: Settings, attempt: int, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with jitter: base * 2**(attempt-1), capped, times 0.5..1."""
    rng = rng or random.Random()
    raw = min(settings.retry_backoff_max, settings.retry_backoff_base * 2 ** max(0, attempt - 1))
    return float(round(raw * (0.5 + rng.random() / 2), 3))


class RefundService:
    """Processes one refund delivery at a time; safe to run in many threads and processes."""

    def __init__(
        self,
        database: Database,
        client_factory: ClientFactory,
        settings: Settings,
        *,
        limiter: CallLimiter | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.database = database
        self.client_factory = client_factory
        self.settings = settings
        self.limiter = limiter or NoLimit()
        self.clock = clock
        self.rng = rng or random.Random()
        self.extra_offline = frozenset(settings.offline_payment_methods)

    # -- the one entry point ---------------------------------------------------------------

    def process(self, refund_id: str) -> AttemptResult:
        """Run one attempt of ``refund_id``: claim, reconcile or refund, record."""
        claim = self._claim(refund_id)
        if isinstance(claim, AttemptResult):
            return claim
        client = self.client_factory(claim.calls.append)
        try:
            outcome = self._act(claim, client)
        except _LeaseLost:
            log.warning("refund %s: lease lost before the refund call; not calling", refund_id)
            return AttemptResult(refund_id, RefundStatus.PROCESSING, "lease lost; not called")
        except AttentionRequired as exc:
            return self._record_attention(claim, exc)
        except PermanentError as exc:
            return self._record_failure(claim, exc)
        except RetryableError as exc:
            if isinstance(exc, MagentoRateLimited) and exc.http_status == 429 and exc.retry_after:
                self.limiter.pause(exc.retry_after)  # Magento's 429, on any call: everyone waits
            return self._record_retry(claim, exc)
        except Exception as exc:  # a bug or odd data must fail this refund, not loop forever
            log.exception("refund %s: unexpected error", refund_id)
            unexpected = PermanentError(f"unexpected error: {type(exc).__name__}: {exc}")
            in_doubt = claim.was_in_doubt or _reached_refund_call(claim.calls)
            return self._record_failure(claim, unexpected, in_doubt=in_doubt)
        return self._record_success(claim, *outcome)

    # -- step 1: claim -----------------------------------------------------------------------

    def _claim(self, refund_id: str) -> _Claim | AttemptResult:
        now = self.clock()
        with self.database.connection_scope() as connection:
            row = connection.execute(_CLAIM_READ, {"p_refund_id": refund_id}).first()
            if row is None:
                return AttemptResult(refund_id, "unknown", "no such refund; message dropped")
            if row.status in SETTLED_STATUSES:
                return AttemptResult(refund_id, row.status, "already settled; duplicate delivery")
            if row.status == RefundStatus.PROCESSING and _after(row.lease_expires_at, now):
                return AttemptResult(refund_id, row.status, "in flight in another worker")
            if row.status != RefundStatus.PROCESSING and _after(
                row.next_attempt_at, now + DUE_SLACK
            ):
                return AttemptResult(refund_id, row.status, "not due yet; an earlier copy")
            try:
                request = RefundRequest.model_validate_json(row.request_json)
            except ValidationError as exc:
                if not self._fail_unreadable(connection, refund_id, row.version, now, exc):
                    return AttemptResult(refund_id, row.status, "claimed by another worker first")
                return AttemptResult(refund_id, RefundStatus.FAILED, "stored request unreadable")
            token = str(uuid.uuid4())
            lease_until = now + timedelta(seconds=self.settings.lease_seconds)
            was_in_doubt = row.in_doubt or row.status == RefundStatus.PROCESSING
            first_attempt_at = row.first_attempt_at or now
            attempt = row.attempts + 1
            # The refund row first, then the order lock: every transaction that touches both
            # locks them in this order, so two of them can never deadlock on PostgreSQL.
            claimed = rowcount(
                connection.execute(
                    _CLAIM,
                    {
                        "p_refund_id": refund_id,
                        "p_version": row.version,
                        "p_token": token,
                        "p_until": lease_until,
                        "p_first_attempt_at": first_attempt_at,
                        "p_now": now,
                    },
                )
            )
            if claimed != 1:
                connection.rollback()
                return AttemptResult(refund_id, row.status, "claimed by another worker first")
            if not _take_order_lock(connection, row.order_id, refund_id, now, lease_until):
                connection.rollback()
                return AttemptResult(
                    refund_id,
                    row.status,
                    f"order {row.order_id} has a refund in flight",
                    retry_in=ORDER_BUSY_DELAY * (1 + self.rng.random()),
                )
            return _Claim(
                refund_id=refund_id,
                request=request,
                marker=marker_for(refund_id, row.marker_token),
                token=token,
                attempt=attempt,
                was_in_doubt=was_in_doubt,
                first_attempt_at=first_attempt_at,
                claimed_at=now,
                reconcile_only=attempt > self.settings.max_attempts,
                last_error=row.last_error,
            )

    def _fail_unreadable(
        self,
        connection: Connection,
        refund_id: str,
        version: int,
        now: datetime,
        exc: ValidationError,
    ) -> bool:
        """Settle a refund whose stored request cannot be parsed; False if the row changed."""
        fields = ", ".join(".".join(map(str, e["loc"])) or "request" for e in exc.errors())
        failed = connection.execute(
            _FAIL_UNREADABLE,
            {
                "p_refund_id": refund_id,
                "p_version": version,
                "p_error": f"stored request cannot be processed ({fields}): "
                f"{exc.errors()[0]['msg']}",
                "p_now": now,
            },
        )
        return rowcount(failed) == 1

    # -- step 2: act (no transaction open) --------------------------------------------------

    def _act(self, claim: _Claim, client: MagentoAPI) -> tuple[int, str | None, str]:
        """(credit memo id, service used, outcome text). Raises on failure."""
        if claim.was_in_doubt:
            reconciled = self._reconcile(claim, client)
            if reconciled is not None:
                return reconciled
        if claim.reconcile_only:
            raise PermanentError(
                f"gave up after {claim.attempt - 1} attempts; Magento has no credit memo "
                f"carrying this refund's marker, so nothing was refunded; last error: "
                f"{claim.last_error}"
            )
        call = self._plan(claim, client)
        claim.service = call.service.value
        self.limiter.acquire()
        self._renew_lease(claim)
        try:
            creditmemo_id = _execute(client, call, claim.request.store_code)
        except MagentoRejected:
            # A slow earlier attempt may have landed since the search: Magento then refuses a
            # full refund ("closed", "nothing left"). Look once more before calling it a failure.
            if claim.was_in_doubt:
                reconciled = self._reconcile(claim, client)
                if reconciled is not None:
                    return reconciled
            raise
        return creditmemo_id, call.service.value, call.description

    def _reconcile(self, claim: _Claim, client: MagentoAPI) -> tuple[int, None, str] | None:
        """The credit memo an earlier attempt created (it carries our marker and fits the
        request), if any; ``AttentionRequired`` when what carries the marker does not fit."""
        request = claim.request
        skew = timedelta(seconds=self.settings.reconcile_clock_skew_seconds)
        self.limiter.acquire()
        creditmemos = client.search_creditmemos(
            order_id=request.order_id,
            created_from=claim.first_attempt_at - skew,
            store_code=request.store_code,
        )
        matches = reconcile.with_marker(creditmemos, claim.marker)
        if not matches:
            return None
        order_items = None
        if request.items is not None or request.creditmemo is not None:
            # Tells a configurable's or bundle's child rows from items nobody asked for.
            self.limiter.acquire()
            order_items = order_items_by_id(
                client.get_order(request.order_id, store_code=request.store_code)
            )
        match = reconcile.choose(request, matches, order_items)
        assert match is not None  # there were matches
        creditmemo_id = match.creditmemo_id
        return (
            creditmemo_id,
            None,
            f"reconciled: credit memo {creditmemo_id} from an earlier attempt carries this "
            "refund's marker; not refunded again",
        )

    def _renew_lease(self, claim: _Claim) -> None:
        """Extend the lease and the order lock right before the call, or refuse to call.

        The renewal is fenced by the lease token, so a worker that was slow enough to lose its
        lease (limiter waits, a stalled thread) never calls; one that renews owns the refund for
        a full ``lease_seconds`` from the call on, longer than the call can last. A claim made
        less than a Magento timeout ago (``lease_covers_call``, the usual case) still has nearly
        all of its lease, so it is not renewed: one transaction less per refund.
        """
        now = self.clock()
        if lease_covers_call(self.settings, claim.claimed_at, now):
            return
        until = now + timedelta(seconds=self.settings.lease_seconds)
        with self.database.connection_scope() as connection:
            renewed = rowcount(
                connection.execute(
                    _RENEW_LEASE,
                    {
                        "p_refund_id": claim.refund_id,
                        "p_token": claim.token,
                        "p_until": until,
                        "p_now": now,
                    },
                )
            )
            if renewed != 1:
                connection.rollback()
                raise _LeaseLost(claim.refund_id)
            locked = rowcount(
                connection.execute(
                    _RENEW_ORDER_LOCK,
                    {
                        "p_order_id": claim.request.order_id,
                        "p_refund_id": claim.refund_id,
                        "p_until": until,
                    },
                )
            )
            if locked != 1:
                connection.rollback()
                raise RetryableError(
                    f"order {claim.request.order_id}: another refund took over the order lock "
                    "before the refund call; not called"
                )

    def _plan(self, claim: _Claim, client: MagentoAPI) -> RefundCall:
        request = claim.request
        store = request.store_code
        order: dict[str, Any] = {}
        invoices: list[dict[str, Any]] = []
        if request.service != "creditmemo":
            self.limiter.acquire()
            order = client.get_order(request.order_id, store_code=store)
            if needs_invoices(request, order, self.extra_offline):
                self.limiter.acquire()
                if request.invoice_id is not None:
                    invoices = [client.get_invoice(request.invoice_id, store_code=store)]
                else:
                    invoices = client.search_invoices(order_id=request.order_id, store_code=store)
        return plan_refund(
            request,
            marker=claim.marker,
            order=order,
            invoices=invoices,
            extra_offline=self.extra_offline,
        )

    # -- step 3: record ---------------------------------------------------------------------

    def _record_success(
        self, claim: _Claim, creditmemo_id: int, service: str | None, outcome: str
    ) -> AttemptResult:
        now = self.clock()
        notify = claim.request.notify_customer
        with_service = service is not None
        params = {
            "p_refund_id": claim.refund_id,
            "p_creditmemo_id": creditmemo_id,
            "p_outcome": outcome,
            "p_now": now,
        }
        if with_service:
            params["p_service"] = service
        try:
            recorded = self._write_success(claim, params, with_service=with_service, notify=notify)
        except IntegrityError:
            # Another refund already records this credit memo: never two successes on one.
            owner = self._creditmemo_owner(creditmemo_id)
            return self._record_attention(
                claim,
                AttentionRequired(
                    f"credit memo {creditmemo_id} already backs refund {owner}; "
                    f"this refund's attempt found it too ({outcome})"
                ),
            )
        if not recorded:
            return AttemptResult(
                claim.refund_id, RefundStatus.SUCCEEDED, "already recorded by another attempt"
            )
        log.info("refund %s succeeded: credit memo %s", claim.refund_id, creditmemo_id)
        return AttemptResult(
            claim.refund_id, RefundStatus.SUCCEEDED, outcome, publish_notification=notify
        )

    def _write_success(
        self, claim: _Claim, params: dict[str, Any], *, with_service: bool, notify: bool
    ) -> bool:
        """The success, its audit rows, the lease and lock let go; False if one was recorded
        already. ``IntegrityError`` when the credit memo backs another refund."""
        with self.database.connection_scope() as connection:
            owned = rowcount(
                connection.execute(
                    _success_update(owned=True, with_service=with_service, notify=notify),
                    {**params, "p_token": claim.token},
                )
            )
            recorded, held = owned, owned
            if not owned:
                held = self._release_lease(connection, claim)  # already succeeded: let go
            if not held:
                # Success is a fact even if our lease was taken over meanwhile: record it, but
                # leave the lease (and the order lock) to the worker that holds them now.
                recorded = rowcount(
                    connection.execute(
                        _success_update(owned=False, with_service=with_service, notify=notify),
                        params,
                    )
                )
            self._finish_attempt(connection, claim, release_lock=bool(held))
            if recorded and not with_service:
                connection.execute(
                    _RECONCILED_EVENT,
                    {"p_refund_id": claim.refund_id, "p_detail": params["p_outcome"]},
                )
        return bool(recorded)

    def _creditmemo_owner(self, creditmemo_id: int) -> str | None:
        with self.database.connection_scope() as connection:
            return connection.execute(
                select(_refunds.c.id).where(_refunds.c.creditmemo_id == creditmemo_id)
            ).scalar()

    def _record_attention(self, claim: _Claim, exc: AttentionRequired) -> AttemptResult:
        """Settle the refund as ``needs_attention``: Magento shows what a person must settle.

        It stays in doubt (money may have moved), so a replay reconciles before anything else.
        """
        now = self.clock()
        exc.refund_id = claim.refund_id
        exc.idempotency_key = claim.request.idempotency_key
        with self.database.connection_scope() as connection:
            owned = self._update_owned(
                connection,
                claim,
                status=RefundStatus.NEEDS_ATTENTION.value,
                attention=exc.message,
                last_error=exc.message,
                last_error_kind="attention",
                last_http_status=None,
                in_doubt=True,
                settled_at=now,
                updated_at=now,
            )
            self._finish_attempt(connection, claim, release_lock=owned)
            if owned:
                connection.execute(
                    insert(_refund_events).values(
                        refund_id=claim.refund_id, kind="needs_attention", detail=exc.message
                    )
                )
        log.error("refund %s needs attention: %s", claim.refund_id, exc.message)
        return AttemptResult(claim.refund_id, RefundStatus.NEEDS_ATTENTION, exc.message, error=exc)

    def _record_failure(
        self, claim: _Claim, exc: PermanentError, *, in_doubt: bool | None = None
    ) -> AttemptResult:
        now = self.clock()
        exc.refund_id = claim.refund_id
        exc.idempotency_key = claim.request.idempotency_key
        if in_doubt is None:
            # A definitive answer to this attempt's call settles any earlier doubt, since the
            # reconcile search ran first; a rejection while planning leaves the doubt as it was.
            in_doubt = claim.was_in_doubt and not _reached_refund_call(claim.calls)
        with self.database.connection_scope() as connection:
            owned = self._update_owned(
                connection,
                claim,
                status=RefundStatus.FAILED.value,
                last_error=exc.message,
                last_error_kind="permanent",
                last_http_status=exc.http_status,
                in_doubt=in_doubt,
                settled_at=now,
                updated_at=now,
            )
            self._finish_attempt(connection, claim, release_lock=owned)
        log.warning("refund %s failed permanently: %s", claim.refund_id, exc.message)
        return AttemptResult(claim.refund_id, RefundStatus.FAILED, exc.message, error=exc)

    def _record_retry(self, claim: _Claim, exc: RetryableError) -> AttemptResult:
        now = self.clock()
        unknown = exc.outcome_unknown or (
            claim.was_in_doubt and not _reached_refund_call(claim.calls)
        )
        # Out of attempts: fail, unless Magento may have refunded; then keep looking for the
        # marker (``reconcile_only``) until a search answers, and settle on what it finds.
        if claim.attempt >= self.settings.max_attempts and not unknown:
            failure = PermanentError(
                f"gave up after {claim.attempt} attempts; last error: {exc.message}",
                http_status=exc.http_status,
            )
            with self.database.connection_scope() as connection:
                owned = self._update_owned(
                    connection,
                    claim,
                    status=RefundStatus.FAILED.value,
                    last_error=failure.message,
                    last_error_kind="retryable",
                    last_http_status=exc.http_status,
                    in_doubt=unknown,
                    settled_at=now,
                    updated_at=now,
                )
                self._finish_attempt(connection, claim, release_lock=owned)
            return AttemptResult(
                claim.refund_id, RefundStatus.FAILED, failure.message, error=failure
            )
        delay = backoff_seconds(self.settings, claim.attempt, self.rng)
        if isinstance(exc, MagentoRateLimited) and exc.retry_after:
            delay = max(delay, exc.retry_after + self.rng.random())
        if unknown:
            delay = max(delay, self.settings.magento_timeout + self.settings.in_doubt_grace_seconds)
        # Never longer than the visibility timeout was checked against at start-up.
        delay = min(delay, self.settings.longest_countdown)
        last_call_at = _refund_call_started(claim.calls, now)
        with self.database.connection_scope() as connection:
            owned = self._update_owned(
                connection,
                claim,
                status=RefundStatus.RETRYING.value,
                last_error=exc.message,
                last_error_kind="retryable",
                last_http_status=exc.http_status,
                in_doubt=unknown,
                next_attempt_at=now + timedelta(seconds=delay),
                published_at=now,
                last_call_at=last_call_at,
                updated_at=now,
            )
            self._finish_attempt(connection, claim, release_lock=owned)
        log.info("refund %s will retry in %.1fs: %s", claim.refund_id, delay, exc.message)
        return AttemptResult(claim.refund_id, RefundStatus.RETRYING, exc.message, retry_in=delay)

    def _update_owned(self, connection: Connection, claim: _Claim, **values: Any) -> bool:
        """Write the outcome if this attempt still holds the lease; a success is never undone."""
        params = {f"p_{name}": value for name, value in values.items()}
        params.update(p_refund_id=claim.refund_id, p_token=claim.token, p_service=claim.service)
        updated = rowcount(connection.execute(_owned_outcome_update(frozenset(values)), params))
        if updated == 1:
            return True
        if self._release_lease(connection, claim):
            log.info("refund %s: succeeded meanwhile; this outcome is dropped", claim.refund_id)
            return True
        log.warning(
            "refund %s: lease lost before recording; the next owner decides", claim.refund_id
        )
        return False

    def _release_lease(self, connection: Connection, claim: _Claim) -> bool:
        """Give the lease back without touching the outcome; False if it was not ours."""
        released = connection.execute(
            _RELEASE_LEASE, {"p_refund_id": claim.refund_id, "p_token": claim.token}
        )
        return rowcount(released) == 1

    def _finish_attempt(self, connection: Connection, claim: _Claim, *, release_lock: bool) -> None:
        """Audit rows for this attempt's calls; the order lock released if we still held it."""
        record_calls(connection, claim.refund_id, claim.attempt, claim.calls)
        if release_lock:
            connection.execute(
                _RELEASE_ORDER_LOCK,
                {"p_order_id": claim.request.order_id, "p_refund_id": claim.refund_id},
            )


def record_calls(
    connection: Connection, refund_id: str, attempt: int, calls: list[CallRecord]
) -> None:
    """The audit rows (``magento_calls``) of one attempt's calls, in one Core INSERT."""
    if not calls:
        return  # an empty parameter list would insert one row of defaults
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
            }
            for call in calls
        ],
    )


def lease_covers_call(settings: Settings, claimed_at: datetime, now: datetime) -> bool:
    """True while the lease granted at ``claimed_at`` is as good as a renewal for a call ``now``.

    That is the first ``magento_timeout`` seconds after the claim (normally the claim is
    milliseconds old when the call goes out): the call then starts with at least ``lease_seconds
    - magento_timeout`` of lease (three timeouts and more, checked at start-up), so the attempt
    cannot be taken over while it runs, and a worker killed during the call leaves its refund
    untouched nearly as long as a renewal would. An older claim is renewed, fenced, first.
    """
    return now - claimed_at < timedelta(seconds=settings.magento_timeout)


_REFUND_OPERATIONS = frozenset(
    {"invoice_refund", "order_refund", "creditmemo_refund", "creditmemo_save"}
)


def _reached_refund_call(calls: list[CallRecord]) -> bool:
    return any(call.operation in _REFUND_OPERATIONS for call in calls)


def _refund_call_started(calls: list[CallRecord], default: datetime) -> datetime:
    for call in calls:
        if call.operation in _REFUND_OPERATIONS:
            return default - timedelta(milliseconds=call.duration_ms)
    return default


def _execute(client: MagentoAPI, call: RefundCall, store: str | None) -> int:
    if call.service is Service.INVOICE:
        assert call.target_id is not None
        return client.refund_invoice(call.target_id, call.body, store_code=store)
    if call.service is Service.ORDER:
        assert call.target_id is not None
        return client.refund_order(call.target_id, call.body, store_code=store)
    if call.service is Service.CREDITMEMO:
        return int(client.refund_creditmemo(call.body, store_code=store)["entity_id"])
    return int(client.save_creditmemo(call.body, store_code=store)["entity_id"])


def _after(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment > now


def _take_order_lock(
    connection: Connection, order_id: int, refund_id: str, now: datetime, until: datetime
) -> bool:
    """Take (or take over, once expired) the order's lock for this refund.

    One upsert: insert the lock, or, when the order has one, take it only if it is already this
    refund's or has expired. RETURNING gives a row exactly when the lock is now ours.
    """
    if connection.dialect.name == "postgresql":
        upsert = _POSTGRESQL_ORDER_LOCK_UPSERT
    else:
        upsert = _SQLITE_ORDER_LOCK_UPSERT
    params = {"p_order_id": order_id, "p_refund_id": refund_id, "p_until": until, "p_now": now}
    return connection.execute(upsert, params).first() is not None
