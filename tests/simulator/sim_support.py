"""Helpers shared by the simulator tests."""

from __future__ import annotations

import time
from typing import Any

import httpx

from refund_worker.simulator import OAuthCredentials

TOKEN = "sim-token"
LIMITED_TOKEN = "limited-token"
OAUTH = OAuthCredentials("consumer-key", "consumer-secret", "access-token", "access-secret")


class Clock:
    """Real time unless frozen; tests move it by hand."""

    def __init__(self) -> None:
        self.frozen: float | None = None

    def __call__(self) -> float:
        return time.time() if self.frozen is None else self.frozen


def order(client: httpx.Client, order_id: int) -> dict[str, Any]:
    response = client.get(f"/V1/orders/{order_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def validation_error(*messages: str) -> dict[str, str]:
    return {"message": "Creditmemo Document Validation Error(s):\n" + "\n".join(messages)}
