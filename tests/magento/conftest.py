"""Fixtures for the Magento client tests: a client wired to an ``httpx.MockTransport``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

try:  # the package may not be installed in the virtualenv yet
    import refund_worker.errors  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from refund_worker.magento import BearerAuth, CallRecord, MagentoClient

BASE_URL = "http://magento.test:8081"
TOKEN = "bearer-secret-token-0123456789"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Collects the requests the client sent and the CallRecords it reported."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.records: list[CallRecord] = []


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def base_url() -> str:
    return BASE_URL


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_client(recorder: Recorder) -> Iterator[Callable[..., MagentoClient]]:
    clients: list[MagentoClient] = []

    def factory(handler: Handler, **kwargs: object) -> MagentoClient:
        def recording_handler(request: httpx.Request) -> httpx.Response:
            request.read()
            recorder.requests.append(request)
            return handler(request)

        options: dict[str, object] = {
            "auth": BearerAuth(TOKEN),
            "transport": httpx.MockTransport(recording_handler),
            "on_call": recorder.records.append,
        }
        options.update(kwargs)
        client = MagentoClient(BASE_URL, **options)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
