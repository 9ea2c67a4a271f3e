"""No secret leaves the process that holds it: not into the worker's logs (at DEBUG), not into
any text column of any table, not into the task messages in Redis (their only argument is the
refund id), and not into the task events Flower would receive.

A real worker runs with a secret bearer token (then with OAuth 1.0a), a database URL carrying a
password, and Flower basic auth set, through a success, an email, a retry and a rejection.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import String, Text, func, inspect, select, text

from refund_worker.celery_app import NOTIFY_QUEUE, NOTIFY_TASK, PROCESS_TASK, QUEUE, create_app
from refund_worker.db import Database, upgrade
from refund_worker.models import MagentoCall
from refund_worker.settings import Settings
from refund_worker.simulator import SimulatorState
from refund_worker.simulator.auth import OAuthCredentials
from refund_worker.simulator.testing import running_simulator
from tests.e2e.conftest import FAST, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def secret(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


class EventTap:
    """Receives the task events a Flower on this broker would receive."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection() as connection:
            self.receiver = self.app.events.Receiver(
                connection, handlers={"*": self.events.append}
            )
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> EventTap:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(timeout=10)


@pytest.fixture(params=["bearer", "oauth"])
def secret_stack(request: pytest.FixtureRequest, pg_url: str, redis_url: str,
                 tmp_path: Path) -> Iterator[tuple[Stack, list[str]]]:
    token = secret("magento-token")
    oauth = OAuthCredentials(secret("consumer-key"), secret("consumer-secret"),
                             secret("access-token"), secret("token-secret"))
    db_password = secret("db-password")
    flower = secret("flower-password")
    credentials: dict[str, str]
    if request.param == "bearer":
        state = SimulatorState(tokens={token: None})
        credentials = {"REFUND_WORKER_MAGENTO_TOKEN": token}
        secrets = [token]
    else:
        state = SimulatorState(tokens={}, oauth_credentials=[oauth])
        credentials = {
            "REFUND_WORKER_MAGENTO_OAUTH_CONSUMER_KEY": oauth.consumer_key,
            "REFUND_WORKER_MAGENTO_OAUTH_CONSUMER_SECRET": oauth.consumer_secret,
            "REFUND_WORKER_MAGENTO_OAUTH_ACCESS_TOKEN": oauth.access_token,
            "REFUND_WORKER_MAGENTO_OAUTH_ACCESS_TOKEN_SECRET": oauth.access_token_secret,
        }
        # The consumer key and access token travel in every OAuth header by design; the two
        # secrets only ever sign.
        secrets = [oauth.consumer_secret, oauth.access_token_secret]
    # Trust authentication ignores the password, but it is in the URL the worker holds.
    database_url = pg_url.replace("postgres@", f"postgres:{db_password}@", 1)
    with running_simulator(state) as simulator:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REFUND_WORKER_")},
            **FAST,
            **credentials,
            "REFUND_WORKER_BROKER_URL": redis_url,
            "REFUND_WORKER_DATABASE_URL": database_url,
            "REFUND_WORKER_MAGENTO_URL": simulator.url,
            "REFUND_WORKER_FLOWER_BASIC_AUTH": f"admin:{flower}",
            "REFUND_WORKER_LOG_LEVEL": "DEBUG",
            "PYTHONUNBUFFERED": "1",
        }
        settings = Settings(**{k.removeprefix("REFUND_WORKER_").lower(): v  # type: ignore[arg-type]
                               for k, v in env.items() if k.startswith("REFUND_WORKER_")},
                            _env_file=None)
        database = Database.from_url(database_url)
        upgrade(database.engine)
        log_dir = tmp_path / "logs"
        log_dir.mkdir()
        stack = Stack(env=env, settings=settings, database=database, simulator=simulator,
                      log_dir=log_dir)
        try:
            yield stack, [*secrets, db_password, flower]
        finally:
            stack.stop_all()
            database.dispose()


def queued_messages(redis_url: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [
            json.loads(raw)
            for queue in (QUEUE, NOTIFY_QUEUE)
            for raw in client.lrange(queue, 0, -1)
        ]
    finally:
        client.close()


def every_text_value(database: Database) -> Iterator[tuple[str, str, str]]:
    inspector = inspect(database.engine)
    with database.engine.connect() as connection:
        for table in inspector.get_table_names():
            for column in inspector.get_columns(table):
                if isinstance(column["type"], String | Text):
                    name = column["name"]
                    for (value,) in connection.execute(
                        text(f'SELECT "{name}" FROM "{table}" WHERE "{name}" IS NOT NULL')
                    ):
                        yield table, name, str(value)


def test_no_secret_reaches_logs_database_messages_or_events(
    secret_stack: tuple[Stack, list[str]], redis_url: str
) -> None:
    stack, secrets = secret_stack
    state = stack.state
    good = state.add_order({"payment_method": "braintree", "shipped": True,
                            "items": [{"sku": "HAT", "qty": 1, "price": 25}]})
    flaky = state.add_order({"payment_method": "checkmo", "shipped": True,
                             "items": [{"sku": "CUP", "qty": 2, "price": 4}]})
    held = state.add_order({"payment_method": "checkmo", "state": "holded",
                            "items": [{"sku": "PEN", "qty": 1, "price": 2}]})
    state.add_fault({"route": "order_refund", "kind": "commit_then_500", "count": 1})
    receipts = stack.enqueue(
        {"idempotency_key": "good", "order_id": good["order_id"], "notify_customer": True},
        {"idempotency_key": "flaky", "order_id": flaky["order_id"]},
        {"idempotency_key": "held", "order_id": held["order_id"]},
    )
    refund_ids = {receipt.refund_id for receipt in receipts}

    # Task messages waiting in Redis: the refund id is the only argument.
    messages = queued_messages(redis_url)
    assert len(messages) == 3
    for message in messages:
        raw = json.dumps(message)
        body = json.loads(base64.b64decode(message["body"]))
        args, kwargs, _ = body
        assert message["headers"]["task"] == PROCESS_TASK
        assert len(args) == 1
        assert args[0] in refund_ids
        assert kwargs == {}
        assert message["headers"]["argsrepr"] == repr((args[0],))
        for value in secrets:
            assert value not in raw
            assert value not in json.dumps(body)

    with EventTap(stack.settings) as tap:
        stack.start_worker(4)
        views = stack.wait_settled(sorted(refund_ids), timeout=60)
        assert sorted(v.status.value for v in views.values()) == ["failed", "succeeded",
                                                                   "succeeded"]
        assert [e["creditmemo_id"] for e in state.emails()] != []
        stack.stop_all()

    # What Flower would show: every task event's args/kwargs are the refund id and nothing else.
    task_events = [e for e in tap.events if e.get("type", "").startswith("task-")]
    received = [e for e in task_events if e["type"] == "task-received"]
    assert {e["name"] for e in received} >= {PROCESS_TASK, NOTIFY_TASK}
    for event in received:
        assert event["args"] in {repr((refund_id,)) for refund_id in refund_ids}
        assert event["kwargs"] == "{}"
    flat_events = json.dumps(tap.events, default=str)
    # The worker's own logs, at DEBUG, including the banner, tracebacks and every HTTP call.
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(stack.log_dir.glob("*.log")))
    assert "refunds.process" in logs
    assert re.search(r"magento \w+ (GET|POST) /rest/default/V1/", logs)  # the client's DEBUG lines
    rows = list(every_text_value(stack.database))
    assert any(column == "request_json" for _, column, _ in rows)

    for value in secrets:
        assert value not in logs, "a secret is in the worker's log"
        assert value not in flat_events, "a secret is in a task event"
        leaks = [(table, column) for table, column, cell in rows if value in cell]
        assert leaks == [], f"a secret is stored in {leaks}"
    with stack.database.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(MagentoCall)) > 0
