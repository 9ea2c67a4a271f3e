"""The customer's credit-memo email, sent as its own step; its failure never fails a refund.

``POST /V1/creditmemo/{id}/emails`` is not idempotent (every call sends another email), so the
email is claimed with a lease like a refund, the lease is renewed (fenced by the row's version)
right before the send, and any attempt after the first asks Magento whether the credit memo's
``email_sent`` flag is already set before sending again. An email goes out at most once per
refund unless an operator asks again (``replay --notifications``). Past
``notification_max_attempts`` with the outcome unknown, attempts only read that flag: the email
is failed only once Magento has said it was not sent.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, case, not_, or_, select, update

from refund_worker.db import Database, param, rowcount
from refund_worker.errors import MagentoRateLimited, PermanentError, RetryableError
from refund_worker.magento import CallRecord
from refund_worker.models import Refund, utcnow
from refund_worker.ratelimit import CallLimiter, NoLimit
from refund_worker.refunds import (
    DUE_SLACK,
    AttemptResult,
    ClientFactory,
    backoff_seconds,
    lease_covers_call,
    record_calls,
)
from refund_worker.schemas import NotificationStatus, RefundStatus
from refund_worker.settings import Settings

log = logging.getLogger(__name__)

_SENDABLE = frozenset({NotificationStatus.PENDING, NotificationStatus.RETRYING})

_refunds = cast(Table, Refund.__table__)  # Core statements: no ORM instances

# The statements of a send are built once and run with a parameter dict: on this path, building
# a statement and its cache key costs more CPU than the database round trip, and a statement
# object computes its cache key only once. Per-call values are ``p_*`` parameters.
_P_REFUND_ID = param("p_refund_id", _refunds.c.id)
_P_VERSION = param("p_version", _refunds.c.version)
_P_ERROR = param("p_error", _refunds.c.notification_error)
_P_UNTIL = param("p_until", _refunds.c.notification_lease_expires_at)
_P_NOW = param("p_now", _refunds.c.notification_published_at)

#: Every write after the read is compare-and-set on the row's version.
_THIS_VERSION = (_refunds.c.id == _P_REFUND_ID, _refunds.c.version == _P_VERSION)
_NEXT_VERSION = _refunds.c.version + 1

#: The columns that tell why a claim took nothing.
_CLAIM_READ = select(
    _refunds.c.status,
    _refunds.c.creditmemo_id,
    _refunds.c.notification_status,
    _refunds.c.notification_lease_expires_at,
    _refunds.c.notification_next_at,
).where(_refunds.c.id == _P_REFUND_ID)

#: Fails the email of a refund whose stored request cannot be read (just claimed: the lease
#: the claim took is given back).
_FAIL_UNREADABLE = (
    update(_refunds)
    .where(*_THIS_VERSION)
    .values(
        notification_status=NotificationStatus.FAILED.value,
        notification_error=_P_ERROR,
        notification_lease_expires_at=None,
        version=_NEXT_VERSION,
    )
)

_status = _refunds.c.notification_status
_lease = _refunds.c.notification_lease_expires_at
_next_at = _refunds.c.notification_next_at
_attempts = _refunds.c.notification_attempts
_SENDING = NotificationStatus.SENDING.value
#: The email of a worker that died mid-send: its lease has run out.
_ABANDONED = and_(_status == _SENDING, or_(_lease.is_(None), _lease <= _P_NOW))

#: The claim, in one statement (so it runs without ``BEGIN``/``COMMIT``): the email is being
#: sent, under a lease, if its refund succeeded, it is pending, retrying and due, or abandoned.
#: An abandoned email counts as a later attempt (at least the second), which checks Magento's
#: ``email_sent`` flag before sending again. ``_explain`` says why a claim took nothing.
_CLAIM = (
    update(_refunds)
    .where(
        _refunds.c.id == _P_REFUND_ID,
        _refunds.c.status == RefundStatus.SUCCEEDED.value,
        _refunds.c.creditmemo_id.is_not(None),
        # Equalities, not ``in_``: an IN list is rendered anew at every execution.
        or_(*(_status == value for value in sorted(s.value for s in _SENDABLE)), _ABANDONED),
        not_(
            and_(
                _status == NotificationStatus.RETRYING.value,
                _next_at.is_not(None),
                _next_at > param("p_due", _next_at),
            )
        ),
    )
    .values(
        notification_status=_SENDING,
        notification_attempts=case(
            (and_(_status == _SENDING, _attempts < 1), 2), else_=_attempts + 1
        ),
        notification_lease_expires_at=_P_UNTIL,
        version=_NEXT_VERSION,
    )
    .returning(
        _refunds.c.creditmemo_id,
        _refunds.c.request_json,
        _refunds.c.version,
        _attempts,
        _refunds.c.notification_error,
    )
)

#: Extends the lease right before the send, fenced by the version.
_RENEW_LEASE = (
    update(_refunds)
    .where(*_THIS_VERSION, _refunds.c.notification_status == NotificationStatus.SENDING.value)
    .values(notification_lease_expires_at=_P_UNTIL)
)

#: The outcome of a send; ``_RECORD_RETRY`` also schedules the next attempt.
_RECORD = (
    update(_refunds)
    .where(*_THIS_VERSION)
    .values(
        notification_status=param("p_status", _refunds.c.notification_status),
        notification_error=_P_ERROR,
        notification_lease_expires_at=None,
        version=_NEXT_VERSION,
    )
)
_RECORD_RETRY = _RECORD.values(
    notification_next_at=param("p_next_at", _refunds.c.notification_next_at),
    notification_published_at=_P_NOW,
)


@dataclass(frozen=True)
class _EmailClaim:
    refund_id: str
    creditmemo_id: int
    store: str | None
    attempt: int
    version: int  # the row's version after the claim: every later write is fenced by it
    last_error: str | None
    #: The clock reading the lease was granted from: it expires at claimed_at + lease_seconds.
    claimed_at: datetime


class NotificationService:
    """Sends one refund's credit-memo email, at most once."""

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

    def send(self, refund_id: str) -> AttemptResult:
        """Claim the email, check it was not sent already, send it, record the outcome."""
        claim = self._claim(refund_id)
        if isinstance(claim, AttemptResult):
            return claim
        calls: list[CallRecord] = []
        client = self.client_factory(calls.append)
        checked = False
        try:
            if claim.attempt > 1:
                self.limiter.acquire()
                creditmemo = client.get_creditmemo(claim.creditmemo_id, store_code=claim.store)
                checked = True
                if _truthy(creditmemo.get("email_sent")):
                    return self._record(
                        claim,
                        calls,
                        status=NotificationStatus.SENT,
                        error=None,
                        detail="already sent by an earlier attempt",
                    )
                if claim.attempt > self.settings.notification_max_attempts:
                    return self._record(
                        claim,
                        calls,
                        status=NotificationStatus.FAILED,
                        error=f"gave up after {claim.attempt - 1} attempts; Magento shows the "
                        f"email was not sent; last error: {claim.last_error}",
                    )
            self.limiter.acquire()
            if not self._renew_lease(claim):
                log.warning("refund %s: notification lease lost; not sending", refund_id)
                return AttemptResult(refund_id, NotificationStatus.SENDING, "lease lost; not sent")
            sent = client.send_creditmemo_email(claim.creditmemo_id, store_code=claim.store)
        except PermanentError as exc:
            return self._record(claim, calls, status=NotificationStatus.FAILED, error=exc.message)
        except RetryableError as exc:
            return self._retry(
                claim,
                calls,
                exc,
                unknown=exc.outcome_unknown or (claim.attempt > 1 and not checked),
            )
        if sent:
            return self._record(claim, calls, status=NotificationStatus.SENT, error=None)
        return self._record(
            claim,
            calls,
            status=NotificationStatus.NOT_SENT,
            error="Magento did not send the email: credit-memo emails are disabled or sent "
            "asynchronously by its cron",
        )

    def _retry(
        self, claim: _EmailClaim, calls: list[CallRecord], exc: RetryableError, *, unknown: bool
    ) -> AttemptResult:
        retry_after = exc.retry_after if isinstance(exc, MagentoRateLimited) else None
        if retry_after and exc.http_status == 429:
            self.limiter.pause(retry_after)  # Magento's 429: every worker waits
        if claim.attempt >= self.settings.notification_max_attempts and not unknown:
            return self._record(
                claim,
                calls,
                status=NotificationStatus.FAILED,
                error=f"gave up after {claim.attempt} attempts: {exc.message}",
            )
        delay = backoff_seconds(self.settings, claim.attempt, self.rng)
        if retry_after:
            delay = max(delay, retry_after)
        delay = min(delay, self.settings.longest_countdown)
        return self._record(
            claim,
            calls,
            status=NotificationStatus.RETRYING,
            error=exc.message,
            retry_in=delay,
        )

    def _claim(self, refund_id: str) -> _EmailClaim | AttemptResult:
        now = self.clock()
        with self.database.statement_scope() as connection:
            row = connection.execute(
                _CLAIM,
                {
                    "p_refund_id": refund_id,
                    "p_now": now,
                    "p_due": now + DUE_SLACK,
                    "p_until": now + timedelta(seconds=self.settings.lease_seconds),
                },
            ).first()
            if row is None:
                return self._explain(connection, refund_id, now)
            try:
                store = _store_code(row.request_json)
            except ValueError as exc:
                failed = connection.execute(
                    _FAIL_UNREADABLE,
                    {
                        "p_refund_id": refund_id,
                        "p_version": row.version,
                        "p_error": f"stored request cannot be read: {exc}",
                    },
                )
                if rowcount(failed) != 1:
                    return AttemptResult(refund_id, "skipped", "claimed by another worker first")
                return AttemptResult(
                    refund_id, NotificationStatus.FAILED, "stored request unreadable"
                )
        return _EmailClaim(
            refund_id,
            row.creditmemo_id,
            store,
            row.notification_attempts,
            row.version,
            row.notification_error,
            claimed_at=now,
        )

    @staticmethod
    def _explain(connection: Connection, refund_id: str, now: datetime) -> AttemptResult:
        """Why the claim took nothing (read after it, so it may say what a rival did)."""
        row = connection.execute(_CLAIM_READ, {"p_refund_id": refund_id}).first()
        if row is None or row.status != RefundStatus.SUCCEEDED or row.creditmemo_id is None:
            return AttemptResult(refund_id, "skipped", "no succeeded refund to notify about")
        status = NotificationStatus(row.notification_status)
        lease_expired = status is NotificationStatus.SENDING and not (
            row.notification_lease_expires_at and row.notification_lease_expires_at > now
        )
        if status not in _SENDABLE and not lease_expired:
            return AttemptResult(refund_id, status, f"notification is {status.value}")
        if (
            status is NotificationStatus.RETRYING
            and row.notification_next_at
            and row.notification_next_at > now + DUE_SLACK
        ):
            return AttemptResult(refund_id, status, "not due yet; an earlier copy")
        return AttemptResult(refund_id, "skipped", "claimed by another worker first")

    def _renew_lease(self, claim: _EmailClaim) -> bool:
        """Extend the lease right before the send; False if another worker took the email over.

        A claim made less than a Magento timeout ago (``lease_covers_call``) still has nearly all
        of its lease, so it is not renewed.
        """
        now = self.clock()
        if lease_covers_call(self.settings, claim.claimed_at, now):
            return True
        until = now + timedelta(seconds=self.settings.lease_seconds)
        with self.database.connection_scope() as connection:
            renewed = connection.execute(
                _RENEW_LEASE,
                {"p_refund_id": claim.refund_id, "p_version": claim.version, "p_until": until},
            )
            return rowcount(renewed) == 1

    def _record(
        self,
        claim: _EmailClaim,
        calls: list[CallRecord],
        *,
        status: NotificationStatus,
        error: str | None,
        retry_in: float | None = None,
        detail: str = "",
    ) -> AttemptResult:
        now = self.clock()
        statement = _RECORD
        params: dict[str, Any] = {
            "p_refund_id": claim.refund_id,
            "p_version": claim.version,
            "p_status": status.value,
            "p_error": error,
        }
        if retry_in is not None:
            statement = _RECORD_RETRY
            params["p_next_at"] = now + timedelta(seconds=retry_in)
            params["p_now"] = now
        with self.database.connection_scope() as connection:
            recorded = rowcount(connection.execute(statement, params))
            record_calls(connection, claim.refund_id, claim.attempt, calls)
        if not recorded:
            log.warning(
                "refund %s: notification changed while sending; the next owner decides",
                claim.refund_id,
            )
        if status is NotificationStatus.FAILED:
            log.warning("refund %s: notification failed: %s", claim.refund_id, error)
        return AttemptResult(
            claim.refund_id, status.value, detail or (error or ""), retry_in=retry_in
        )


def _truthy(value: Any) -> bool:
    return value not in (None, 0, "0", "", False)


def _store_code(request_json: str) -> str | None:
    """The request's store code; ``ValueError`` when the stored request is not a JSON object."""
    request = json.loads(request_json)
    if not isinstance(request, dict):
        raise ValueError("not a JSON object")
    store = request.get("store_code")
    return str(store) if store else None
