"""Micro-benchmarks behind three changes: CPU per HTTP call, per published message, per claim.

* ``http``: ``MagentoClient.get_order`` (httpx's transport, then ``LeanTransport``) against
  ``httpx.Client`` on ``LeanTransport`` (how the client sent before) and urllib3's pool,
  ``--threads`` threads sharing one client, as in a worker; process CPU per call.
* ``publish``: ``send_task`` per id in ``producer.batch()`` (the code before) against
  ``publishing.publish`` (messages built once), into a Redis db of our own; CPU per message.
* ``statements``: the refund's claim run as ``store`` runs it (built once, at import) against
  the same statement built for each call; client CPU per statement.
* ``claim``: an email's claim as it was (SELECT, then UPDATE under the version read, in a
  transaction) against ``NotificationService``'s one-statement claim on an autocommit
  connection, on a private PostgreSQL database; client CPU per claim, rounds interleaved.

    python bench/micro.py http [--threads 32 --calls 150]
    python bench/micro.py publish [--messages 5000]
    python bench/micro.py claim [--messages 1500]
    python bench/micro.py statements [--messages 2000]
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import common
import httpx
import redis
import urllib3


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _threads(call: Callable[[], Any], threads: int, calls: int) -> float:
    """CPU ms per call, ``threads`` threads each making ``calls`` calls (after a warm-up)."""
    result = 0.0
    for _ in range(2):
        workers = [
            threading.Thread(target=lambda: [call() for _ in range(calls)]) for _ in range(threads)
        ]
        started = _cpu()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        result = 1000 * (_cpu() - started) / (threads * calls)
    return result


def http(args: argparse.Namespace) -> list[dict[str, Any]]:
    from refund_worker.magento import BearerAuth, MagentoClient
    from refund_worker.magento.transport import LeanTransport
    from refund_worker.simulator.testing import simulator_process

    with simulator_process(seed=None, extra_args=["--token", common.TOKEN]) as simulator:
        order_id = common.create_orders(simulator, 1)[0][0]
        path = f"/rest/default/V1/orders/{order_id}"
        client = MagentoClient(simulator.url, auth=BearerAuth(common.TOKEN))
        lean = MagentoClient(
            simulator.url, auth=BearerAuth(common.TOKEN), transport=LeanTransport()
        )
        pool = urllib3.HTTPConnectionPool("127.0.0.1", simulator.port, maxsize=args.threads)
        headers = {"Authorization": f"Bearer {common.TOKEN}"}
        plain = httpx.Client(base_url=simulator.url, headers=headers)
        # The code before: MagentoClient sent through an httpx.Client (URL merge, cookie jar,
        # auth and redirect plumbing) on the same lean transport.
        before = httpx.Client(base_url=simulator.url, headers=headers, transport=LeanTransport())

        def with_urllib3() -> Any:
            return json.loads(pool.request("GET", path, headers=headers).data)

        rows = [
            ("MagentoClient.get_order (httpx transport)", lambda: client.get_order(order_id)),
            ("MagentoClient.get_order (lean transport)", lambda: lean.get_order(order_id)),
            ("httpx.Client + lean transport", lambda: json.loads(before.get(path).content)),
            ("httpx.Client.get + json", lambda: json.loads(plain.get(path).content)),
            ("urllib3 pool + json", with_urllib3),
        ]
        return [
            {"what": name, "cpu_ms_per_call": round(_threads(call, args.threads, args.calls), 3)}
            for name, call in rows
        ]


def publish(args: argparse.Namespace) -> list[dict[str, Any]]:
    from refund_worker import publishing
    from refund_worker.celery_app import PROCESS_TASK, QUEUE, create_app
    from refund_worker.settings import Settings

    url = f"redis://127.0.0.1:6379/{args.redis_db}"
    app = create_app(Settings(broker_url=url, magento_url="http://x", magento_token="bench-t"))
    client = redis.Redis.from_url(url)

    def send_task_each(ids: list[str]) -> None:  # what tasks._publish did before
        with app.producer_or_acquire() as producer, producer.batch():
            for refund_id in ids:
                app.send_task(PROCESS_TASK, (refund_id,), producer=producer, queue=QUEUE)

    def prebuilt(ids: list[str]) -> None:
        publishing.publish(app, PROCESS_TASK, ids)

    rows = []
    for name, send in (("send_task per id", send_task_each), ("tasks._publish", prebuilt)):
        client.flushdb()
        ids = [str(uuid.uuid4()) for _ in range(args.messages)]
        cpu, wall = _cpu(), time.perf_counter()
        for start in range(0, len(ids), 500):
            send(ids[start : start + 500])
        cpu, wall = _cpu() - cpu, time.perf_counter() - wall
        assert client.llen(QUEUE) == len(ids)
        rows.append({"what": name, "cpu_us_per_message": round(1e6 * cpu / len(ids), 1),
                     "messages_per_s": round(len(ids) / wall)})  # fmt: skip
    client.flushdb()
    return rows


def claim(args: argparse.Namespace) -> list[dict[str, Any]]:
    from datetime import timedelta

    from sqlalchemy import select, text, update

    from refund_worker import store
    from refund_worker.db import Database
    from refund_worker.intake import enqueue_refund
    from refund_worker.models import Refund, utcnow

    table = Refund.__table__
    old_read = select(  # the claim's SELECT before: every column it decided on
        table.c.status, table.c.creditmemo_id, table.c.request_json, table.c.version,
        table.c.notification_status, table.c.notification_attempts,
        table.c.notification_error, table.c.notification_lease_expires_at,
        table.c.notification_next_at,
    ).where(table.c.id == text(":rid"))  # fmt: skip
    old_update = (  # the claim's UPDATE before, after its SELECT
        update(table)
        .where(table.c.id == text(":rid"), table.c.version == text(":version"))
        .values(notification_status="sending",
                notification_attempts=table.c.notification_attempts + 1,
                version=table.c.version + 1)
    )  # fmt: skip
    reset = text("UPDATE refunds SET notification_status = 'pending' WHERE id = :rid")

    with common.private_database("micro_claim") as url:
        database = Database.from_url(url)
        receipt: Any = enqueue_refund(
            {"idempotency_key": "micro", "order_id": 1, "notify_customer": True},
            database=database, publisher=common.NoPublisher(),
        )  # fmt: skip
        rid = receipt.refund_id
        with database.connection_scope() as connection:
            connection.execute(
                text("UPDATE refunds SET status = 'succeeded', creditmemo_id = 1 WHERE id = :rid"),
                {"rid": rid},
            )

        def before() -> None:
            with database.connection_scope() as connection:
                row: Any = connection.execute(old_read, {"rid": rid}).first()
                connection.execute(old_update, {"rid": rid, "version": row.version})

        def now_() -> None:
            now = utcnow()
            with database.statement_scope() as connection:
                row = connection.execute(store._EMAIL_CLAIM, {
                    "p_refund_id": rid, "p_now": now, "p_due": now + timedelta(seconds=1),
                    "p_until": now + timedelta(seconds=60)}).first()  # fmt: skip
                assert row is not None

        def back() -> None:
            with database.statement_scope() as connection:
                connection.execute(reset, {"rid": rid})

        timings: dict[str, list[float]] = {}
        for _ in range(3):
            for name, step in (("before: SELECT + UPDATE in a transaction", before),
                               ("now: one UPDATE ... RETURNING, autocommit", now_),
                               ("the reset between claims (subtracted)", None)):  # fmt: skip
                cpu = _cpu()
                for _ in range(args.messages):
                    if step is not None:
                        step()
                    back()
                timings.setdefault(name, []).append((_cpu() - cpu) / args.messages)
        database.dispose()
    overhead = min(timings.pop("the reset between claims (subtracted)"))
    return [{"what": name, "cpu_ms_per_claim": round(1000 * (min(values) - overhead), 3)}
            for name, values in timings.items()]  # fmt: skip


def statements(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The refund's claim statement run prebuilt (as ``store`` does) against the same statement
    built anew for each call, on a private PostgreSQL database; client CPU per statement."""
    from datetime import timedelta

    from sqlalchemy import and_, func, not_, or_, update

    from refund_worker import store
    from refund_worker.db import Database
    from refund_worker.intake import enqueue_refund
    from refund_worker.models import Refund, utcnow

    table = Refund.__table__

    def built_anew() -> Any:  # store._CLAIM, written out as code that builds it per call
        c = table.c
        return (
            update(table)
            .where(
                c.id == store._param("p_refund_id", c.id),
                and_(
                    c.status != "failed", c.status != "needs_attention", c.status != "succeeded",
                    not_(and_(c.status == "processing", c.lease_expires_at > store._P_NOW)),
                    or_(c.status == "processing", c.next_attempt_at.is_(None),
                        c.next_attempt_at <= store._param("p_due", c.next_attempt_at)),
                ),
            )
            .values(status="processing", attempts=c.attempts + 1, lease_token=store._P_TOKEN,
                    lease_expires_at=store._P_UNTIL,
                    in_doubt=or_(c.in_doubt, c.status == "processing"),
                    first_attempt_at=func.coalesce(c.first_attempt_at, store._P_NOW),
                    last_call_at=store._P_NOW, version=c.version + 1, updated_at=store._P_NOW)
            .returning(c.order_id, c.request_json, c.marker_token, c.attempts, c.in_doubt,
                       c.first_attempt_at, c.last_error)
        )  # fmt: skip

    with common.private_database("micro_statements") as url:
        database = Database.from_url(url, pool_size=1)
        common.upgrade(database.engine)
        receipt: Any = enqueue_refund(
            {"idempotency_key": "micro", "order_id": 1},
            database=database,
            publisher=common.NoPublisher(),
        )
        rid = receipt.refund_id

        def run(statement: Callable[[], Any]) -> None:
            now = utcnow()
            with database.statement_scope() as connection:
                connection.execute(statement(), {
                    "p_refund_id": rid, "p_token": "t", "p_now": now,
                    "p_due": now + timedelta(seconds=1), "p_until": now - timedelta(seconds=1),
                })  # fmt: skip  (an expired lease: every run claims the row again)

        timings: dict[str, list[float]] = {}
        for _ in range(3):
            for name, statement in (("prebuilt (store._CLAIM)", lambda: store._CLAIM),
                                    ("built anew per call", built_anew)):  # fmt: skip
                cpu = _cpu()
                for _ in range(args.messages):
                    run(statement)
                timings.setdefault(name, []).append((_cpu() - cpu) / args.messages)
        database.dispose()
    return [{"what": name, "cpu_ms_per_statement": round(1000 * min(values), 3)}
            for name, values in timings.items()]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["http", "publish", "claim", "statements"])
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--redis-db", type=int, default=7)
    args = parser.parse_args()
    rows = {"http": http, "publish": publish, "claim": claim, "statements": statements}[
        args.what
    ](args)
    common.print_table(f"micro: {args.what}", rows)
    # One file for the benchmark: each subcommand keeps its own section.
    path = common.RESULTS / "micro.json"
    sections = json.loads(path.read_text()) if path.exists() else {}
    sections[args.what] = {"settings": vars(args), "rows": rows, "machine": common.machine()}
    path.write_text(json.dumps(sections, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {path.relative_to(common.ROOT)}")


if __name__ == "__main__":
    main()
