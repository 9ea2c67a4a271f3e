"""Schemathesis against the app's own OpenAPI document: no input makes it answer 5xx.

Positive and negative cases, 30 per operation, as the operator (who may call everything).
Not checked, by design: a batch answers 200 with per-element errors; the header and body
idempotency keys must agree (a rule a schema cannot state); Starlette's ``Allow`` on 405
lists only the methods of the first route matching the path.

The document is built from the app at import time (schemathesis' lazy ``from_fixture`` loader
does not work with this pytest); a test checks it is the one the running app serves.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from refund_worker.api import create_app
from refund_worker.db import Database
from tests.api.support import Api, Keys, make_settings
from tests.fakes import RecordingPublisher


def _document() -> dict[str, Any]:
    database = Database.from_url("sqlite://")  # never connected: only the routes are needed
    try:
        app = create_app(
            database=database,
            publisher=RecordingPublisher(),
            settings=make_settings(Keys("", "", ())),
            broker_check=lambda: True,
        )
        return app.openapi()
    finally:
        database.dispose()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_fuzzed_document_is_the_served_one(api: Api) -> None:
    assert api.anonymous.get("/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_input_makes_a_server_error(case: schemathesis.Case, api: Api) -> None:
    case.call_and_validate(
        base_url=api.url,
        headers={"Authorization": f"Bearer {api.keys.operator}"},
        # No 5xx; and every answer is documented (status, content type, body schema).
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=30,
    )
