"""End to end: real `refund-worker worker` processes on the machine's Redis, the simulator and
two webhook receivers on real sockets. Outcomes are pushed to the endpoints their tenant
subscribed, signed so that the reference verifier accepts them; a receiver answering 500 gets
the same event again (same id, same body) until it takes it; another tenant gets nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import standardwebhooks
from pydantic import SecretStr
from sqlalchemy import select

from refund_worker.models import WebhookDelivery
from refund_worker.outbox import EventType
from refund_worker.simulator import SimulatorState
from refund_worker.testing.receiver import Receiver
from refund_worker.webhooks.endpoints import EndpointRequest, register
from tests.e2e.conftest import Stack, make_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECRET_KEY = "e2e-webhooks-secret-key-0123456789abcdef"
WEBHOOK_ENV = {
    "REFUND_WORKER_SECRET_KEY": SECRET_KEY,
    "REFUND_WORKER_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
    "REFUND_WORKER_WEBHOOK_TIMEOUT": "1",
    "REFUND_WORKER_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "REFUND_WORKER_WEBHOOK_RETRY_MAX_SECONDS": "2",
}


@pytest.fixture
def hook_stack(
    pg_url: str, redis_url: str, tmp_path: Path, sim_state: SimulatorState
) -> Iterator[Stack]:
    """PostgreSQL, where the outbox rides in the outcomes' one-statement CTEs (SQLite's
    statements are covered by tests/services/test_webhook_outbox.py)."""
    for stack in make_stack(pg_url, redis_url, tmp_path, sim_state):
        stack.env.update(WEBHOOK_ENV)
        stack.settings = stack.settings.model_copy(update={
            "secret_key": SecretStr(SECRET_KEY), "webhook_allowed_hosts": ["127.0.0.1"]})
        yield stack


def endpoint(stack: Stack, receiver: Receiver, tenant: str = "default") -> str:
    _, secret = register(stack.database, stack.settings,
                         EndpointRequest(url=receiver.url, event_types=list(EventType)),
                         tenant=tenant, created_by="e2e")
    return secret.get_secret_value()


def wait(condition: object, stack: Stack, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout}s\n{stack.logs()}")
        time.sleep(0.2)


def test_outcomes_are_pushed_signed_and_retried_until_taken(hook_stack: Stack) -> None:
    stack = hook_stack
    with Receiver() as good, Receiver(mode="status:500") as flaky, Receiver() as stranger:
        good_secret = endpoint(stack, good)
        flaky_secret = endpoint(stack, flaky)
        endpoint(stack, stranger, tenant="someone-else")
        ok = stack.state.add_order({"payment_method": "checkmo",
                                    "items": [{"sku": "MUG", "qty": 1, "price": 8}]})
        held = stack.state.add_order({"payment_method": "checkmo", "state": "holded",
                                      "items": [{"sku": "MUG", "qty": 1, "price": 8}]})
        receipts = stack.enqueue(
            {"idempotency_key": "ok", "order_id": ok["order_id"], "notify_customer": True},
            {"idempotency_key": "held", "order_id": held["order_id"]},
        )
        stack.start_worker(4)
        stack.wait_settled([r.refund_id for r in receipts])
        wait(lambda: len(good.delivered()) >= 3 and len(flaky.received) >= 6, stack)
        flaky.mode = "ok"
        wait(lambda: len({r.headers["webhook-id"] for r in flaky.delivered()}) >= 3, stack)

        types = {}
        for request in good.delivered():
            payload = standardwebhooks.Webhook(good_secret).verify(request.body, request.headers)
            types[payload["type"]] = payload["data"]
        assert set(types) == {"refund.succeeded", "refund.notification_sent", "refund.failed"}
        assert types["refund.succeeded"]["idempotency_key"] == "ok"
        assert types["refund.failed"]["idempotency_key"] == "held"
        # The flaky receiver saw each event several times: always the same id and body.
        bodies: dict[str, set[bytes]] = {}
        for request in flaky.received:
            standardwebhooks.Webhook(flaky_secret).verify(request.body, request.headers)
            bodies.setdefault(request.headers["webhook-id"], set()).add(request.body)
        assert len(bodies) == 3
        assert all(len(variants) == 1 for variants in bodies.values())
        assert len(flaky.received) > 3
        assert stranger.received == []
        with stack.database.session_scope() as session:
            statuses = set(session.scalars(select(WebhookDelivery.status)))
        wait(lambda: _all_delivered(stack), stack, timeout=10)
        assert statuses <= {"delivered", "retrying", "delivering", "pending"}
        # Neither the secret key nor an endpoint's secret is in the logs or the database.
        logs = stack.logs()
        stored = _everything_stored(stack)
        for value in (SECRET_KEY, good_secret, flaky_secret):
            assert value not in logs
            assert value not in stored


def _everything_stored(stack: Stack) -> str:
    from sqlalchemy import text

    with stack.database.engine.connect() as connection:
        return "\n".join(
            str(tuple(row))
            for table in ("webhook_endpoints", "webhook_deliveries", "refund_events", "refunds")
            for row in connection.execute(text(f"SELECT * FROM {table}"))
        )


def _all_delivered(stack: Stack) -> bool:
    with stack.database.session_scope() as session:
        return set(session.scalars(select(WebhookDelivery.status))) == {"delivered"}
