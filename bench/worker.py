"""Start a benchmark worker: ``refund_worker.celery_app.app`` plus a no-op task and the floor
tasks of ``bench/floor.py``, optionally with prototype patches (``BENCH_PATCHES=name,name``, see
``bench/patches.py``).

Arguments are ``celery worker``'s, as ``refund-worker worker`` passes them. With ``--pool
gevent`` the process is monkey-patched first, as ``celery -P gevent`` would do (``refund-worker
worker`` goes through ``app.worker_main``, which does not).
"""

from __future__ import annotations

import os
import sys

if "gevent" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import json
from typing import Any, cast

import patches
from sqlalchemy import Table, bindparam, update

from refund_worker.celery_app import NOTIFY_QUEUE, QUEUE, app

try:
    from refund_worker.celery_app import TASK_QUEUES
    from refund_worker.publishing import publish
except ImportError:  # a snapshot from before #19 (BENCH_SRC), when tasks.py published
    from refund_worker.tasks import TASK_QUEUES  # type: ignore[attr-defined,no-redef]
    from refund_worker.tasks import _publish as publish  # type: ignore[attr-defined,no-redef]
from refund_worker.models import Refund
from refund_worker.runtime import get_runtime

FLOOR_REFUND_TASK = "bench.floor.refund"
FLOOR_EMAIL_TASK = "bench.floor.email"
FLOOR_DURABLE_TASK = "bench.floor.durable"
FLOOR_DURABLE_EMAIL_TASK = "bench.floor.durable_email"
#: The refund body of a whole online invoice refund, as ``routing.plan_refund`` would build it.
FLOOR_BODY = {
    "notify": False,
    "appendComment": False,
    "isOnline": True,
    "comment": {"comment": "bench floor", "is_visible_on_front": 0},
}
TASK_QUEUES.setdefault(FLOOR_REFUND_TASK, QUEUE)
TASK_QUEUES.setdefault(FLOOR_EMAIL_TASK, NOTIFY_QUEUE)
TASK_QUEUES.setdefault(FLOOR_DURABLE_TASK, QUEUE)
TASK_QUEUES.setdefault(FLOOR_DURABLE_EMAIL_TASK, NOTIFY_QUEUE)

# The durable floor's four writes: one autocommit statement each, by primary key.
_refunds = cast(Table, Refund.__table__)
_THIS = _refunds.c.id == bindparam("refund_id")
_CLAIM = (
    update(_refunds)
    .where(_THIS)
    .values(status="processing", attempts=_refunds.c.attempts + 1)
    .returning(_refunds.c.order_id, _refunds.c.request_json)
)
_SUCCEEDED = (
    update(_refunds)
    .where(_THIS)
    .values(status="succeeded", creditmemo_id=bindparam("memo"), notification_status="pending")
)
_EMAIL_CLAIM = (
    update(_refunds)
    .where(_THIS)
    .values(notification_status="sending", notification_attempts=1)
    .returning(_refunds.c.creditmemo_id)
)
_EMAIL_SENT = update(_refunds).where(_THIS).values(notification_status="sent")


@app.task(name="bench.noop", ignore_result=True)
def noop() -> None:
    """The yardstick: a bare task that does nothing."""


@app.task(name=FLOOR_REFUND_TASK, ignore_result=True, acks_late=True)
def floor_refund(ids: str) -> None:
    """A refund's share that no code of ours can avoid: ``ids`` is ``mode:order:invoice``. In
    ``http`` mode GET order, GET invoice and POST the invoice refund; then publish the email,
    as ``refunds.process`` does (``publishing.publish``). No database, no routing, no records."""
    mode, order_id, invoice_id = ids.split(":")
    creditmemo_id = "0"
    if mode == "http":
        client = get_runtime().client
        client.get_order(int(order_id))
        client.get_invoice(int(invoice_id))
        creditmemo_id = str(client.refund_invoice(int(invoice_id), FLOOR_BODY))
    publish(app, FLOOR_EMAIL_TASK, [f"{mode}:{creditmemo_id}"])


@app.task(name=FLOOR_EMAIL_TASK, ignore_result=True, acks_late=True)
def floor_email(ids: str) -> None:
    """The email's share: in ``http`` mode POST the credit memo's email."""
    mode, creditmemo_id = ids.split(":")
    if mode == "http":
        get_runtime().client.send_creditmemo_email(int(creditmemo_id))


@app.task(name=FLOOR_DURABLE_TASK, ignore_result=True, acks_late=True)
def floor_durable(refund_id: str) -> None:
    """The ``http`` floor on a stored refund, with the least a refund must make durable: a
    write before its call and one after (one statement each, no transaction around them)."""
    runtime = get_runtime()
    params: dict[str, Any] = {"refund_id": refund_id}
    with runtime.database.statement_scope() as connection:
        order_id, request_json = connection.execute(_CLAIM, params).one()
    invoice_id = json.loads(request_json)["invoice_id"]
    runtime.client.get_order(order_id)
    runtime.client.get_invoice(invoice_id)
    memo = runtime.client.refund_invoice(invoice_id, FLOOR_BODY)
    with runtime.database.statement_scope() as connection:
        connection.execute(_SUCCEEDED, {**params, "memo": memo})
    publish(app, FLOOR_DURABLE_EMAIL_TASK, [refund_id])


@app.task(name=FLOOR_DURABLE_EMAIL_TASK, ignore_result=True, acks_late=True)
def floor_durable_email(refund_id: str) -> None:
    """The email's share of the durable floor: a write before the call and one after."""
    runtime = get_runtime()
    params = {"refund_id": refund_id}
    with runtime.database.statement_scope() as connection:
        memo = connection.execute(_EMAIL_CLAIM, params).scalar_one()
    runtime.client.send_creditmemo_email(memo)
    with runtime.database.statement_scope() as connection:
        connection.execute(_EMAIL_SENT, params)


if __name__ == "__main__":
    patches.apply(os.environ.get("BENCH_PATCHES", ""))
    app.worker_main(argv=["worker", *sys.argv[1:]])
