"""Fixtures for the HTTP API: the app served by uvicorn on an ephemeral port, driven with httpx."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from refund_worker.api import create_app, generate_api_key
from refund_worker.db import Database
from refund_worker.publishing import Publisher
from refund_worker.settings import ApiKey
from tests.api.support import Api, Keys, StartApi, make_settings, serving
from tests.fakes import RecordingPublisher


@pytest.fixture(scope="session")
def keys() -> Keys:
    """Producer keys ``erp`` and ``returns``, ``erp-2026`` (tenant ``erp``) and an operator key
    (``alice``)."""
    producer, producer_digest = generate_api_key()
    other, other_digest = generate_api_key()
    rotated, rotated_digest = generate_api_key()
    operator, operator_digest = generate_api_key()
    return Keys(
        producer=producer,
        operator=operator,
        other_producer=other,
        rotated_producer=rotated,
        entries=(
            ApiKey(name="erp", role="producer", sha256=producer_digest),
            ApiKey(name="returns", role="producer", sha256=other_digest),
            ApiKey(name="erp-2026", role="producer", sha256=rotated_digest, tenant="erp"),
            ApiKey(name="alice", role="operator", sha256=operator_digest),
        ),
    )


@pytest.fixture
def database(sqlite_url: str) -> Iterator[Database]:
    """A fresh SQLite database with the schema."""
    database = Database.from_url(sqlite_url)
    database.prepare()
    yield database
    database.dispose()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def start_api(
    database: Database, publisher: RecordingPublisher, keys: Keys
) -> Iterator[StartApi]:
    """Start an API: ``start_api(database=..., publisher=..., broker_check=..., **settings)``."""
    with ExitStack() as stack:

        def start(
            *,
            database: Database = database,
            publisher: Publisher = publisher,
            broker_check: Callable[[], bool] | None = lambda: True,
            **overrides: Any,
        ) -> Api:
            settings = make_settings(keys, **overrides)
            app = create_app(
                database=database, publisher=publisher, settings=settings,
                broker_check=broker_check,
            )
            url = stack.enter_context(serving(app))
            api = Api(url=url, database=database, publisher=publisher, keys=keys)
            stack.callback(api.close)
            return api

        yield start


@pytest.fixture
def api(start_api: StartApi) -> Api:
    """The API over a fresh SQLite database with a recording publisher."""
    return start_api()
