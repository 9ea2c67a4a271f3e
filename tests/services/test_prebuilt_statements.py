"""The services' statements are built once: every later refund and email runs the very statement
objects the first ones ran (building a statement and its cache key costs more CPU than the round
trip), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from tests.services.conftest import Env

ROUNDS = 10


@contextmanager
def statements_run(env: Env) -> Iterator[list[Any]]:
    """Every statement object executed on the services' engine meanwhile (kept alive, so no two
    distinct ones can share an ``id``)."""
    executed: list[Any] = []

    def record(_conn: Any, clauseelement: Any, *_args: Any) -> None:
        executed.append(clauseelement)

    event.listen(env.database.engine, "before_execute", record)
    try:
        yield executed
    finally:
        event.remove(env.database.engine, "before_execute", record)


def one_round(env: Env, run: Callable[[Callable[[], Any]], Any]) -> None:
    """Refunds and emails down every hot path: retried, renewed, succeeded, reconciled, failed,
    notified after a retry. ``run`` calls the services (and records what they execute)."""
    refunds, notifications = env.refunds(), env.notifications()

    def age_the_claim(original: Any, *args: Any, **kwargs: Any) -> Any:
        env.clock.advance(env.settings.magento_timeout)  # the refund call renews the lease
        return original(*args, **kwargs)

    # A retry (503: outcome unknown), then a renewed call that succeeds, with an email.
    notified = env.enqueue(order_id=env.order()["order_id"], notify_customer=True)
    env.state.add_fault({"route": "order_refund", "kind": "status", "status": 503, "count": 1})
    retry = run(lambda: refunds.process(notified))
    assert retry.status == "retrying"
    env.clock.advance(retry.retry_in)
    env.overrides["get_order"] = age_the_claim
    assert run(lambda: refunds.process(notified)).status == "succeeded"
    env.overrides.clear()

    # Magento committed then failed: the next attempt reconciles by the marker.
    reconciled = env.enqueue(order_id=env.order()["order_id"])
    env.state.add_fault({"route": "order_refund", "kind": "commit_then_500", "count": 1})
    retry = run(lambda: refunds.process(reconciled))
    env.clock.advance(retry.retry_in)
    assert run(lambda: refunds.process(reconciled)).detail.startswith("reconciled")

    # Magento has no such order: failed.
    rejected = env.enqueue(order_id=999_999)
    assert run(lambda: refunds.process(rejected)).status == "failed"

    # The email: a retry, then sent.
    env.state.add_fault({"route": "creditmemo_emails", "kind": "status", "status": 503, "count": 1})
    retry = run(lambda: notifications.send(notified))
    assert retry.status == "retrying"
    env.clock.advance(retry.retry_in)
    assert run(lambda: notifications.send(notified)).status == "sent"


def test_every_refund_and_email_reuses_the_first_ones_statements(env: Env) -> None:
    rounds: list[list[Any]] = []

    def run(call: Callable[[], Any]) -> Any:
        with statements_run(env) as executed:
            result = call()
        rounds[-1].extend(executed)
        return result

    for _ in range(ROUNDS):
        rounds.append([])
        one_round(env, run)

    first = {id(statement) for statement in rounds[0]}
    assert len(first) >= 10  # the paths above run at least this many different statements
    for later in rounds[1:]:
        assert len(later) == len(rounds[0])  # the same paths ran...
        rebuilt = [str(s) for s in later if id(s) not in first]
        assert rebuilt == []  # ...on the same statement objects
