"""The customer's credit-memo email, sent as its own step; its failure never fails a refund.

``POST /V1/creditmemo/{id}/emails`` is not idempotent (every call sends another email), so the
email is claimed with a lease like a refund (``EmailStore``), the lease is renewed (fenced by the
email's version) right before the send, and any attempt after the first asks Magento whether the
credit memo's ``email_sent`` flag is already set before sending again. An email goes out at most
once per refund unless an operator asks again (``replay --notifications``). Past the attempt cap
with the outcome unknown, attempts only read that flag: the email is failed only once Magento has
said it was not sent. Retries follow ``attempts.AttemptPolicy``.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from refund_worker import metrics
from refund_worker.attempts import DUE_SLACK, AttemptPolicy, pause_on_rate_limit
from refund_worker.errors import PermanentError, RetryableError
from refund_worker.models import utcnow
from refund_worker.ratelimit import CallLimiter, NoLimit, ShopPaused
from refund_worker.refunds import AttemptResult, MagentoAPI, Shop, single_shop, unknown_shop
from refund_worker.schemas import NotificationStatus
from refund_worker.settings import Settings
from refund_worker.store import ClaimedEmail, EmailStore, NotClaimed

log = logging.getLogger(__name__)

_NOT_SENT_BY_MAGENTO = (
    "Magento did not send the email: credit-memo emails are disabled or sent asynchronously by "
    "its cron"
)


class NotificationService:
    """Sends one refund's credit-memo email, at most once."""

    def __init__(
        self,
        store: EmailStore,
        magento: MagentoAPI,
        settings: Settings,
        *,
        limiter: CallLimiter | None = None,
        shops: Mapping[str, Shop] | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.magento = magento
        self.settings = settings
        self.policy = AttemptPolicy.for_emails(settings)
        self.limiter = limiter or NoLimit()
        #: Every shop this worker may send through, by name: an email goes through its refund's.
        self.shops = single_shop(magento, self.limiter, shops)
        self.clock = clock
        self.rng = rng or random.Random()

    def send(self, refund_id: str) -> AttemptResult:
        """Claim the email, check it was not sent already, send it, record the outcome."""
        now = self.clock()
        claim = self.store.claim(
            refund_id,
            now=now,
            due_by=now + DUE_SLACK,
            lease_until=now + timedelta(seconds=self.settings.lease_seconds),
        )
        if isinstance(claim, NotClaimed):
            return AttemptResult(refund_id, claim.status, claim.detail)
        try:
            store_code = _store_code(claim.request_json)
        except ValueError as exc:
            return self._record(
                claim, NotificationStatus.FAILED, f"stored request cannot be read: {exc}"
            )
        shop = self.shops.get(claim.shop)
        if shop is None:
            not_here = RetryableError(unknown_shop(claim.shop, self.shops))
            return self._retry(claim, not_here, unknown=True, limiter=self.limiter)
        magento = shop.magento.recording(claim.calls.append)
        limiter = shop.limiter
        checked = False
        try:
            if claim.attempt > 1:
                limiter.acquire()
                creditmemo = magento.get_creditmemo(claim.creditmemo_id, store_code=store_code)
                checked = True
                if _truthy(creditmemo.get("email_sent")):
                    return self._record(
                        claim, NotificationStatus.SENT, None, "already sent by an earlier attempt"
                    )
                if claim.attempt > self.policy.max_attempts:
                    return self._record(
                        claim,
                        NotificationStatus.FAILED,
                        f"gave up after {claim.attempt - 1} attempts; Magento shows the email "
                        f"was not sent; last error: {claim.last_error}",
                    )
            limiter.acquire()
            if not self._renew_lease(claim):
                log.warning("refund %s: notification lease lost; not sending", refund_id)
                return AttemptResult(refund_id, NotificationStatus.SENDING, "lease lost; not sent")
            sent = magento.send_creditmemo_email(claim.creditmemo_id, store_code=store_code)
        except ShopPaused as exc:  # a 429 or a shop that is down: nothing was sent
            wait = exc.retry_after or 1.0
            return self._record(
                claim,
                NotificationStatus.RETRYING,
                f"shop {claim.shop!r} is paused for {wait:.1f}s; deferred, not counted",
                retry_in=self.policy.paused_delay(wait, self.rng),
                counted=False,
            )
        except PermanentError as exc:
            return self._record(claim, NotificationStatus.FAILED, exc.message)
        except RetryableError as exc:
            unknown = exc.outcome_unknown or (claim.attempt > 1 and not checked)
            return self._retry(claim, exc, unknown=unknown, limiter=limiter)
        if sent:
            return self._record(claim, NotificationStatus.SENT, None)
        return self._record(claim, NotificationStatus.NOT_SENT, _NOT_SENT_BY_MAGENTO)

    def _renew_lease(self, claim: ClaimedEmail) -> bool:
        """Extend the lease right before the send; False if another worker took it over. A
        claim younger than a Magento timeout still has nearly all of its lease: not renewed."""
        now = self.clock()
        if self.policy.lease_covers_call(claim.claimed_at, now):
            return True
        return self.store.renew_lease(
            claim, until=now + timedelta(seconds=self.settings.lease_seconds)
        )

    def _retry(
        self, claim: ClaimedEmail, error: RetryableError, *, unknown: bool, limiter: CallLimiter
    ) -> AttemptResult:
        pause_on_rate_limit(error, limiter)  # Magento's 429: every worker waits for the shop
        if self.policy.exhausted(claim.attempt) and not unknown:
            return self._record(
                claim,
                NotificationStatus.FAILED,
                f"gave up after {claim.attempt} attempts: {error.message}",
            )
        delay = self.policy.retry_delay(claim.attempt, error, self.rng, unknown=False)
        return self._record(claim, NotificationStatus.RETRYING, error.message, retry_in=delay)

    def _record(
        self,
        claim: ClaimedEmail,
        status: NotificationStatus,
        error: str | None,
        detail: str = "",
        *,
        retry_in: float | None = None,
        counted: bool = True,
    ) -> AttemptResult:
        now = self.clock()
        next_at = now + timedelta(seconds=retry_in) if retry_in is not None else None
        recorded = self.store.record(
            claim, status=status, error=error, next_at=next_at, now=now, counted=counted
        )
        metrics.email(status.value, claim.shop)
        if not recorded:
            log.warning(
                "refund %s: notification changed while sending; the next owner decides",
                claim.refund_id,
            )
        if status is NotificationStatus.FAILED:
            log.warning("refund %s: notification failed: %s", claim.refund_id, error)
        return AttemptResult(
            claim.refund_id,
            status.value,
            detail or (error or ""),
            retry_in=retry_in,
            webhooks=tuple(claim.webhooks),
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
