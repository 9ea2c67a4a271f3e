"""Webhook tier: the delivery service against a real receiver on a socket, SQLite (and
PostgreSQL where the statements differ), a clock the test moves. No Celery here."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from refund_worker.db import Database
from refund_worker.intake import enqueue_refund
from refund_worker.models import WebhookDelivery, utcnow
from refund_worker.outbox import OUTBOX_INSERT, EventType, event_params
from refund_worker.settings import Settings
from refund_worker.testing.receiver import Receiver
from refund_worker.webhooks.delivery import DeliveryService
from refund_worker.webhooks.endpoints import EndpointRequest, register

SECRET_KEY = "webhook-tests-secret-key-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Recorder:
    def __init__(self) -> None:
        self.refunds: list[str] = []
        self.notifications: list[str] = []
        self.webhooks: list[int] = []

    def publish_refunds(self, refund_ids: Sequence[str]) -> None:
        self.refunds.extend(refund_ids)

    def publish_notifications(self, refund_ids: Sequence[str]) -> None:
        self.notifications.extend(refund_ids)

    def publish_webhooks(self, delivery_ids: Sequence[int]) -> None:
        self.webhooks.extend(delivery_ids)


def webhook_settings(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "secret_key": SecretStr(SECRET_KEY),
        "webhook_allowed_hosts": ["127.0.0.1"],
        "webhook_timeout": 0.5,
        "webhook_retry_base_seconds": 4,
        "webhook_retry_max_seconds": 60,
        "webhook_retry_for_seconds": 3600,
        "webhook_disable_after_seconds": 7200,
        "_env_file": None,
    }
    values.update(changes)
    return Settings(**values)


@dataclass
class Hooks:
    database: Database
    settings: Settings
    clock: Clock
    receiver: Receiver
    publisher: Recorder = field(default_factory=Recorder)
    secrets: dict[str, SecretStr] = field(default_factory=dict)

    def service(self, **changes: Any) -> DeliveryService:
        settings = self.settings.model_copy(update=changes) if changes else self.settings
        return DeliveryService(self.database, settings, clock=self.clock)

    def endpoint(self, url: str | None = None, *, tenant: str = "default",
                 types: Sequence[EventType] = tuple(EventType)) -> str:
        view, secret = register(
            self.database, self.settings,
            EndpointRequest(url=url or self.receiver.url, event_types=list(types)),
            tenant=tenant, created_by="test",
        )
        self.secrets[view.id] = secret
        return view.id

    def refund(self, key: str = "rma-1") -> str:
        receipt = enqueue_refund({"idempotency_key": key, "order_id": 42},
                                 database=self.database, publisher=self.publisher)
        return receipt.refund_id

    def event(self, refund_id: str, event_type: EventType = EventType.SUCCEEDED,
              **data: Any) -> list[int]:
        """Write an event's deliveries as a state change would (its own transaction)."""
        params = {"p_refund_id": refund_id, "p_now": self.clock(),
                  **event_params({"status": "succeeded", "creditmemo_id": 7, **data})}
        with self.database.connection_scope() as connection:
            return list(connection.execute(OUTBOX_INSERT[event_type], params).scalars())

    def row(self, delivery_id: int) -> WebhookDelivery:
        with self.database.session_scope() as session:
            row = session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)).one()
            session.expunge(row)
            return row


@pytest.fixture
def hooks(tmp_path: Path) -> Iterator[Hooks]:
    database = Database.from_url(f"sqlite:///{tmp_path}/hooks.db")
    database.prepare()
    with Receiver() as receiver:
        try:
            yield Hooks(database, webhook_settings(), Clock(), receiver)
        finally:
            database.dispose()
