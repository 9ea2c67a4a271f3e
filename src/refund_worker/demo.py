"""``refund-worker demo``: the whole pipeline with no service at all.

A temporary SQLite database, Celery's in-memory broker with a worker in this process, and the
Magento simulator on an ephemeral port. The refunds cover all four Magento services, an
offline-paid invoice routed to RefundOrder, a partial refund with return to stock, a Magento
rejection, a transient 503 that succeeds on retry, and a repeated idempotency key. Two shops: the
simulator serves a second Magento under ``/eu`` (REFUND_WORKER_SHOPS), whose refunds, credit
memos and emails stay in that shop.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery.contrib.testing.worker import start_worker
from rich.table import Table

from refund_worker import intake
from refund_worker.celery_app import ALWAYS_CONSUMED, QUEUE, app, configure
from refund_worker.publishing import CeleryPublisher
from refund_worker.queries import refund_view
from refund_worker.runtime import Runtime, set_runtime
from refund_worker.schemas import SETTLED_STATUSES, RefundReceipt, RefundView
from refund_worker.settings import Settings
from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import running_simulator

DEMO_TOKEN = "demo-integration-token"
#: The demo's second shop, served by the same simulator under ``/eu``.
SECOND_SHOP = "eu"
#: Seconds the whole demo may take before it reports what is still open.
DEADLINE = 25.0


@dataclass(frozen=True)
class Scenario:
    """One refund of the demo and the outcome it should reach."""

    title: str
    request: dict[str, Any]
    expect: str  # "succeeded" or "failed"


@dataclass
class DemoReport:
    """What the demo did, for the CLI to print."""

    rows: list[tuple[Scenario, RefundReceipt, RefundView]] = field(default_factory=list)
    duplicate: RefundReceipt | None = None
    #: "shop:credit memo id" -> emails sent (each shop numbers its own credit memos).
    emails: dict[str, int] = field(default_factory=dict)
    creditmemos: int = 0
    seconds: float = 0.0
    database_path: str | None = None

    @property
    def ok(self) -> bool:
        """Every refund reached its expected outcome and every notified one got one email."""
        outcomes = all(view.status.value == scenario.expect for scenario, _, view in self.rows)
        emails = all(
            self.emails.get(f"{view.shop}:{view.creditmemo_id}", 0) == 1
            for scenario, _, view in self.rows
            if scenario.request.get("notify_customer") and view.status.value == "succeeded"
        )
        return outcomes and emails and self.duplicate is not None and self.duplicate.duplicate

    def table(self) -> Table:
        """The outcomes, one row per refund."""
        table = Table(title="refund-worker demo: outcomes", show_lines=True)
        for column in (
            "scenario",
            "shop",
            "order",
            "service",
            "status",
            "credit memo",
            "tries",
            "outcome / error",
        ):
            table.add_column(column)
        for scenario, _, view in self.rows:
            colour = "green" if view.status.value == scenario.expect else "red"
            table.add_row(
                scenario.title,
                view.shop,
                str(view.order_id),
                view.service or "-",
                f"[{colour}]{view.status.value}[/{colour}]",
                str(view.creditmemo_id or "-"),
                str(view.attempts),
                view.outcome or view.last_error or "",
            )
        return table

    def notifications_table(self) -> Table:
        """Customer emails: the task's status and what Magento's outbox holds."""
        table = Table(title="customer notifications (a separate task each)")
        for column in ("scenario", "notification", "emails in Magento's outbox"):
            table.add_column(column)
        for scenario, _, view in self.rows:
            if not scenario.request.get("notify_customer"):
                continue
            table.add_row(
                scenario.title,
                view.notification_status.value,
                str(self.emails.get(f"{view.shop}:{view.creditmemo_id}", 0)),
            )
        return table

    def summary(self) -> str:
        """One line: counts, duplicates, time."""
        succeeded = sum(view.status.value == "succeeded" for _, _, view in self.rows)
        failed = sum(view.status.value == "failed" for _, _, view in self.rows)
        duplicate = (
            f"repeated key answered with refund {self.duplicate.refund_id} (duplicate)"
            if self.duplicate and self.duplicate.duplicate
            else "repeated key NOT detected"
        )
        verdict = "all as expected" if self.ok else "UNEXPECTED OUTCOMES"
        return (
            f"{succeeded} succeeded, {failed} failed, {self.creditmemos} credit memos in "
            f"Magento; {duplicate}; {self.seconds:.1f}s; {verdict}"
        )


def scenarios(state: SimulatorState) -> list[Scenario]:
    """The demo's refunds, on orders created in the simulator for the purpose."""
    online = state.add_order(
        {
            "payment_method": "braintree",
            "shipping": 10,
            "shipped": True,
            "items": [{"sku": "HOODIE-M", "qty": 2, "price": 52.0}],
        }
    )
    offline = state.add_order(
        {
            "payment_method": "checkmo",
            "shipping": 5,
            "shipped": True,
            "items": [{"sku": "BAG-01", "qty": 1, "price": 34.0}],
        }
    )
    partial = state.add_order(
        {
            "payment_method": "stripe_payments",
            "shipping": 7,
            "items": [
                {"sku": "BAG-02", "qty": 3, "price": 45.0},
                {"sku": "SOCK-02", "qty": 2, "price": 9.5},
            ],
        }
    )
    lowlevel = state.add_order(
        {
            "payment_method": "banktransfer",
            "shipped": True,
            "items": [{"sku": "MUG-01", "qty": 2, "price": 12.0}],
        }
    )
    record = state.add_order(
        {
            "payment_method": "purchaseorder",
            "shipped": True,
            "items": [{"sku": "DESK-01", "qty": 1, "price": 310.0}],
        }
    )
    held = state.add_order(
        {
            "payment_method": "paypal_express",
            "state": "holded",
            "items": [{"sku": "LAMP-01", "qty": 1, "price": 80.0}],
        }
    )
    flaky = state.add_order(
        {
            "payment_method": "cashondelivery",
            "shipped": True,
            "items": [{"sku": "COFFEE-KG", "qty": 2.5, "price": 18.0, "is_qty_decimal": True}],
        }
    )
    state.add_fault(
        {
            "route": "order_refund",
            "kind": "status",
            "status": 503,
            "order_id": flaky["order_id"],
            "count": 1,
        }
    )
    mug = lowlevel["items"][0]["item_id"]
    return [
        Scenario(
            "online card payment, full refund (RefundInvoice, isOnline)",
            {
                "idempotency_key": "demo-online-full",
                "order_id": online["order_id"],
                "notify_customer": True,
                "comment": "Returned unworn",
            },
            "succeeded",
        ),
        Scenario(
            "offline-paid invoice: routed to RefundOrder",
            {
                "idempotency_key": "demo-offline-invoice",
                "order_id": offline["order_id"],
                "invoice_id": offline["invoice_id"],
                "notify_customer": True,
            },
            "succeeded",
        ),
        Scenario(
            "partial refund, back to stock, no shipping",
            {
                "idempotency_key": "demo-partial-stock",
                "order_id": partial["order_id"],
                "items": [{"order_item_id": partial["items"][0]["item_id"], "qty": 1}],
                "return_to_stock": True,
                "notify_customer": True,
            },
            "succeeded",
        ),
        Scenario(
            "caller-built credit memo (CreditmemoManagement)",
            {
                "idempotency_key": "demo-creditmemo",
                "order_id": lowlevel["order_id"],
                "service": "creditmemo",
                "offline_requested": True,
                "creditmemo": {
                    "items": [
                        {
                            "order_item_id": mug,
                            "qty": 1,
                            "price": 12,
                            "base_price": 12,
                            "row_total": 12,
                            "base_row_total": 12,
                        }
                    ],
                    "subtotal": 12,
                    "base_subtotal": 12,
                    "grand_total": 12,
                    "base_grand_total": 12,
                },
            },
            "succeeded",
        ),
        Scenario(
            "record only (CreditmemoRepository, no money moves)",
            {
                "idempotency_key": "demo-record-only",
                "order_id": record["order_id"],
                "service": "record_only",
                "comment": "Refunded by bank transfer",
            },
            "succeeded",
        ),
        Scenario(
            "order on hold: Magento rejects it",
            {"idempotency_key": "demo-on-hold", "order_id": held["order_id"]},
            "failed",
        ),
        Scenario(
            "transient 503, succeeds on retry",
            {
                "idempotency_key": "demo-flaky-503",
                "order_id": flaky["order_id"],
                "items": [{"order_item_id": flaky["items"][0]["item_id"], "qty": "0.5"}],
                "notify_customer": True,
            },
            "succeeded",
        ),
    ]


def second_shop_scenarios(state: SimulatorState) -> list[Scenario]:
    """The second shop's refunds: its own orders, credit memos and emails."""
    order = state.add_order(
        {
            "payment_method": "braintree",
            "shipping": 6,
            "shipped": True,
            "items": [{"sku": "JACKET-EU", "qty": 1, "price": 120.0}],
        }
    )
    return [
        Scenario(
            f"second shop ({SECOND_SHOP}): online refund in its own Magento",
            {
                "idempotency_key": "demo-eu-online",
                "shop": SECOND_SHOP,
                "order_id": order["order_id"],
                "notify_customer": True,
            },
            "succeeded",
        )
    ]


def demo_settings(database_url: str, magento_url: str) -> Settings:
    """Fast timings for a demo: quick backoff, short lease, no shared rate limit; the second
    shop under ``/eu`` of the same simulator."""
    second = {"name": SECOND_SHOP, "url": f"{magento_url}/{SECOND_SHOP}", "token": DEMO_TOKEN,
              "timeout": 3, "rate_limit": 0}
    return Settings(
        broker_url="memory://",
        database_url=database_url,
        shops=[second],
        magento_url=magento_url,
        magento_token=DEMO_TOKEN,
        magento_timeout=3,
        retry_backoff_base=0.5,
        retry_backoff_max=2,
        lease_seconds=20,
        in_doubt_grace_seconds=0.5,
        visibility_timeout=120,
        magento_rate_limit=0,
        _env_file=None,
    )


def _quiet_logs() -> None:
    """The demo prints its own table; the worker's logs would only drown it."""
    for name in ("celery", "kombu", "refund_worker", "httpx"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def run_demo(*, keep: bool = False) -> DemoReport:
    """Run every scenario to its end and report."""
    started = time.monotonic()
    _quiet_logs()
    workdir = Path(tempfile.mkdtemp(prefix="refund-worker-demo-"))
    report = DemoReport(database_path=str(workdir / "demo.db") if keep else None)
    state = SimulatorState(seed="demo", tokens={DEMO_TOKEN: None})
    second = SimulatorState(tokens={DEMO_TOKEN: None})
    try:
        with running_simulator(state, shops={SECOND_SHOP: second}) as simulator:
            settings = demo_settings(f"sqlite:///{workdir / 'demo.db'}", simulator.url)
            configure(app, settings)
            runtime = Runtime.from_settings(settings)
            runtime.check_ready()
            set_runtime(runtime)
            plan = [
                Scenario(s.title, {"shop": "default", **s.request}, s.expect)
                for s in scenarios(state)
            ] + second_shop_scenarios(second)
            publisher = CeleryPublisher(app)
            shops = settings.intake_shops
            with start_worker(
                app,
                # An in-process worker skips the signal that adds these queues to a real one.
                queues=[QUEUE, *ALWAYS_CONSUMED],
                pool="threads",
                concurrency=4,
                perform_ping_check=False,
                loglevel="WARNING",
                shutdown_timeout=10,
            ):
                receipts = [
                    intake.enqueue_refund(
                        s.request, database=runtime.database, publisher=publisher, shops=shops
                    )
                    for s in plan
                ]
                report.duplicate = intake.enqueue_refund(
                    plan[0].request, database=runtime.database, publisher=publisher, shops=shops
                )
                views = _wait(runtime, [r.refund_id for r in receipts], started)
            report.rows = [(s, r, views[r.refund_id]) for s, r in zip(plan, receipts, strict=True)]
            for name, shop_state in (("default", state), (SECOND_SHOP, second)):
                for email in shop_state.emails():
                    key = f"{name}:{int(email.get('creditmemo_id') or 0)}"
                    report.emails[key] = report.emails.get(key, 0) + 1
            report.creditmemos = len(state.creditmemos()) + len(second.creditmemos())
            runtime.close()
            set_runtime(None)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report.seconds = time.monotonic() - started
    return report


def _wait(runtime: Runtime, refund_ids: list[str], started: float) -> dict[str, RefundView]:
    while True:
        with runtime.database.session_scope() as session:
            views = {rid: view for rid in refund_ids if (view := refund_view(session, rid))}
        done = all(
            view.status in SETTLED_STATUSES
            and view.notification_status.value not in ("pending", "sending", "retrying")
            for view in views.values()
        )
        if done or time.monotonic() - started > DEADLINE:
            return views
        time.sleep(0.2)
