"""The refund domain service: claim → act → record, through ``store``; never SQL, never Celery.

One attempt is three short steps, never one long transaction:

1. **Claim** (``RefundStore.claim``): the row is ``processing`` under a lease, with the order's
   lock (at most one refund per order in flight).
2. **Act** (no transaction open): if an earlier attempt may have reached Magento, look for the
   refund's marker in the order's credit memos first (``reconcile``); otherwise route, renew the
   lease (fenced by its token: a lost lease means no call), and make the one money-moving call.
3. **Record** (``RefundStore.record_*``): the outcome, the audit rows, the order lock released.

A worker killed anywhere leaves the row ``processing``; once its lease expires the next delivery
reconciles before it could ever call Magento again. A refund whose outcome is unknown is never
failed: past the attempt cap its attempts only look for the marker, and it fails only once
Magento has answered that search without it. Retries follow ``attempts.AttemptPolicy``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from refund_worker import metrics, order_shapes, reconcile
from refund_worker.attempts import DUE_SLACK, AttemptPolicy, order_busy_delay, pause_on_rate_limit
from refund_worker.errors import (
    AttentionRequired,
    MagentoRejected,
    MagentoUnavailable,
    PermanentError,
    RefundWorkerError,
    RetryableError,
)
from refund_worker.heartbeat import NoSweep, SweepWatch
from refund_worker.magento import CallRecord
from refund_worker.markers import marker_for
from refund_worker.models import utcnow
from refund_worker.ratelimit import (
    FULL,
    CallLimiter,
    NoLimit,
    OpenGate,
    ShopGate,
    ShopPaused,
)
from refund_worker.routing import RefundCall, needs_invoices, order_items_by_id, plan_refund
from refund_worker.schemas import (
    DEFAULT_SHOP,
    ErrorKind,
    RefundRequest,
    RefundStatus,
    Service,
)
from refund_worker.settings import Settings
from refund_worker.store import (
    ClaimedRefund,
    CreditmemoTaken,
    NotClaimed,
    OrderBusy,
    RefundStore,
    Renewal,
    Resolution,
)

log = logging.getLogger(__name__)


class MagentoAPI(Protocol):
    """The part of ``refund_worker.magento.MagentoClient`` the services use."""

    def recording(self, on_call: Callable[[CallRecord], None]) -> MagentoAPI:
        """The same client, reporting each call to ``on_call`` (one per attempt: the audit)."""
        ...

    def get_order(self, order_id: int, *, store_code: str | None = None) -> dict[str, Any]: ...
    def find_orders(
        self, *, increment_id: str, store_code: str | None = None
    ) -> list[dict[str, Any]]: ...
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


@dataclass(frozen=True)
class Shop:
    """One Magento installation as the services reach it: its client (URL, credentials, default
    store code, timeout), its shared call limit, and its gate (its pause and its cap on refunds in
    flight). A refund is only ever acted on through the shop its row names."""

    name: str
    magento: MagentoAPI
    limiter: CallLimiter = field(default_factory=NoLimit)
    gate: ShopGate = field(default_factory=OpenGate)


def single_shop(
    magento: MagentoAPI, limiter: CallLimiter | None, shops: Mapping[str, Shop] | None
) -> dict[str, Shop]:
    """``shops``, or the one ``default`` shop made of ``magento`` and ``limiter``."""
    if shops is not None:
        return dict(shops)
    return {DEFAULT_SHOP: Shop(DEFAULT_SHOP, magento, limiter or NoLimit())}


def unknown_shop(shop: str, known: Mapping[str, Shop]) -> str:
    """Why a refund of ``shop`` is not acted on by this worker."""
    return (
        f"shop {shop!r} is not configured on this worker (it knows {', '.join(known) or 'none'}); "
        "nothing was sent: it is retried once the shop is configured"
    )


@dataclass(frozen=True)
class AttemptResult:
    """What one delivery of a task achieved, for the thin task to act on."""

    refund_id: str
    status: str
    detail: str = ""
    retry_in: float | None = None  # seconds until the task should run again
    publish_notification: bool = False
    error: RefundWorkerError | None = None  # a permanent failure, re-raised so Flower shows it
    #: Webhook deliveries the outcome wrote to the outbox: their messages go out after it.
    webhooks: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Success:
    creditmemo_id: int
    reconciled: bool  # found in Magento: nothing was sent
    outcome: str


class _LeaseLost(Exception):
    """Raised when another worker took this refund over before the money-moving call."""


class _OrderBusy(Exception):
    """Raised when the order an increment id resolved to has another refund in flight."""


_REFUND_OPERATIONS = frozenset(
    {"invoice_refund", "order_refund", "creditmemo_refund", "creditmemo_save"}
)


class RefundService:
    """Processes one refund delivery at a time; safe to run in many threads and processes."""

    def __init__(
        self,
        store: RefundStore,
        magento: MagentoAPI,
        settings: Settings,
        *,
        limiter: CallLimiter | None = None,
        shops: Mapping[str, Shop] | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        sweep: SweepWatch | None = None,
    ) -> None:
        self.store = store
        self.magento = magento
        #: Whether beat's sweep runs: only then is a long put-off parked (``_put_off``).
        self.sweep = sweep or NoSweep()
        self.settings = settings
        self.policy = AttemptPolicy.for_refunds(settings)
        self.limiter = limiter or NoLimit()
        #: Every shop this worker may act on, by name (``magento`` alone: the ``default`` one).
        self.shops = single_shop(magento, self.limiter, shops)
        #: Shops this process saw paused, until when (``time.monotonic``): their refunds are
        #: put off before any claim (``_put_off``); empty, nothing extra runs.
        self._paused: dict[str, float] = {}
        self._paused_lock = threading.Lock()
        self.clock = clock
        self.rng = rng or random.Random()
        self.extra_offline = frozenset(settings.offline_payment_methods)

    def process(self, refund_id: str) -> AttemptResult:
        """Run one attempt of ``refund_id``: claim, reconcile or refund, record."""
        now = self.clock()
        if self._paused:
            put_off = self._put_off(refund_id, now)
            if put_off is not None:
                return put_off
        claim = self.store.claim(
            refund_id,
            token=str(uuid.uuid4()),
            now=now,
            due_by=now + DUE_SLACK,
            lease_until=now + timedelta(seconds=self.settings.lease_seconds),
        )
        if isinstance(claim, NotClaimed):
            metrics.refund_attempt(None, "skipped")
            return AttemptResult(refund_id, claim.status, claim.detail)
        if isinstance(claim, OrderBusy):
            metrics.refund_attempt(None, "order_busy")
            return AttemptResult(
                refund_id,
                RefundStatus.QUEUED,
                f"order {claim.order_id} has a refund in flight",
                retry_in=order_busy_delay(self.rng),
            )
        shop = self.shops.get(claim.shop)
        if shop is None:
            return self._defer(claim, self.policy.backoff_max, unknown_shop(claim.shop, self.shops))
        wait = shop.gate.enter(claim.refund_id, self.settings.lease_seconds)
        if wait == FULL:
            return self._defer(
                claim,
                order_busy_delay(self.rng),
                None,
                f"shop {shop.name!r} has its most refunds in flight; deferred, not attempted",
            )
        if wait > 0:  # spread over twice the pause: the shop is not hit by all at once after it
            self._note_paused(shop.name, wait)
            return self._defer(
                claim,
                self.policy.paused_delay(wait, self.rng),
                None,
                f"shop {shop.name!r} is paused for {wait:.1f}s (a 429, or it is down); deferred",
            )
        try:
            return self._admitted(claim, shop)
        finally:
            shop.gate.leave(claim.refund_id)

    def _note_paused(self, shop: str, seconds: float) -> None:
        with self._paused_lock:
            until = time.monotonic() + seconds
            self._paused[shop] = max(until, self._paused.get(shop, 0.0))

    def _put_off(self, refund_id: str, now: datetime) -> AttemptResult | None:
        """While a shop is paused, its refunds are put off with one statement (no claim, no
        order lock, nothing counted): a sick shop costs the workers little. One put off for a
        sweep interval or more, while the sweep runs, is parked: no retry message, the sweep
        publishes it when due."""
        with self._paused_lock:
            moment = time.monotonic()
            for name in [name for name, until in self._paused.items() if until <= moment]:
                del self._paused[name]
            paused = dict(self._paused)
        for name, until in paused.items():
            wait = until - time.monotonic()
            if wait <= 0:
                continue
            delay = self.policy.paused_delay(wait, self.rng)
            park = delay >= self.settings.sweep_interval_seconds and self.sweep.alive()
            if self.store.defer_if_of_shop(
                refund_id,
                shop=name,
                next_attempt_at=now + timedelta(seconds=delay),
                now=now,
                due_by=now + DUE_SLACK,
                park=park,
            ):
                return AttemptResult(
                    refund_id,
                    RefundStatus.RETRYING,
                    f"shop {name!r} is paused for {wait:.1f}s; put off, not attempted"
                    + (" (parked: the sweep publishes it when due)" if park else ""),
                    retry_in=None if park else delay,
                )
        return None

    def _admitted(self, claim: ClaimedRefund, shop: Shop) -> AttemptResult:
        try:
            request = RefundRequest.model_validate_json(claim.request_json)
        except ValidationError as exc:
            unreadable = PermanentError(_unreadable(exc))
            result = self._fail(claim, None, unreadable, in_doubt=claim.was_in_doubt)
        else:
            if (request.shop or DEFAULT_SHOP) != claim.shop:  # the row and its request disagree
                mismatch = PermanentError(
                    f"the stored request names shop {request.shop!r} but the refund is of shop "
                    f"{claim.shop!r}; nothing was sent to either"
                )
                result = self._fail(claim, request, mismatch, in_doubt=claim.was_in_doubt)
            else:
                result = self._attempt(claim, request, shop)
        if claim.webhooks:
            result = replace(result, webhooks=tuple(claim.webhooks))
        return result

    def _defer(
        self, claim: ClaimedRefund, delay: float, reason: str | None, detail: str | None = None
    ) -> AttemptResult:
        """Give the claim back uncalled and uncounted; the task comes back in ``delay`` s."""
        delay = min(delay, self.policy.longest_countdown)
        now = self.clock()
        held = self.store.record_deferral(
            claim, next_attempt_at=now + timedelta(seconds=delay), reason=reason, now=now
        )
        if not held:
            metrics.refund_attempt(claim.service, "lease_lost", claim.shop)
            return AttemptResult(claim.refund_id, RefundStatus.PROCESSING, "lease lost; deferred")
        metrics.refund_attempt(claim.service, "deferred", claim.shop)
        return AttemptResult(
            claim.refund_id, RefundStatus.RETRYING, detail or reason or "deferred", retry_in=delay
        )

    def _attempt(self, claim: ClaimedRefund, request: RefundRequest, shop: Shop) -> AttemptResult:
        magento = shop.magento.recording(claim.calls.append)
        limiter = shop.limiter
        try:
            success = self._act(claim, request, magento, limiter)
        except _LeaseLost:
            log.warning(
                "refund %s: lease lost before the refund call; not calling", claim.refund_id
            )
            metrics.refund_attempt(claim.service, "lease_lost", claim.shop)
            return AttemptResult(
                claim.refund_id, RefundStatus.PROCESSING, "lease lost; not called"
            )
        except _OrderBusy as exc:  # resolved and stored; its lock is another refund's for now
            return self._defer(
                claim, order_busy_delay(self.rng), None, f"order {exc} has a refund in flight"
            )
        except ShopPaused as exc:  # paused between the gate and a call: no money call was made
            wait = exc.retry_after or 1.0
            self._note_paused(shop.name, wait)
            return self._defer(
                claim,
                self.policy.paused_delay(wait, self.rng),
                None,
                f"shop {shop.name!r} was paused for {wait:.1f}s before the call; deferred",
            )
        except AttentionRequired as exc:
            return self._attention(claim, request, exc)
        except PermanentError as exc:
            return self._fail(claim, request, exc)
        except RetryableError as exc:
            pause_on_rate_limit(exc, limiter)  # Magento's 429, on any call: the shop waits
            if isinstance(exc, MagentoUnavailable):  # the shop is down: its refunds hold back
                paused = shop.gate.unavailable(self.policy.longest_countdown)
                if paused > 0:
                    self._note_paused(shop.name, paused)
            return self._retry(claim, request, exc)
        except Exception as exc:  # a bug or odd data must fail this refund, not loop forever
            log.exception("refund %s: unexpected error", claim.refund_id)
            unexpected = PermanentError(f"unexpected error: {type(exc).__name__}: {exc}")
            in_doubt = claim.was_in_doubt or _reached_refund_call(claim.calls)
            return self._fail(claim, request, unexpected, in_doubt=in_doubt)
        return self._succeed(claim, request, success)

    # -- act (no transaction open) -----------------------------------------------------------

    def _act(
        self,
        claim: ClaimedRefund,
        request: RefundRequest,
        magento: MagentoAPI,
        limiter: CallLimiter,
    ) -> _Success:
        """Reconcile, or route and refund, in the refund's own shop. Raises on failure."""
        if claim.order_id is None:
            self._resolve_order(claim, request, magento, limiter)
        assert claim.order_id is not None
        request = request.for_order(claim.order_id) if request.order_id is None else request
        if claim.was_in_doubt:
            found = self._reconcile(claim, request, magento, limiter)
            if found is not None:
                return found
        if claim.attempt > self.policy.max_attempts:  # the outcome was unknown; it is not now
            raise PermanentError(
                f"gave up after {claim.attempt - 1} attempts; Magento has no credit memo "
                f"carrying this refund's marker, so nothing was refunded; last error: "
                f"{claim.last_error}"
            )
        call = self._plan(claim, request, magento, limiter)
        claim.service = call.service.value
        limiter.acquire()
        self._renew_lease(claim)
        try:
            creditmemo_id = _execute(magento, call, request.store_code)
        except MagentoRejected:
            # A slow earlier attempt may have landed since the search: Magento then refuses a
            # full refund ("closed", "nothing left"). Look once more before calling it a failure.
            if claim.was_in_doubt:
                found = self._reconcile(claim, request, magento, limiter)
                if found is not None:
                    return found
            raise
        return _Success(creditmemo_id, reconciled=False, outcome=call.description)

    def _resolve_order(
        self,
        claim: ClaimedRefund,
        request: RefundRequest,
        magento: MagentoAPI,
        limiter: CallLimiter,
    ) -> None:
        """Find the order ``request.order_increment_id`` names, in the refund's own shop, and
        store it with the order's lock (once: later attempts read it from the row). No order,
        or several (increment ids are unique per store view only), fails the refund."""
        increment_id = request.order_increment_id
        assert increment_id is not None  # a request has an order id or an increment id
        limiter.acquire()
        found = magento.find_orders(increment_id=increment_id, store_code=request.store_code)
        ids = sorted({int(order["entity_id"]) for order in found if order.get("entity_id")})
        if not ids:
            raise PermanentError(
                f"order_increment_id: no order with increment id {increment_id!r} in shop "
                f"{claim.shop!r}; nothing was refunded"
            )
        if len(ids) > 1:
            stores = ", ".join(
                f"order {order.get('entity_id')} (store {order.get('store_id')})"
                for order in sorted(found, key=lambda o: int(o.get("entity_id") or 0))
            )
            raise PermanentError(
                f"order_increment_id: {len(ids)} orders have increment id {increment_id!r} in "
                f"shop {claim.shop!r} ({stores}); send order_id to say which; nothing was "
                "refunded"
            )
        now = self.clock()
        until = now + timedelta(seconds=self.settings.lease_seconds)
        resolution = self.store.resolve_order(claim, ids[0], now=now, until=until)
        if resolution is Resolution.LEASE_LOST:
            raise _LeaseLost(claim.refund_id)
        log.info("refund %s: increment id %s is order %s", claim.refund_id, increment_id, ids[0])
        if resolution is Resolution.ORDER_BUSY:
            raise _OrderBusy(ids[0])

    def _reconcile(
        self,
        claim: ClaimedRefund,
        request: RefundRequest,
        magento: MagentoAPI,
        limiter: CallLimiter,
    ) -> _Success | None:
        """The credit memo an earlier attempt created (it carries the marker and fits the
        request), if any; ``AttentionRequired`` when what carries the marker does not fit."""
        try:
            found = self._search_marker(claim, request, magento, limiter)
        except AttentionRequired:
            metrics.reconciliation("needs_attention", claim.shop)
            raise
        except Exception:
            metrics.reconciliation("error", claim.shop)
            raise
        metrics.reconciliation("not_found" if found is None else "found", claim.shop)
        return found

    def _search_marker(
        self,
        claim: ClaimedRefund,
        request: RefundRequest,
        magento: MagentoAPI,
        limiter: CallLimiter,
    ) -> _Success | None:
        skew = timedelta(seconds=self.settings.reconcile_clock_skew_seconds)
        limiter.acquire()
        creditmemos = magento.search_creditmemos(
            order_id=request.resolved_order_id,
            created_from=claim.first_attempt_at - skew,
            store_code=request.store_code,
        )
        marker = marker_for(claim.refund_id, claim.marker_token)
        matches = reconcile.with_marker(creditmemos, marker)
        if not matches:
            return None
        order_items = None
        if request.items is not None or request.creditmemo is not None:
            # Tells a configurable's or bundle's child rows from items nobody asked for.
            limiter.acquire()
            order = magento.get_order(request.resolved_order_id, store_code=request.store_code)
            order_items = order_items_by_id(order)
            request = order_shapes.as_magento_sees_it(request, order)  # the lines it was sent
        match = reconcile.choose(request, matches, order_items)
        assert match is not None  # there were matches
        return _Success(
            match.creditmemo_id,
            reconciled=True,
            outcome=f"reconciled: credit memo {match.creditmemo_id} from an earlier attempt "
            "carries this refund's marker; not refunded again",
        )

    def _renew_lease(self, claim: ClaimedRefund) -> None:
        """Extend the lease and the order lock right before the call, or refuse to call.

        Fenced by the lease token, so a worker slow enough to lose its lease (limiter waits, a
        stalled thread) never calls; one that renews owns the refund for a full lease from the
        call on. A claim younger than a Magento timeout (the usual case) is not renewed: one
        transaction less per refund (``AttemptPolicy.lease_covers_call``).
        """
        now = self.clock()
        if self.policy.lease_covers_call(claim.claimed_at, now):
            return
        until = now + timedelta(seconds=self.settings.lease_seconds)
        renewal = self.store.renew_lease(claim, now=now, until=until)
        if renewal is Renewal.LEASE_LOST:
            raise _LeaseLost(claim.refund_id)
        if renewal is Renewal.ORDER_LOCK_LOST:
            raise RetryableError(
                f"order {claim.order_id}: another refund took over the order lock before the "
                "refund call; not called"
            )

    def _plan(
        self,
        claim: ClaimedRefund,
        request: RefundRequest,
        magento: MagentoAPI,
        limiter: CallLimiter,
    ) -> RefundCall:
        store = request.store_code
        order: dict[str, Any] = {}
        invoices: list[dict[str, Any]] = []
        if request.chosen_service is not Service.CREDITMEMO:
            limiter.acquire()
            order = magento.get_order(request.resolved_order_id, store_code=store)
            if needs_invoices(request, order, self.extra_offline):
                limiter.acquire()
                if request.invoice_id is not None:
                    invoices = [magento.get_invoice(request.invoice_id, store_code=store)]
                else:
                    invoices = magento.search_invoices(
                        order_id=request.resolved_order_id, store_code=store
                    )
        return plan_refund(
            request,
            marker=marker_for(claim.refund_id, claim.marker_token),
            order=order,
            invoices=invoices,
            extra_offline=self.extra_offline,
        )

    # -- record ------------------------------------------------------------------------------

    def _succeed(
        self, claim: ClaimedRefund, request: RefundRequest, success: _Success
    ) -> AttemptResult:
        try:
            recorded = self.store.record_success(
                claim,
                creditmemo_id=success.creditmemo_id,
                reconciled=success.reconciled,
                outcome=success.outcome,
                now=self.clock(),
            )
        except CreditmemoTaken as taken:  # one credit memo, one refund: never two successes
            found = AttentionRequired(f"{taken}; this refund found it too ({success.outcome})")
            return self._attention(claim, request, found)
        if not recorded:
            metrics.refund_attempt(claim.service, "skipped", claim.shop)
            return AttemptResult(
                claim.refund_id, RefundStatus.SUCCEEDED, "already recorded by another attempt"
            )
        metrics.refund_attempt(claim.service, "succeeded", claim.shop)
        log.info("refund %s succeeded: credit memo %s", claim.refund_id, success.creditmemo_id)
        return AttemptResult(
            claim.refund_id,
            RefundStatus.SUCCEEDED,
            success.outcome,
            publish_notification=request.notify_customer,
        )

    def _fail(
        self,
        claim: ClaimedRefund,
        request: RefundRequest | None,
        error: PermanentError,
        *,
        in_doubt: bool | None = None,
        kind: ErrorKind = ErrorKind.PERMANENT,
    ) -> AttemptResult:
        _describe(error, claim, request)
        if in_doubt is None:
            # A definitive answer to this attempt's call settles any earlier doubt, since the
            # reconcile search ran first; a rejection while planning leaves the doubt as it was.
            in_doubt = claim.was_in_doubt and not _reached_refund_call(claim.calls)
        self.store.record_failure(
            claim,
            error=error.message,
            kind=kind,
            http_status=error.http_status,
            in_doubt=in_doubt,
            now=self.clock(),
        )
        metrics.refund_attempt(claim.service, "failed", claim.shop)
        log.warning("refund %s failed permanently: %s", claim.refund_id, error.message)
        return AttemptResult(claim.refund_id, RefundStatus.FAILED, error.message, error=error)

    def _retry(
        self, claim: ClaimedRefund, request: RefundRequest, error: RetryableError
    ) -> AttemptResult:
        unknown = error.outcome_unknown or (
            claim.was_in_doubt and not _reached_refund_call(claim.calls)
        )
        # Out of attempts: fail, unless Magento may have refunded; then keep looking for the
        # marker (attempts past the cap only reconcile) and settle on what a search finds.
        if self.policy.exhausted(claim.attempt) and not unknown:
            gave_up = PermanentError(
                f"gave up after {claim.attempt} attempts; last error: {error.message}",
                http_status=error.http_status,
            )
            return self._fail(claim, request, gave_up, in_doubt=False, kind=ErrorKind.RETRYABLE)
        delay = self.policy.retry_delay(claim.attempt, error, self.rng, unknown=unknown)
        now = self.clock()
        self.store.record_retry(
            claim,
            error=error.message,
            http_status=error.http_status,
            in_doubt=unknown,
            next_attempt_at=now + timedelta(seconds=delay),
            last_call_at=_refund_call_started(claim.calls, now),
            now=now,
        )
        metrics.refund_attempt(claim.service, "retrying", claim.shop)
        log.info("refund %s will retry in %.1fs: %s", claim.refund_id, delay, error.message)
        return AttemptResult(claim.refund_id, RefundStatus.RETRYING, error.message, retry_in=delay)

    def _attention(
        self, claim: ClaimedRefund, request: RefundRequest, error: AttentionRequired
    ) -> AttemptResult:
        _describe(error, claim, request)
        self.store.record_attention(claim, reason=error.message, now=self.clock())
        metrics.refund_attempt(claim.service, "needs_attention", claim.shop)
        log.error("refund %s needs attention: %s", claim.refund_id, error.message)
        return AttemptResult(
            claim.refund_id, RefundStatus.NEEDS_ATTENTION, error.message, error=error
        )


def _describe(
    error: RefundWorkerError, claim: ClaimedRefund, request: RefundRequest | None
) -> None:
    """Name the refund on the error Flower shows."""
    error.refund_id = claim.refund_id
    error.idempotency_key = request.idempotency_key if request is not None else None


def _unreadable(exc: ValidationError) -> str:
    fields = ", ".join(".".join(map(str, e["loc"])) or "request" for e in exc.errors())
    return f"stored request cannot be processed ({fields}): {exc.errors()[0]['msg']}"


def _reached_refund_call(calls: list[CallRecord]) -> bool:
    return any(call.operation in _REFUND_OPERATIONS for call in calls)


def _refund_call_started(calls: list[CallRecord], default: datetime) -> datetime:
    for call in calls:
        if call.operation in _REFUND_OPERATIONS:
            return default - timedelta(milliseconds=call.duration_ms)
    return default


def _execute(magento: MagentoAPI, call: RefundCall, store: str | None) -> int:
    if call.service is Service.INVOICE:
        assert call.target_id is not None
        return magento.refund_invoice(call.target_id, call.body, store_code=store)
    if call.service is Service.ORDER:
        assert call.target_id is not None
        return magento.refund_order(call.target_id, call.body, store_code=store)
    if call.service is Service.CREDITMEMO:
        return int(magento.refund_creditmemo(call.body, store_code=store)["entity_id"])
    return int(magento.save_creditmemo(call.body, store_code=store)["entity_id"])
