"""The intake coalescer: concurrent single requests share intake calls, each answered alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from refund_worker import intake
from refund_worker.api.coalesce import IntakeCoalescer
from refund_worker.db import Database
from refund_worker.errors import DatabaseUnavailable, IdempotencyConflict
from refund_worker.intake import IntakeRejection
from refund_worker.schemas import RefundReceipt, RefundRequest
from tests.api.support import Api, refund
from tests.fakes import RecordingPublisher


def _submit(
    coalescer: IntakeCoalescer, request: RefundRequest, holder: str | None
) -> Future[Any]:
    """Submit for ``holder``'s tenant (``default`` when None), created by ``holder``."""
    return coalescer.submit(request, tenant=holder or "default", created_by=holder)


def _request(key: str, order_id: int = 42) -> RefundRequest:
    return RefundRequest.model_validate(refund(key, order_id=order_id))


class GatedIntake:
    """Wraps ``enqueue_refunds``: records each call's size, and can hold the first call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str | None, str | None]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fail_with: Exception | None = None
        self._original = intake.enqueue_refunds

    def __call__(self, requests: Any, **kwargs: Any) -> Any:
        requests = list(requests)
        self.calls.append((len(requests), kwargs.get("tenant"), kwargs.get("created_by")))
        self.entered.set()
        self.gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        return self._original(requests, **kwargs)


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> GatedIntake:
    gate = GatedIntake()
    monkeypatch.setattr(intake, "enqueue_refunds", gate)
    return gate


@pytest.fixture
def coalescer(database: Database, publisher: RecordingPublisher) -> Iterator[IntakeCoalescer]:
    coalescer = IntakeCoalescer(database, publisher, flushers=1)
    yield coalescer
    coalescer.close()


def test_requests_queued_during_a_flush_go_in_together(
    coalescer: IntakeCoalescer, gated: GatedIntake, publisher: RecordingPublisher
) -> None:
    first = _submit(coalescer, _request("first"), "erp")
    assert gated.entered.wait(5)
    waiting = [
        _submit(coalescer, _request(f"k{n}"), "erp") for n in range(20)
    ]
    waiting.append(_submit(coalescer, _request("k3"), "erp"))  # same key again
    waiting.append(_submit(coalescer, _request("k4", order_id=7), "erp"))  # conflict
    waiting.append(_submit(coalescer, _request("other"), "shop"))
    gated.gate.set()

    assert isinstance(first.result(5), RefundReceipt)
    outcomes = [future.result(5) for future in waiting]
    assert gated.calls == [(1, "erp", "erp"), (22, "erp", "erp"), (1, "shop", "shop")]
    receipts = [outcome for outcome in outcomes if isinstance(outcome, RefundReceipt)]
    assert [receipt.idempotency_key for receipt in receipts[:20]] == [f"k{n}" for n in range(20)]
    assert not any(receipt.duplicate for receipt in receipts[:20])
    assert isinstance(outcomes[20], RefundReceipt)
    assert outcomes[20].duplicate
    assert outcomes[20].refund_id == receipts[3].refund_id
    assert isinstance(outcomes[21], IntakeRejection)
    assert isinstance(outcomes[21].error, IdempotencyConflict)
    assert len(publisher.refunds) == 22


def test_a_failed_call_fails_every_member(
    coalescer: IntakeCoalescer, gated: GatedIntake
) -> None:
    gated.fail_with = DatabaseUnavailable("database unavailable: OperationalError")
    gated.gate.set()

    futures = [_submit(coalescer, _request(f"f{n}"), "erp") for n in range(3)]

    for future in futures:
        with pytest.raises(DatabaseUnavailable):
            future.result(5)
    gated.fail_with = None
    assert isinstance(_submit(coalescer, _request("after"), "erp").result(5), RefundReceipt)


def test_a_cancelled_request_is_dropped_unstored(
    coalescer: IntakeCoalescer, gated: GatedIntake, publisher: RecordingPublisher
) -> None:
    _submit(coalescer, _request("holder"), "erp")
    assert gated.entered.wait(5)
    gone = _submit(coalescer, _request("client-went-away"), "erp")
    kept = _submit(coalescer, _request("kept"), "erp")
    assert gone.cancel()
    gated.gate.set()

    assert isinstance(kept.result(5), RefundReceipt)
    assert gated.calls == [(1, "erp", "erp"), (1, "erp", "erp")]
    assert len(publisher.refunds) == 2


def test_close_finishes_the_queue_then_refuses(
    database: Database, publisher: RecordingPublisher
) -> None:
    coalescer = IntakeCoalescer(database, publisher, flushers=2)
    futures = [_submit(coalescer, _request(f"c{n}"), None) for n in range(10)]
    coalescer.close()

    assert all(isinstance(future.result(5), RefundReceipt) for future in futures)
    with pytest.raises(RuntimeError, match="closed"):
        _submit(coalescer, _request("late"), None)


def test_many_concurrent_http_requests(api: Api) -> None:
    client = api.producer

    def post(n: int) -> tuple[int, str]:
        response = client.post("/v1/refunds", json=refund(f"par-{n % 40}", order_id=1 + n % 40))
        return response.status_code, response.json()["refund_id"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(120)))

    by_key: dict[int, set[str]] = {}
    for n, (_, refund_id) in enumerate(answers):
        by_key.setdefault(n % 40, set()).add(refund_id)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert sorted(status for status, _ in answers).count(202) == 40
    assert sorted(status for status, _ in answers).count(200) == 80
    assert api.stored() == 40
    assert len(api.publisher.refunds) == 40
    assert api.row("par-7").created_by == "erp"
