"""Helpers for the HTTP API tests: a recording publisher, uvicorn in a thread, clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select

from refund_worker.db import Database
from refund_worker.models import Refund
from refund_worker.settings import ApiKey, Settings


@dataclass(frozen=True)
class Keys:
    """Producer keys of two tenants (``erp``, ``returns``), a second key of ``erp``'s tenant (as
    while rotating) and an operator key, as their holders and as settings hold them."""

    producer: str
    operator: str
    entries: tuple[ApiKey, ...]
    other_producer: str = ""
    rotated_producer: str = ""


def make_settings(keys: Keys, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": "sqlite://",
        "broker_url": "memory://",
        "api_keys": list(keys.entries),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on an ephemeral port; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class Api:
    """A running API and clients for it: as the producer, the operator, and without a key."""

    url: str
    database: Database
    publisher: Any
    keys: Keys
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)
        self.clients.append(client)
        return client

    @property
    def producer(self) -> httpx.Client:
        return self.client(self.keys.producer)

    @property
    def other_producer(self) -> httpx.Client:
        """The producer of another tenant (``returns``)."""
        return self.client(self.keys.other_producer)

    @property
    def rotated_producer(self) -> httpx.Client:
        """A second key of the producer's tenant (``erp-2026``, tenant ``erp``)."""
        return self.client(self.keys.rotated_producer)

    @property
    def operator(self) -> httpx.Client:
        return self.client(self.keys.operator)

    @property
    def anonymous(self) -> httpx.Client:
        return self.client()

    def stored(self) -> int:
        """Refund rows in the database."""
        with self.database.session_scope() as session:
            return int(session.scalar(select(func.count()).select_from(Refund)) or 0)

    def row(self, id_or_key: str) -> Refund:
        with self.database.session_scope() as session:
            row = session.scalars(
                select(Refund).where(
                    (Refund.id == id_or_key) | (Refund.idempotency_key == id_or_key)
                )
            ).one()
            session.expunge(row)
            return row

    def close(self) -> None:
        for client in self.clients:
            client.close()


StartApi = Callable[..., Api]


def refund(key: str, order_id: int = 42, **fields: Any) -> dict[str, Any]:
    """A valid refund request body."""
    return {"idempotency_key": key, "order_id": order_id, **fields}
