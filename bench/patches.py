"""Prototype fixes, applied by monkeypatching in benchmark processes only (never shipped).

Each entry measures what a proposed change to ``src/`` would bring (``bench/compare.py`` runs
them side by side); docs/performance.md names the exact change. The patches work at the lowest
level that shows the effect, so they survive edits to the services: they are measurements, not
the code to merge. Enable with ``--patch NAME`` (``BENCH_PATCHES=a,b`` in worker processes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

PATCHES: dict[str, Callable[[], None]] = {}


def patch(function: Callable[[], None]) -> Callable[[], None]:
    PATCHES[function.__name__.replace("_", "-")] = function
    return function


def apply(names: str | list[str]) -> None:
    if isinstance(names, str):
        names = [names]
    split = [n.strip() for group in names for n in group.split(",") if n.strip()]
    for name in expand(split):
        PATCHES[name]()


@patch
def no_pre_ping() -> None:
    """db.make_engine: ``pool_pre_ping=False`` (a ``SELECT 1`` round trip per checkout).

    A dropped connection then fails its first statement, which ``session_scope`` already maps to
    ``DatabaseUnavailable`` (retried); ``pool_recycle`` bounds connection age instead."""
    from refund_worker import db

    original = db.make_engine

    def make_engine(database_url: str, **kwargs: Any) -> Any:
        if not database_url.startswith("sqlite"):
            kwargs.setdefault("pool_pre_ping", False)
            kwargs.setdefault("pool_recycle", 1800)
        return original(database_url, **kwargs)

    db.make_engine = make_engine


@patch
def core_dml() -> None:
    """UPDATE/DELETE/INSERT statements through ``session.connection().execute`` (Core), not the
    ORM's bulk path (no synchronize_session evaluation, no autoflush, no ORM result setup)."""
    from sqlalchemy.orm import Session
    from sqlalchemy.sql.dml import UpdateBase

    original = Session.execute

    def execute(self: Session, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        if isinstance(statement, UpdateBase) and not kwargs:
            return self.connection().execute(statement, params)
        return original(self, statement, params, **kwargs)

    Session.execute = execute  # type: ignore[method-assign]


@patch
def bulk_audit() -> None:
    """The audit rows (``magento_calls``) as one Core multi-row INSERT instead of ORM objects
    flushed by the unit of work (which fetches each new id with RETURNING)."""
    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from refund_worker.models import MagentoCall

    table = MagentoCall.__table__
    columns = [c.name for c in table.columns if c.name not in ("id", "created_at")]
    original = Session.add_all

    def add_all(self: Session, instances: Any) -> None:
        instances = list(instances)
        if instances and all(type(i) is MagentoCall for i in instances):
            rows = [{c: getattr(i, c) for c in columns} for i in instances]
            self.connection().execute(insert(table), rows)
            return
        original(self, instances)

    Session.add_all = add_all  # type: ignore[method-assign]


@patch
def lock_upsert() -> None:
    """refunds._take_order_lock as one ``INSERT .. ON CONFLICT (order_id) DO UPDATE .. WHERE
    (same refund or expired) RETURNING`` instead of UPDATE then INSERT .. DO NOTHING."""
    from sqlalchemy.dialects import postgresql

    from refund_worker import refunds
    from refund_worker.models import OrderLock

    table = OrderLock.__table__
    original = refunds._take_order_lock

    def take(session: Any, order_id: int, refund_id: str, now: Any, until: Any) -> bool:
        if session.get_bind().dialect.name != "postgresql":
            return bool(original(session, order_id, refund_id, now, until))
        stmt = postgresql.insert(table).values(
            order_id=order_id, refund_id=refund_id, expires_at=until
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.order_id],
            set_={"refund_id": stmt.excluded.refund_id, "expires_at": stmt.excluded.expires_at},
            where=(table.c.refund_id == refund_id) | (table.c.expires_at < now),
        ).returning(table.c.order_id)
        return session.connection().execute(stmt).first() is not None

    refunds._take_order_lock = take


@patch
def skip_fresh_renew() -> None:
    """Skip the lease renewal before the Magento call while the claim's own lease still covers
    the call: ``now - claimed_at < lease_seconds - magento_timeout - 5`` (the same guarantee as
    renewing, without a transaction). Refunds and notifications alike."""
    from refund_worker import notifications, refunds

    for service in (refunds.RefundService, notifications.NotificationService):
        if not hasattr(service, "_renew_lease"):  # code without the renewal: nothing to skip
            continue
        original_claim = service._claim
        original_renew = service._renew_lease

        def claim(self: Any, refund_id: str, _original: Any = original_claim) -> Any:
            started = self.clock()
            result = _original(self, refund_id)
            if not hasattr(result, "retry_in"):  # a claim, not an AttemptResult
                object.__setattr__(result, "_claimed_at", started)
            return result

        def renew(self: Any, claim: Any, _original: Any = original_renew) -> Any:
            claimed_at = getattr(claim, "_claimed_at", None)
            margin = timedelta(
                seconds=self.settings.lease_seconds - self.settings.magento_timeout - 5
            )
            if claimed_at is not None and self.clock() - claimed_at < margin:
                return True
            return _original(self, claim)

        service._claim = claim
        service._renew_lease = renew


@patch
def light_get() -> None:
    """``session.get(Refund, id)`` as a Core SELECT of the row into a plain object (no identity
    map, no ORM instance state). Read-only use only: good enough to measure the claim path."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from refund_worker.models import Refund

    table = Refund.__table__
    original = Session.get

    class Row:
        def __init__(self, mapping: Any) -> None:
            self.__dict__.update(mapping)

        @property
        def marker(self) -> str:
            return f"refund-worker:{self.id}"

    def get(self: Session, entity: Any, ident: Any, **kwargs: Any) -> Any:
        if entity is Refund and not kwargs:
            row = self.connection().execute(select(table).where(table.c.id == ident)).first()
            return None if row is None else Row(row._mapping)
        return original(self, entity, ident, **kwargs)

    Session.get = get  # type: ignore[method-assign]


@patch
def intake_core_insert() -> None:
    """intake._enqueue_batch: the batch INSERT .. ON CONFLICT DO NOTHING RETURNING through
    ``session.connection().execute(insert(Refund.__table__)..., rows)`` (Core executemany, sent
    as one multi-row statement per 1,000 rows by insertmanyvalues). Through the ORM
    (``session.scalars(insert(Refund)..., rows)``) rows are grouped by which of their values
    are None (invoice_id, created_by...), so a mixed file is sent a few rows per statement."""
    from sqlalchemy.orm import Session
    from sqlalchemy.sql.dml import Insert

    original = Session.scalars

    def scalars(self: Session, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        if isinstance(statement, Insert) and isinstance(params, list) and not kwargs:
            core = statement._clone()  # the same statement, seen as Core by the connection
            core._propagate_attrs = {}
            return self.connection().execute(core, params).scalars()
        return original(self, statement, params, **kwargs)

    Session.scalars = scalars  # type: ignore[method-assign]


@patch
def intake_arrays() -> None:
    """intake._enqueue_batch on PostgreSQL with one binary array parameter per column that
    varies (a scalar for those the same for the whole batch: status, timestamps, counters):
    ``INSERT .. SELECT .. FROM unnest(%(id)b::varchar[], ..) ON CONFLICT DO NOTHING RETURNING
    id``, ``SELECT .. WHERE idempotency_key = ANY(%(keys)s)``, ``UPDATE .. WHERE id =
    ANY(%(ids)s)``. Short, constant SQL: psycopg caches (and prepares) it, where today each
    500-row VALUES list / IN list is a new ~10,000-placeholder text that psycopg re-parses
    (``_split_query``, not cached above 4 kB / 50 parameters) and PostgreSQL re-plans."""
    from sqlalchemy import ARRAY, String, any_, bindparam, select, update

    from refund_worker import intake
    from refund_worker.models import Refund
    from refund_worker.schemas import RefundStatus

    table = Refund.__table__
    original = intake._enqueue_batch
    keys_param = bindparam("keys", type_=ARRAY(String))
    ids_param = bindparam("ids", type_=ARRAY(String))
    lookup = select(
        table.c.idempotency_key, table.c.id, table.c.payload_hash, table.c.status
    ).where(table.c.idempotency_key == any_(keys_param))
    mark = (
        update(table)
        .where(table.c.id == any_(ids_param), table.c.status == RefundStatus.RECEIVED.value)
        .values(status=RefundStatus.QUEUED.value, published_at=bindparam("now"))
    )
    sql_cache: dict[tuple[tuple[str, ...], frozenset[str]], str] = {}

    def insert_sql(columns: tuple[str, ...], same: frozenset[str], dialect: Any) -> str:
        """Columns whose value is the same for the whole batch are one scalar parameter, the
        others one binary array each (``%b``: no text escaping of every element)."""
        key = (columns, same)
        if key not in sql_cache:

            def sql_type(c: str) -> str:
                return str(table.c[c].type.compile(dialect=dialect))

            varying = [c for c in columns if c not in same]
            arrays = ", ".join(f"%({c})b::{sql_type(c)}[]" for c in varying)
            values = ", ".join(
                f"%({c})b::{sql_type(c)}" if c in same else f"u.{c}" for c in columns
            )
            sql_cache[key] = (
                f"INSERT INTO refunds ({', '.join(columns)}) SELECT {values} "
                f"FROM unnest({arrays}) AS u({', '.join(varying)}) "
                "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
            )
        return sql_cache[key]

    def enqueue_batch(
        batch: Any, offset: int, database: Any, publisher: Any, created_by: Any
    ) -> Any:
        if database.engine.dialect.name != "postgresql":
            return original(batch, offset, database, publisher, created_by)
        now = intake.utcnow()
        hashes = [request.payload_hash() for request in batch]
        first_by_key: dict[str, int] = {}
        rows = []
        for position, request in enumerate(batch):
            if request.idempotency_key in first_by_key:
                continue
            first_by_key[request.idempotency_key] = position
            rows.append(intake._row(request, hashes[position], now, created_by))
        columns = tuple(rows[0])
        with database.engine.begin() as connection:
            params: dict[str, Any] = {}
            same = set()
            for c in columns:
                values = [row[c] for row in rows]
                if len(rows) > 1 and all(v == values[0] for v in values):
                    same.add(c)
                    params[c] = values[0]
                else:
                    params[c] = values
            sql = insert_sql(columns, frozenset(same), connection.dialect)
            inserted = set(connection.exec_driver_sql(sql, params).scalars())
            existing = {
                key: (refund_id, payload_hash, status)
                for key, refund_id, payload_hash, status in connection.execute(
                    lookup, {"keys": list(first_by_key)}
                )
            }
        new_ids = [row["id"] for row in rows if row["id"] in inserted]
        if new_ids:
            publisher.publish_refunds(new_ids)
            with database.engine.begin() as connection:
                connection.execute(mark, {"ids": new_ids, "now": intake.utcnow()})
        return _results(batch, offset, hashes, first_by_key, inserted, existing)

    def _results(batch, offset, hashes, first_by_key, inserted, existing):  # type: ignore[no-untyped-def]
        from refund_worker.errors import IdempotencyConflict
        from refund_worker.schemas import RefundReceipt

        results: list[Any] = []
        for position, request in enumerate(batch):
            refund_id, stored_hash, status = existing[request.idempotency_key]
            fresh = refund_id in inserted and first_by_key[request.idempotency_key] == position
            if stored_hash != hashes[position]:
                results.append(
                    intake.IntakeRejection(
                        offset + position,
                        IdempotencyConflict(
                            f"idempotency_key: {request.idempotency_key!r} was already used "
                            f"for a different refund ({refund_id})",
                            refund_id=refund_id,
                            idempotency_key=request.idempotency_key,
                        ),
                    )
                )
                continue
            shown = RefundStatus.QUEUED if fresh else RefundStatus(status)
            results.append(
                RefundReceipt(
                    refund_id=refund_id,
                    idempotency_key=request.idempotency_key,
                    status=shown,
                    duplicate=not fresh,
                )
            )
        return results

    intake._enqueue_batch = enqueue_batch


@patch
def quiet_httpx() -> None:
    """The ``httpx`` logger at WARNING: it logs every request at INFO ("HTTP Request: ..."),
    which the worker's INFO level writes; our client already logs each call at DEBUG."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


@patch
def publish_one() -> None:
    """tasks._publish: one message is sent without ``producer.batch()`` (the notification
    after each refund): no pipeline object, no batch bookkeeping for a single LPUSH."""
    from refund_worker import tasks
    from refund_worker.celery_app import QUEUE

    original = tasks._publish

    def publish(celery_app: Any, task_name: str, refund_ids: Any) -> None:
        if len(refund_ids) == 1:
            celery_app.send_task(task_name, (refund_ids[0],), queue=QUEUE)
            return
        original(celery_app, task_name, refund_ids)

    tasks._publish = publish


@patch
def publish_prebuilt() -> None:
    """tasks._publish: per id, build the Celery message (``app.amqp.as_task_v2`` with
    ``argsrepr`` given) and hand it to the producer's batch straight to the queue's list
    (default exchange, routing key = queue; the queue declared once per call), instead of
    ``send_task`` per id: no per-message router, option merging, saferepr, queue copy and
    ``maybe_declare``, no binding lookup for the direct exchange."""
    import json

    from kombu.utils.uuid import uuid

    from refund_worker import tasks
    from refund_worker.celery_app import QUEUE

    def publish(celery_app: Any, task_name: str, refund_ids: Any) -> None:
        if not refund_ids:
            return
        amqp = celery_app.amqp
        queue = amqp.queues[QUEUE]
        stamp = getattr(tasks, "_stamp", dict)  # the publish-time header, where the code has it
        with celery_app.producer_or_acquire() as producer:
            producer.maybe_declare(queue)
            with producer.batch():
                for refund_id in refund_ids:
                    task_id = uuid()
                    message = amqp.as_task_v2(
                        task_id,
                        task_name,
                        args=(refund_id,),
                        kwargs={},
                        argsrepr=f"('{refund_id}',)",
                        kwargsrepr="{}",
                        reply_to=celery_app.thread_oid,
                        ignore_result=None,
                    )
                    producer._publish(
                        json.dumps(message.body),
                        0,
                        "application/json",
                        "utf-8",
                        {**message.headers, **stamp()},
                        {**message.properties, "delivery_mode": 2},
                        QUEUE,
                        False,
                        False,
                        "",
                        None,
                    )

    tasks._publish = publish


@patch
def kombu_client_cache() -> None:
    """kombu's Redis channel builds a new ``redis.Redis`` client object for every publish, ack
    and QoS update (``Channel.conn_or_acquire`` → ``_create_client``; redis-py 8's constructor
    is not cheap). Keep one synchronous client per channel instead (thread-safe: it only holds
    the channel's connection pool). Upstream kombu, or a few lines in ``celery_app``."""
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.Channel._create_client

    def create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return original(self, asynchronous=True)
        client = self.__dict__.get("_sync_client")
        if client is None:
            client = self.__dict__["_sync_client"] = original(self)
        return client

    kombu_redis.Channel._create_client = create_client


@patch
def redis_max_connections() -> None:
    """broker_transport_options max_connections=256 (kombu's Redis channel default: 10). With
    the gevent pool at 64 greenlets the worker runs out ("MaxConnectionsError: Too many
    connections"): acks are lost, the consumer reconnects, and a prefetched message can vanish
    until the sweeper re-publishes it."""
    from refund_worker.celery_app import app

    app.conf.broker_transport_options = {
        **(app.conf.broker_transport_options or {}),
        "max_connections": 256,
    }


@patch
def switch_1ms() -> None:
    """``sys.setswitchinterval(0.001)`` (CPython's default: 5 ms). A thread whose socket read
    returned waits for the GIL until the running thread is asked to drop it; with 32 threads
    half busy that wait is paid after most Magento and database round trips."""
    import sys

    sys.setswitchinterval(0.001)


@patch
def switch_0_5ms() -> None:
    """``sys.setswitchinterval(0.0005)``."""
    import sys

    sys.setswitchinterval(0.0005)


@patch
def prefetch_1() -> None:
    """worker_prefetch_multiplier=1 (shipped: 4)."""
    from refund_worker.celery_app import app

    app.conf.worker_prefetch_multiplier = 1


@patch
def prefetch_16() -> None:
    """worker_prefetch_multiplier=16 (shipped: 4)."""
    from refund_worker.celery_app import app

    app.conf.worker_prefetch_multiplier = 16


#: Every change above that keeps behaviour, together.
BUNDLES = {
    "all": [
        "no-pre-ping",
        "core-dml",
        "bulk-audit",
        "lock-upsert",
        "skip-fresh-renew",
        "light-get",
        "quiet-httpx",
        "publish-prebuilt",
    ],
}


def expand(names: list[str]) -> list[str]:
    """Bundle names replaced by their patches."""
    out: list[str] = []
    for name in names:
        out.extend(BUNDLES.get(name, [name]))
    return out
