"""Several shops: a refund is acted on only through the shop its row names, for routing, the
refund call, reconciliation and its email; a hostile producer cannot reach another shop; a shop
that is paused or full defers its own refunds (uncounted, uncalled) and never the others'."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import update

from refund_worker.db import Database
from refund_worker.errors import IdempotencyConflict, InvalidRefund
from refund_worker.intake import enqueue_refund
from refund_worker.magento import BearerAuth, CallRecord, MagentoClient
from refund_worker.markers import comment_with_marker, marker_for
from refund_worker.models import Refund, utcnow
from refund_worker.notifications import NotificationService
from refund_worker.ratelimit import LocalGate, OpenGate, ShopGate, ShopPaused
from refund_worker.refunds import MagentoAPI, RefundService, Shop
from refund_worker.settings import ApiKey, Settings
from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import RunningSimulator, running_simulator
from refund_worker.store import EmailStore, RefundStore
from refund_worker.sweeper import find_stranded, mark_published
from tests.services.conftest import TOKEN, FakeClock, Recorder, fast_settings

SHOPS = ("eu", "us")


class _Counted:
    """A shop's client whose every call is noted with the shop's name."""

    def __init__(self, name: str, client: MagentoClient, calls: list[tuple[str, str]]) -> None:
        self._name, self._client, self._calls = name, client, calls

    def recording(self, on_call: Callable[[CallRecord], None]) -> MagentoAPI:
        def record(call: CallRecord) -> None:
            self._calls.append((self._name, call.operation))
            on_call(call)

        return self._client.recording(record)


class _PausedGate:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def enter(self, holder: str, lease_seconds: float) -> float:
        return self.seconds

    def leave(self, holder: str) -> None:
        raise AssertionError("a refund that was never let in never leaves")

    def unavailable(self, longest: float) -> float:
        raise AssertionError("no call was made")


@dataclass
class Shops:
    sim: RunningSimulator
    states: dict[str, SimulatorState]
    database: Database
    settings: Settings
    clock: FakeClock
    publisher: Recorder
    clients: dict[str, MagentoClient]
    calls: list[tuple[str, str]] = field(default_factory=list)
    gates: dict[str, ShopGate] = field(default_factory=dict)

    def shops(self) -> dict[str, Shop]:
        return {
            name: Shop(name, _Counted(name, client, self.calls),
                       gate=self.gates.get(name, OpenGate()))
            for name, client in self.clients.items()
        }

    def refunds(self) -> RefundService:
        return RefundService(RefundStore(self.database), self.clients["eu"], self.settings,
                             shops=self.shops(), clock=self.clock)

    def notifications(self) -> NotificationService:
        return NotificationService(EmailStore(self.database), self.clients["eu"], self.settings,
                                   shops=self.shops(), clock=self.clock)

    def order(self, shop: str, price: float = 20) -> dict[str, Any]:
        return self.states[shop].add_order(
            {"payment_method": "checkmo", "items": [{"sku": "SHIRT", "qty": 1, "price": price}]})

    def enqueue(self, shop: str, order_id: int, **payload: Any) -> str:
        payload.setdefault("idempotency_key", f"key-{len(self.publisher.refunds)}")
        receipt = enqueue_refund({"shop": shop, "order_id": order_id, **payload},
                                 database=self.database, publisher=self.publisher, shops=SHOPS)
        self.clock.now = max(self.clock.now, utcnow())
        return receipt.refund_id

    def row(self, refund_id: str) -> Refund:
        with self.database.session_scope() as session:
            row = session.get(Refund, refund_id)
            assert row is not None
            session.expunge(row)
            return row

    def stored(self) -> int:
        with self.database.session_scope() as session:
            return session.query(Refund).count()


@pytest.fixture
def shops(database_url: str) -> Iterator[Shops]:
    database = Database.from_url(database_url)
    states = {name: SimulatorState(tokens={TOKEN: None}) for name in SHOPS}
    with running_simulator(SimulatorState(tokens={TOKEN: None}), shops=states) as sim:
        clients = {name: MagentoClient(f"{sim.url}/{name}", auth=BearerAuth(TOKEN), timeout=2)
                   for name in SHOPS}
        try:
            yield Shops(sim, states, database, fast_settings(), FakeClock(), Recorder(), clients)
        finally:
            for client in clients.values():
                client.close()
            database.dispose()


def test_the_same_order_id_in_two_shops_is_two_orders(shops: Shops) -> None:
    """Order 1 of eu and order 1 of us: each refund goes to its own shop, neither holds the
    other's order lock, and both may record credit memo 1 (each Magento numbers its own)."""
    eu_order, us_order = shops.order("eu", 20), shops.order("us", 30)
    assert eu_order["order_id"] == us_order["order_id"]
    eu = shops.enqueue("eu", eu_order["order_id"], notify_customer=True)
    us = shops.enqueue("us", us_order["order_id"], notify_customer=True)
    store = RefundStore(shops.database)
    held = store.claim(eu, token="t-eu", now=shops.clock.now, due_by=shops.clock.now,
                       lease_until=shops.clock.now.replace(year=2100))
    assert held.__class__.__name__ == "ClaimedRefund"  # eu's order 1 is locked...
    service = shops.refunds()
    assert service.process(us).status == "succeeded"  # ...and us's order 1 is not
    assert shops.calls
    assert {shop for shop, _ in shops.calls} == {"us"}

    with shops.database.session_scope() as session:  # let eu's attempt go (lease expired)
        session.execute(update(Refund).where(Refund.id == eu).values(
            lease_expires_at=shops.clock.now.replace(year=2000)))
    shops.clock.advance(60)
    assert service.process(eu).status == "succeeded"
    eu_row, us_row = shops.row(eu), shops.row(us)
    assert (eu_row.shop, us_row.shop) == ("eu", "us")
    assert eu_row.creditmemo_id == us_row.creditmemo_id  # credit memo 1 in each shop
    assert [m["grand_total"] for m in shops.states["eu"].creditmemos()] == [20]
    assert [m["grand_total"] for m in shops.states["us"].creditmemos()] == [30]

    notifications = shops.notifications()
    shops.calls.clear()
    assert notifications.send(eu).status == "sent"
    assert shops.calls == [("eu", "creditmemo_emails")]
    assert shops.states["eu"].creditmemos()[0]["email_sent"]
    assert not shops.states["us"].creditmemos()[0].get("email_sent")


def test_a_producer_cannot_reach_another_shop(shops: Shops) -> None:
    eu_order = shops.order("eu")
    eu = shops.enqueue("eu", eu_order["order_id"], idempotency_key="rma-1")
    # Its key again, for the same order id in the other shop: a conflict, never eu's refund.
    with pytest.raises(IdempotencyConflict):
        shops.enqueue("us", eu_order["order_id"], idempotency_key="rma-1")
    # A key held to eu cannot name us, nor a shop that does not exist; nothing is stored.
    settings = fast_settings(shops=[
        {"name": "eu", "url": "http://eu.example.com", "token": "t-1", "timeout": 1},
        {"name": "us", "url": "http://us.example.com", "token": "t-2", "timeout": 1},
    ], magento_url=None)
    eu_only = settings.shops_for(ApiKey(name="eu-erp", sha256="0" * 64, shops=["eu"]))
    for shop in ("us", "../eu", "EU", "nowhere"):
        with pytest.raises(InvalidRefund, match=r"^shop: "):
            enqueue_refund({"idempotency_key": f"x-{shop}", "order_id": 1, "shop": shop},
                           database=shops.database, publisher=shops.publisher, shops=eu_only)
    with pytest.raises(InvalidRefund, match=r"^shop: required, since several shops"):
        enqueue_refund({"idempotency_key": "no-shop", "order_id": 1},
                       database=shops.database, publisher=shops.publisher, shops=SHOPS)
    assert shops.stored() == 1
    assert shops.refunds().process(eu).status == "succeeded"
    assert {shop for shop, _ in shops.calls} == {"eu"}
    assert shops.states["us"].creditmemos() == []


def test_a_tampered_row_acts_on_no_shop(shops: Shops) -> None:
    """The row says us, its stored request says eu (a write that bypassed intake): neither
    shop is called; a shop this worker does not know is deferred, never guessed."""
    eu = shops.enqueue("eu", shops.order("eu")["order_id"])
    with shops.database.session_scope() as session:
        session.execute(update(Refund).where(Refund.id == eu).values(shop="us"))
    result = shops.refunds().process(eu)
    assert result.status == "failed"
    assert "names shop 'eu' but the refund is of shop 'us'" in result.detail
    assert shops.calls == []

    stranger = shops.enqueue("eu", shops.order("eu")["order_id"])
    with shops.database.session_scope() as session:
        session.execute(update(Refund).where(Refund.id == stranger).values(shop="uk"))
    deferred = shops.refunds().process(stranger)
    assert (deferred.status, shops.calls) == ("retrying", [])
    row = shops.row(stranger)
    assert row.attempts == 0
    assert "shop 'uk' is not configured on this worker" in row.last_error


def test_reconciliation_looks_only_in_the_refunds_own_shop(shops: Shops) -> None:
    """An eu refund's outcome is unknown (503); a credit memo in us carries its exact marker
    (someone with access to us wrote it). eu's refund never adopts it: it searches eu only,
    finds nothing, and refunds in eu."""
    order = shops.order("eu", 20)
    shops.order("us", 20)
    shops.states["eu"].add_fault(
        {"route": "order_refund", "kind": "status", "status": 503, "count": 1})
    eu = shops.enqueue("eu", order["order_id"])
    service = shops.refunds()
    assert service.process(eu).status == "retrying"
    row = shops.row(eu)
    assert row.in_doubt
    item = shops.states["us"].add_order(
        {"payment_method": "checkmo", "items": [{"sku": "X", "qty": 1, "price": 20}]})
    forged = shops.states["us"].refund_order(item["order_id"], {
        "comment": {"comment": comment_with_marker(marker_for(eu, row.marker_token), None),
                    "is_visible_on_front": 0}})
    shops.calls.clear()
    shops.clock.advance(3600)
    assert service.process(eu).status == "succeeded"
    assert {shop for shop, _ in shops.calls} == {"eu"}
    assert ("eu", "creditmemo_search") in shops.calls
    eu_memos = shops.states["eu"].creditmemos()
    assert [memo["entity_id"] for memo in eu_memos] == [shops.row(eu).creditmemo_id]
    assert shops.row(eu).outcome
    assert "reconciled" not in shops.row(eu).outcome
    assert forged in [memo["entity_id"] for memo in shops.states["us"].creditmemos()]


def test_a_paused_or_full_shop_defers_its_own_refunds_only(shops: Shops) -> None:
    eu = shops.enqueue("eu", shops.order("eu")["order_id"])
    us = shops.enqueue("us", shops.order("us")["order_id"])
    shops.gates["eu"] = _PausedGate(12.0)
    service = shops.refunds()
    paused = service.process(eu)
    assert paused.status == "retrying"
    assert paused.retry_in is not None
    # Spread over twice the pause, capped by the longest countdown (1.5 s in these settings).
    assert paused.retry_in == shops.settings.longest_countdown
    assert "paused" in paused.detail
    assert service.process(us).status == "succeeded"
    assert {shop for shop, _ in shops.calls} == {"us"}
    row = shops.row(eu)
    assert (row.status, row.attempts, row.lease_token) == ("retrying", 0, None)

    full = LocalGate(1)
    assert full.enter("another-refund", 60) == 0
    shops.gates["eu"] = full
    shops.clock.advance(60)
    service = shops.refunds()
    deferred = service.process(eu)
    assert (deferred.status, shops.row(eu).attempts) == ("retrying", 0)
    assert "most refunds in flight" in deferred.detail
    full.leave("another-refund")
    shops.clock.advance(60)
    assert service.process(eu).status == "succeeded"
    assert shops.row(eu).attempts == 1
    assert full.enter("next", 60) == 0  # the finished attempt gave its slot back


def test_a_shop_that_is_down_pauses_itself_and_not_the_others(shops: Shops) -> None:
    """eu answers 503: that attempt counts, and eu is paused, so its next refund is deferred
    without a call or an attempt; us goes on."""
    shops.gates["eu"] = LocalGate(None)
    shops.states["eu"].add_fault({"route": "order_get", "kind": "status", "status": 503})
    first = shops.enqueue("eu", shops.order("eu")["order_id"])
    second = shops.enqueue("eu", shops.order("eu")["order_id"])
    us = shops.enqueue("us", shops.order("us")["order_id"])
    service = shops.refunds()
    assert service.process(first).status == "retrying"
    assert shops.row(first).attempts == 1
    calls = len(shops.calls)
    deferred = service.process(second)
    assert "paused" in deferred.detail
    assert shops.row(second).attempts == 0
    assert len(shops.calls) == calls
    assert service.process(us).status == "succeeded"


def test_a_refund_put_off_for_a_sweep_interval_or_more_is_parked_for_the_sweep(
    shops: Shops,
) -> None:
    """A shop down for long, beat's sweep running: its refunds are put off with no retry
    message (the sweep publishes each once due); a put-off shorter than a sweep interval, or
    made while no sweep runs, keeps its retry message."""
    shops.gates["eu"] = LocalGate(None)
    shops.states["eu"].add_fault({"route": "order_get", "kind": "status", "status": 503})
    first = shops.enqueue("eu", shops.order("eu")["order_id"])
    parked = shops.enqueue("eu", shops.order("eu")["order_id"])
    kept = shops.enqueue("eu", shops.order("eu")["order_id"])
    unswept = shops.enqueue("eu", shops.order("eu")["order_id"])
    shops.settings = fast_settings(sweep_interval_seconds=1.0)  # put-offs of 1-1.5 s: parked
    service = shops.refunds()
    assert service.process(first).status == "retrying"  # the 503 that pauses eu (2 s)
    without_sweep = service.process(unswept)  # no heartbeat seen: a parked one would strand
    assert without_sweep.retry_in is not None
    assert shops.row(unswept).published_at is not None
    service.sweep = _Swept()
    result = service.process(parked)
    assert (result.status, result.retry_in) == ("retrying", None)
    assert "parked" in result.detail
    row = shops.row(parked)
    assert (row.status, row.attempts, row.published_at) == ("queued", 0, None)
    assert row.next_attempt_at > shops.clock.now
    assert find_stranded(shops.database, shops.settings, shops.clock.now).refunds == []
    found = find_stranded(shops.database, shops.settings, row.next_attempt_at)
    assert found.refunds == [parked]  # due: published by the sweep, the row's only message
    mark_published(shops.database, found, row.next_attempt_at)
    assert shops.row(parked).published_at is not None

    service.settings = fast_settings(sweep_interval_seconds=60)
    kept_result = service.process(kept)
    assert kept_result.retry_in is not None
    assert "parked" not in kept_result.detail
    assert shops.row(kept).published_at is not None


class _Swept:
    """Beat's sweep runs."""

    def alive(self) -> bool:
        return True


class _PausedLimiter:
    """The shop's pause begins between the gate and the first call (another worker's 503)."""

    def acquire(self) -> None:
        raise ShopPaused("the shop is paused for 4.0s", retry_after=4.0)

    def pause(self, seconds: float) -> None:
        raise AssertionError("nothing was answered")


def test_a_pause_that_begins_after_the_gate_defers_without_sleeping(shops: Shops) -> None:
    refund = shops.enqueue("eu", shops.order("eu")["order_id"])
    service = shops.refunds()
    service.shops["eu"] = Shop("eu", service.shops["eu"].magento, _PausedLimiter())
    result = service.process(refund)
    assert result.status == "retrying"
    assert "paused for 4.0s before the call" in result.detail
    row = shops.row(refund)
    assert (row.status, row.attempts, row.lease_token) == ("retrying", 0, None)
    assert shops.calls == []


def test_an_email_of_a_paused_shop_is_deferred_not_counted(shops: Shops) -> None:
    """A pause costs an email nothing: a shop down for a minute must not use up its attempts
    (the fault run found emails given up "after 10 attempts" of a paused shop)."""
    refund = shops.enqueue("eu", shops.order("eu")["order_id"], notify_customer=True)
    assert shops.refunds().process(refund).status == "succeeded"
    calls = len(shops.calls)
    service = shops.notifications()
    paused = Shop("eu", service.shops["eu"].magento, _PausedLimiter())
    service.shops["eu"] = paused
    for _ in range(shops.settings.notification_max_attempts + 2):
        result = service.send(refund)
        assert result.status == "retrying"
        assert "paused for 4.0s; deferred, not counted" in result.detail
        assert result.retry_in is not None
        assert result.retry_in > 0
        shops.clock.advance(result.retry_in + 1)
    row = shops.row(refund)
    assert (row.notification_status, row.notification_attempts) == ("retrying", 0)
    assert len(shops.calls) == calls

    service = shops.notifications()
    assert service.send(refund).status == "sent"
    assert shops.row(refund).notification_attempts == 1
