"""Helpers shared by the simulator tests."""

from __future__ import annotations

from typing import Any

import httpx

from refund_worker.simulator import OAuthCredentials

TOKEN = "sim-token"
LIMITED_TOKEN = "limited-token"
OAUTH = OAuthCredentials("consumer-key", "consumer-secret", "access-token", "access-secret")


def order(client: httpx.Client, order_id: int) -> dict[str, Any]:
    response = client.get(f"/V1/orders/{order_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def validation_error(*messages: str) -> dict[str, str]:
    return {"message": "Creditmemo Document Validation Error(s):\n" + "\n".join(messages)}
