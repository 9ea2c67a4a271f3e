"""The yardstick: the refund worker a competent team would write in one day on the same stack.

One Celery task per refund: read the row with the SQLAlchemy ORM, GET the order (and the invoice
when the payment is online), POST the refund to Magento with a ``requests.Session`` (one per
thread), write the outcome with the ORM, and enqueue the customer's email as a task of its own.
Transport errors, 5xx and 429 are retried by Celery (``autoretry_for`` with backoff and jitter);
messages are acknowledged late. There is no claim, no lease, no order lock, no marker in the
credit memo and no reconciliation: a refund whose POST committed in Magento but whose answer was
lost (a 500 after the commit, a worker killed before the outcome was written) is simply sent
again. That is the point of comparison, in ``bench/versus.py`` and ``bench/versus_faults.py``;
nothing here is deliberately slow or secretly clever.

It reads the same environment as the project's worker (``REFUND_WORKER_BROKER_URL``,
``_DATABASE_URL``, ``_MAGENTO_URL``, ``_MAGENTO_TOKEN``, ``_MAGENTO_TIMEOUT``,
``_VISIBILITY_TIMEOUT``) and keeps its state in its own table, ``naive_refunds`` (created by
``create_tables``). Start a worker with::

    PYTHONPATH=bench celery -A naive worker --pool threads --concurrency 16

and submit refunds with ``submit(requests)`` (rows committed first, then one message each).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import requests
from celery import Celery, Task
from sqlalchemy import JSON, Boolean, DateTime, Engine, Integer, String, Text, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

QUEUE = "naive"
REFUND_TASK = "naive.refund"
EMAIL_TASK = "naive.email"
#: Payment methods that cannot be refunded online (Magento's own offline methods).
OFFLINE_METHODS = {"checkmo", "banktransfer", "cashondelivery", "purchaseorder", "free"}
SETTLED = ("succeeded", "failed")

BROKER_URL = os.environ.get("REFUND_WORKER_BROKER_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get("REFUND_WORKER_DATABASE_URL", "sqlite:///naive.db")
MAGENTO_URL = os.environ.get("REFUND_WORKER_MAGENTO_URL", "http://127.0.0.1:8080").rstrip("/")
MAGENTO_TOKEN = os.environ.get("REFUND_WORKER_MAGENTO_TOKEN", "")
MAGENTO_TIMEOUT = float(os.environ.get("REFUND_WORKER_MAGENTO_TIMEOUT", "10"))
#: Celery's Redis default is an hour; a message held by a killed worker comes back after this.
VISIBILITY_TIMEOUT = int(os.environ.get("REFUND_WORKER_VISIBILITY_TIMEOUT", "3600"))
#: One database connection per worker thread, with room to spare.
POOL_SIZE = int(os.environ.get("NAIVE_DB_POOL_SIZE", "20"))

app = Celery("naive", broker=BROKER_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
    broker_connection_retry_on_startup=True,
)


# ---------------------------------------------------------------------------- the table


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class NaiveRefund(Base):
    __tablename__ = "naive_refunds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    order_id: Mapped[int] = mapped_column(Integer, index=True)
    invoice_id: Mapped[int | None] = mapped_column(Integer)
    #: ``items`` ([{order_item_id, qty}]) and ``shipping_amount`` as the caller sent them.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    notify_customer: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    creditmemo_id: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    email_status: Mapped[str | None] = mapped_column(String(16))  # pending | sent | failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None
_lock = threading.Lock()


def sessions() -> sessionmaker[Session]:
    """The process's session factory, made on first use (so after a prefork fork)."""
    global _engine, _sessions
    with _lock:
        if _sessions is None:
            _engine = create_engine(DATABASE_URL, pool_size=POOL_SIZE, max_overflow=10)
            _sessions = sessionmaker(_engine)
        return _sessions


def create_tables(engine: Engine) -> None:
    Base.metadata.create_all(engine)


def submit(
    refund_requests: Sequence[Mapping[str, Any]],
    session_factory: sessionmaker[Session] | None = None,
) -> list[int]:
    """Store the requests, commit, then publish one refund task each; returns the row ids."""
    session_factory = session_factory or sessions()
    with session_factory() as session:
        rows = [
            NaiveRefund(
                idempotency_key=r["idempotency_key"],
                order_id=r["order_id"],
                invoice_id=r.get("invoice_id"),
                payload={k: r[k] for k in ("items", "shipping_amount") if r.get(k) is not None},
                notify_customer=bool(r.get("notify_customer")),
            )
            for r in refund_requests
        ]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
        session.commit()
    for refund_id in ids:
        process_refund.delay(refund_id)
    return ids


# ---------------------------------------------------------------------------- Magento


class MagentoUnavailable(Exception):
    """A 5xx or 429: worth another try."""


RETRY_FOR = (requests.ConnectionError, requests.Timeout, MagentoUnavailable)

_local = threading.local()


def http() -> requests.Session:
    """This thread's session (keep-alive connections are not shared between threads)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.headers.update(
            {"Authorization": f"Bearer {MAGENTO_TOKEN}", "Accept": "application/json"}
        )
        _local.session = session
    return session


def magento(method: str, path: str, body: Any = None) -> Any:
    response = http().request(
        method, f"{MAGENTO_URL}/rest/default/V1/{path}", json=body, timeout=MAGENTO_TIMEOUT
    )
    if response.status_code >= 500 or response.status_code == 429:
        raise MagentoUnavailable(f"{method} {path}: HTTP {response.status_code}")
    if response.status_code >= 400:
        message = response.json().get("message", response.text[:200])
        raise requests.HTTPError(f"{method} {path}: HTTP {response.status_code}: {message}")
    return response.json()


def find_invoice_id(order_id: int) -> int | None:
    found = magento(
        "GET",
        "invoices?searchCriteria[filter_groups][0][filters][0][field]=order_id"
        f"&searchCriteria[filter_groups][0][filters][0][value]={order_id}",
    )
    items = found.get("items") or []
    return int(items[0]["entity_id"]) if items else None


# ---------------------------------------------------------------------------- the tasks


class RefundTask(Task):
    """Marks the row failed once Celery gives up on it (a 4xx, or retries exhausted)."""

    column = "status"

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        with sessions()() as session:
            refund = session.get(NaiveRefund, args[0])
            if refund is not None:
                setattr(refund, self.column, "failed")
                refund.error = f"{type(exc).__name__}: {exc}"[:2000]
                session.commit()


class EmailTask(RefundTask):
    column = "email_status"


@app.task(
    name=REFUND_TASK,
    base=RefundTask,
    bind=True,
    acks_late=True,
    autoretry_for=RETRY_FOR,
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def process_refund(self: Task, refund_id: int) -> None:
    with sessions()() as session:
        refund = session.get(NaiveRefund, refund_id)
        if refund is None or refund.status in SETTLED:
            return
        order = magento("GET", f"orders/{refund.order_id}")
        method = (order.get("payment") or {}).get("method", "")
        body: dict[str, Any] = {"notify": False}
        if refund.payload.get("items"):
            body["items"] = refund.payload["items"]
        if refund.payload.get("shipping_amount") is not None:
            body["arguments"] = {"shipping_amount": refund.payload["shipping_amount"]}
        invoice_id = None
        if method not in OFFLINE_METHODS:
            invoice_id = refund.invoice_id or find_invoice_id(refund.order_id)
        if invoice_id is not None:
            invoice = magento("GET", f"invoices/{invoice_id}")
            if invoice["order_id"] != refund.order_id:
                raise ValueError(f"invoice {invoice_id} is not of order {refund.order_id}")
            creditmemo_id = magento(
                "POST", f"invoice/{invoice_id}/refund", {**body, "isOnline": True}
            )
        else:
            creditmemo_id = magento("POST", f"order/{refund.order_id}/refund", body)
        refund.status = "succeeded"
        refund.creditmemo_id = int(creditmemo_id)
        refund.attempts = self.request.retries + 1
        refund.error = None
        notify = refund.notify_customer
        if notify:
            refund.email_status = "pending"
        session.commit()
    if notify:
        send_email.delay(refund_id)


@app.task(
    name=EMAIL_TASK,
    base=EmailTask,
    bind=True,
    acks_late=True,
    autoretry_for=RETRY_FOR,
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def send_email(self: Task, refund_id: int) -> None:
    with sessions()() as session:
        refund = session.get(NaiveRefund, refund_id)
        if refund is None or refund.email_status == "sent" or refund.creditmemo_id is None:
            return
        magento("POST", f"creditmemo/{refund.creditmemo_id}/emails")
        refund.email_status = "sent"
        session.commit()
