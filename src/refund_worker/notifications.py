"""The customer's credit-memo email, sent as its own step; its failure never fails a refund.

``POST /V1/creditmemo/{id}/emails`` is not idempotent (every call sends another email), so the
email is claimed with a lease like a refund, and any attempt after the first asks Magento whether
the credit memo's ``email_sent`` flag is already set before sending again. An email goes out at
most once per refund unless an operator asks again (``replay --notifications``).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from refund_worker.db import Database, rowcount
from refund_worker.errors import MagentoRateLimited, PermanentError, RetryableError
from refund_worker.magento import CallRecord
from refund_worker.models import MagentoCall, Refund, utcnow
from refund_worker.ratelimit import CallLimiter, NoLimit
from refund_worker.refunds import AttemptResult, ClientFactory, backoff_seconds
from refund_worker.schemas import NotificationStatus, RefundStatus
from refund_worker.settings import Settings

log = logging.getLogger(__name__)

_SENDABLE = frozenset({NotificationStatus.PENDING, NotificationStatus.RETRYING})


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
        claimed = self._claim(refund_id)
        if isinstance(claimed, AttemptResult):
            return claimed
        creditmemo_id, store, attempt, version = claimed
        calls: list[CallRecord] = []
        client = self.client_factory(calls.append)
        try:
            if attempt > 1:
                self.limiter.acquire()
                creditmemo = client.get_creditmemo(creditmemo_id, store_code=store)
                if _truthy(creditmemo.get("email_sent")):
                    return self._record(
                        refund_id,
                        version,
                        calls,
                        attempt,
                        status=NotificationStatus.SENT,
                        error=None,
                        detail="already sent by an earlier attempt",
                    )
            self.limiter.acquire()
            sent = client.send_creditmemo_email(creditmemo_id, store_code=store)
        except PermanentError as exc:
            return self._record(
                refund_id,
                version,
                calls,
                attempt,
                status=NotificationStatus.FAILED,
                error=exc.message,
            )
        except RetryableError as exc:
            if isinstance(exc, MagentoRateLimited) and exc.retry_after:
                self.limiter.pause(exc.retry_after)
            if attempt >= self.settings.notification_max_attempts:
                return self._record(
                    refund_id,
                    version,
                    calls,
                    attempt,
                    status=NotificationStatus.FAILED,
                    error=f"gave up after {attempt} attempts: {exc.message}",
                )
            delay = backoff_seconds(self.settings, attempt, self.rng)
            if isinstance(exc, MagentoRateLimited) and exc.retry_after:
                delay = max(delay, exc.retry_after)
            return self._record(
                refund_id,
                version,
                calls,
                attempt,
                status=NotificationStatus.RETRYING,
                error=exc.message,
                retry_in=delay,
            )
        if sent:
            return self._record(
                refund_id, version, calls, attempt, status=NotificationStatus.SENT, error=None
            )
        return self._record(
            refund_id,
            version,
            calls,
            attempt,
            status=NotificationStatus.NOT_SENT,
            error="Magento did not send the email: credit-memo emails are disabled or sent "
            "asynchronously by its cron",
        )

    def _claim(self, refund_id: str) -> tuple[int, str | None, int, int] | AttemptResult:
        now = self.clock()
        with self.database.session_scope() as session:
            row = session.get(Refund, refund_id)
            if row is None or row.status != RefundStatus.SUCCEEDED or row.creditmemo_id is None:
                return AttemptResult(refund_id, "skipped", "no succeeded refund to notify about")
            status = NotificationStatus(row.notification_status)
            lease_expired = status is NotificationStatus.SENDING and not (
                row.notification_lease_expires_at and row.notification_lease_expires_at > now
            )
            creditmemo_id = row.creditmemo_id
            if status not in _SENDABLE and not lease_expired:
                return AttemptResult(refund_id, status, f"notification is {status.value}")
            if (
                status is NotificationStatus.RETRYING
                and row.notification_next_at
                and (row.notification_next_at > now + timedelta(seconds=1))
            ):
                return AttemptResult(refund_id, status, "not due yet; an earlier copy")
            version = row.version
            attempt = row.notification_attempts + 1
            # An expired lease means a worker died mid-send: treat it as a later attempt.
            if lease_expired:
                attempt = max(attempt, 2)
            claimed = rowcount(
                session.execute(
                    update(Refund)
                    .where(Refund.id == refund_id, Refund.version == row.version)
                    .values(
                        notification_status=NotificationStatus.SENDING.value,
                        notification_attempts=attempt,
                        notification_lease_expires_at=now
                        + timedelta(seconds=self.settings.lease_seconds),
                        version=Refund.version + 1,
                    )
                )
            )
            if claimed != 1:
                return AttemptResult(refund_id, "skipped", "claimed by another worker first")
            store = _store_code(row.request_json)
            return creditmemo_id, store, attempt, version + 1

    def _record(
        self,
        refund_id: str,
        version: int,
        calls: list[CallRecord],
        attempt: int,
        *,
        status: NotificationStatus,
        error: str | None,
        retry_in: float | None = None,
        detail: str = "",
    ) -> AttemptResult:
        now = self.clock()
        values: dict[str, Any] = {
            "notification_status": status.value,
            "notification_error": error,
            "notification_lease_expires_at": None,
            "version": Refund.version + 1,
        }
        if retry_in is not None:
            values["notification_next_at"] = now + timedelta(seconds=retry_in)
            values["notification_published_at"] = now
        with self.database.session_scope() as session:
            session.execute(
                update(Refund)
                .where(Refund.id == refund_id, Refund.version == version)
                .values(**values)
            )
            session.add_all(
                MagentoCall(
                    refund_id=refund_id,
                    attempt=attempt,
                    operation=call.operation,
                    method=call.method,
                    path=call.path[:255],
                    http_status=call.http_status,
                    duration_ms=call.duration_ms,
                    error=call.error,
                )
                for call in calls
            )
        if status is NotificationStatus.FAILED:
            log.warning("refund %s: notification failed: %s", refund_id, error)
        return AttemptResult(refund_id, status.value, detail or (error or ""), retry_in=retry_in)


def _truthy(value: Any) -> bool:
    return value not in (None, 0, "0", "", False)


def _store_code(request_json: str) -> str | None:
    store = json.loads(request_json).get("store_code")
    return str(store) if store else None
