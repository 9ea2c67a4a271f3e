"""GET /healthz: 200 when the database and the broker answer, else 503 naming what is down."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import refund_worker.api.app as api_app
from refund_worker.db import Database
from tests.api.support import StartApi


def test_everything_up_is_200(start_api: StartApi) -> None:
    response = start_api(broker_check=lambda: True).anonymous.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok"}


def _raises() -> bool:
    raise ConnectionRefusedError("redis://:hunter2@broker refused")


@pytest.mark.parametrize("check", [lambda: False, _raises])
def test_broker_down_is_503_naming_the_broker(
    start_api: StartApi, check: Callable[[], bool]
) -> None:
    response = start_api(broker_check=check).anonymous.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "down"}
    assert "hunter2" not in response.text


def test_database_down_is_503_naming_the_database(start_api: StartApi, tmp_path: Path) -> None:
    unreachable = Database.from_url(f"sqlite:///{tmp_path}/no/such/dir/refunds.db")
    try:
        response = start_api(database=unreachable).anonymous.get("/healthz")
    finally:
        unreachable.dispose()

    assert response.status_code == 503
    assert response.json() == {"database": "down", "broker": "ok"}


def test_a_hanging_check_counts_as_down(
    start_api: StartApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_app, "CHECK_TIMEOUT_SECONDS", 0.2)
    release = threading.Event()
    try:
        response = start_api(broker_check=lambda: release.wait(10)).anonymous.get("/healthz")
    finally:
        release.set()

    assert response.status_code == 503
    assert response.json()["broker"] == "down"


def test_a_broker_that_is_not_redis_is_unchecked(start_api: StartApi) -> None:
    response = start_api(broker_check=None, broker_url="memory://").anonymous.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "unchecked"}


def test_default_check_pings_redis_and_reports_it_down(start_api: StartApi) -> None:
    response = start_api(
        broker_check=None, broker_url="redis://127.0.0.1:1/0"
    ).anonymous.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "down"}
