"""``enqueue_refunds`` in batches, on SQLite and PostgreSQL (the array insert): one row and one
message per new key, repeats and conflicts detected within a batch and across batches."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from refund_worker import intake
from refund_worker.db import Database, upgrade
from refund_worker.errors import IdempotencyConflict
from refund_worker.intake import IntakeRejection, enqueue_refunds
from refund_worker.models import Refund
from refund_worker.schemas import RefundReceipt, RefundRequest, RefundStatus
from tests.fakes import RecordingPublisher


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database.from_url(database_url)
    if not db.is_sqlite:
        upgrade(db.engine)
    db.prepare()
    yield db
    db.dispose()


def request(key: str, order_id: int = 7, **fields: object) -> RefundRequest:
    return RefundRequest.model_validate({"idempotency_key": key, "order_id": order_id, **fields})


def varied(index: int) -> RefundRequest:
    """Requests whose optional columns are set in some rows and empty in others."""
    fields: dict[str, object] = {}
    if index % 3 == 0:
        fields["invoice_id"] = 1000 + index
    if index % 4 == 0:
        fields["store_code"] = "fr"
    if index % 5 == 0:
        fields["notify_customer"] = True
        fields["comment"] = 'Ré\'sumé "quoted" \\ back\nslash, {braces} ☃'
    if index % 7 == 0:
        fields["adjustment_positive"] = Decimal("1.2345")
    return request(f"key-{index}", order_id=index + 1, **fields)


def stored(database: Database) -> dict[str, Refund]:
    with database.session_scope() as session:
        return {row.idempotency_key: row for row in session.scalars(select(Refund))}


def test_every_new_key_is_stored_once_and_published_once(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "BATCH_SIZE", 50)
    publisher = RecordingPublisher()
    requests = [varied(i) for i in range(120)]

    results = enqueue_refunds(requests, database=database, publisher=publisher, created_by="erp")

    assert all(isinstance(r, RefundReceipt) and not r.duplicate for r in results)
    rows = stored(database)
    assert len(rows) == 120
    assert sorted(publisher.refunds) == sorted(row.id for row in rows.values())
    for sent, result in zip(requests, results, strict=True):
        assert isinstance(result, RefundReceipt)
        row = rows[sent.idempotency_key]
        assert row.id == result.refund_id
        assert row.status == RefundStatus.QUEUED.value
        assert row.published_at is not None
        assert RefundRequest.model_validate_json(row.request_json) == sent
        assert (row.order_id, row.invoice_id, row.store_code) == (
            sent.order_id,
            sent.invoice_id,
            sent.store_code,
        )
        assert row.notify_customer is sent.notify_customer
        assert row.created_by == "erp"


def test_repeats_and_conflicts_within_and_across_batches(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "BATCH_SIZE", 4)
    publisher = RecordingPublisher()
    first = enqueue_refunds([request("a"), request("b")], database=database, publisher=publisher)
    assert [r.duplicate for r in first if isinstance(r, RefundReceipt)] == [False, False]

    second = enqueue_refunds(
        [
            request("c"),
            request("c"),  # repeated in the same batch
            request("a"),  # repeated from an earlier call
            request("b", order_id=8),  # same key, another payload
            request("d"),  # the next batch
            request("c", order_id=9),  # conflicts with a key of the previous batch
        ],
        database=database,
        publisher=publisher,
    )

    kinds = [
        "conflict" if isinstance(r, IntakeRejection) else ("duplicate" if r.duplicate else "new")
        for r in second
    ]
    assert kinds == ["new", "duplicate", "duplicate", "conflict", "new", "conflict"]
    rejection = second[3]
    assert isinstance(rejection, IntakeRejection)
    assert rejection.index == 3
    assert isinstance(rejection.error, IdempotencyConflict)
    assert "idempotency_key: 'b'" in str(rejection.error)
    assert isinstance(second[5], IntakeRejection)
    assert second[5].index == 5
    with database.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Refund)) == 4
    assert len(publisher.refunds) == len(set(publisher.refunds)) == 4


def test_a_failed_publish_leaves_the_rows_received_for_the_sweeper(database: Database) -> None:
    publisher = RecordingPublisher()
    publisher.failing = True
    with pytest.raises(ConnectionRefusedError):
        enqueue_refunds([request("x"), request("y")], database=database, publisher=publisher)
    assert {row.status for row in stored(database).values()} == {RefundStatus.RECEIVED.value}

    publisher.failing = False
    again = enqueue_refunds([request("x")], database=database, publisher=publisher)
    assert isinstance(again[0], RefundReceipt)
    assert again[0].duplicate
    assert again[0].status is RefundStatus.RECEIVED
    assert publisher.refunds == []


def test_full_batches_fit_the_database(database: Database) -> None:
    publisher = RecordingPublisher()
    count = intake.BATCH_SIZE + 500
    results = enqueue_refunds(
        [varied(i) for i in range(count)], database=database, publisher=publisher
    )
    assert sum(isinstance(r, RefundReceipt) and not r.duplicate for r in results) == count
    assert len(set(publisher.refunds)) == count
    assert len(stored(database)) == count


def test_naming_the_one_default_shop_or_none_is_the_same_refund(database: Database) -> None:
    """Where the one shop is ``default``, a request that names it and one that names none are
    stored and hashed alike: the same key repeated either way is a duplicate, not a conflict;
    every stored column but the batch's own is the same (the shared ones given once per batch)."""
    publisher = RecordingPublisher()
    first, second = enqueue_refunds(
        [request("plain"), request("named", shop="default")],
        database=database, publisher=publisher, tenant="erp", created_by="key-1",
    )
    again = enqueue_refunds(
        [request("plain", shop="default"), request("named")],
        database=database, publisher=publisher, tenant="erp",
    )
    assert isinstance(first, RefundReceipt)
    assert isinstance(second, RefundReceipt)
    assert [(r.refund_id, r.duplicate) for r in again if isinstance(r, RefundReceipt)] == [
        (first.refund_id, True), (second.refund_id, True)]
    rows = stored(database)
    plain, named = rows["plain"], rows["named"]
    assert (plain.shop, named.shop) == ("default", "default")
    assert plain.payload_hash != named.payload_hash  # their keys differ, nothing else
    assert plain.request_json.replace("plain", "named") == named.request_json
    for row in (plain, named):
        assert (row.tenant, row.created_by, row.status, row.attempts, row.version) == (
            "erp", "key-1", RefundStatus.QUEUED.value, 0, 0)
        assert (row.in_doubt, row.notification_status, row.notification_version) == (
            False, "not_requested", 0)
        assert row.created_at == row.next_attempt_at
