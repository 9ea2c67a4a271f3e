"""Connections that end early: drop faults under uvloop, and bodies that never fully arrive."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from refund_worker.simulator.testing import SimulatorProcess, simulator_process

TOKEN = "sim-token"


@pytest.fixture(scope="module")
def process() -> Iterator[SimulatorProcess]:
    """The simulator as `python -m refund_worker.simulator` (uvloop + httptools when present)."""
    with simulator_process(seed="demo") as running:
        yield running


def control(process: SimulatorProcess) -> httpx.Client:
    return httpx.Client(base_url=process.url, timeout=5)


@pytest.mark.parametrize("kind", ["reset", "commit_then_drop"])
def test_drop_faults_close_the_connection_without_an_answer(
    process: SimulatorProcess, kind: str
) -> None:
    with control(process) as admin:
        admin.post("/_simulator/reset")
        admin.post("/_simulator/faults",
                   json={"route": "order_refund", "kind": kind, "count": 1})
        before = len(admin.get("/_simulator/creditmemos").json())
        with (
            httpx.Client(base_url=process.url, timeout=5,
                         headers={"Authorization": f"Bearer {TOKEN}"}) as client,
            pytest.raises(httpx.TransportError),
        ):
            client.post("/rest/V1/order/2/refund", json={})
        after = len(admin.get("/_simulator/creditmemos").json())
    assert after - before == (1 if kind == "commit_then_drop" else 0)


@pytest.mark.parametrize("sent", [0, 10], ids=["headers-only", "part-of-the-body"])
def test_a_body_cut_short_is_never_run(process: SimulatorProcess, sent: int) -> None:
    with control(process) as admin:
        admin.post("/_simulator/reset")
        before = len(admin.get("/_simulator/creditmemos").json())
        parts = urlsplit(process.url)
        body = b'{"items": [{"order_item_id": 3, "qty": 1}]}'
        head = (
            f"POST /rest/V1/order/2/refund HTTP/1.1\r\nHost: {parts.hostname}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
            sock.sendall(head + body[:sent])  # the worker was killed before its body went out
        time.sleep(0.5)  # let the server see the request and the disconnect
        order = httpx.get(f"{process.url}/rest/V1/orders/2",
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()
        after = len(admin.get("/_simulator/creditmemos").json())
    assert after == before
    assert float(order.get("total_refunded") or 0) == 0
