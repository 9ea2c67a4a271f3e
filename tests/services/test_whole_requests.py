"""A request to Magento leaves in one write: a worker killed while sending it sends all of it
or nothing, never headers without their body (which Magento would read as a RefundOrder without
parameters: refund the whole order, without our marker)."""

from __future__ import annotations

import httpcore
import pytest

from refund_worker.errors import MagentoUnavailable
from refund_worker.magento import BearerAuth, MagentoClient
from refund_worker.runtime import WholeRequestTransport, _WholeRequestStream
from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import running_simulator


class Recording(httpcore.NetworkStream):
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.writes.append(buffer)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return b"HTTP/1.1 200 OK\r\n"

    def close(self) -> None:
        self.closed = True


def test_writes_wait_for_the_first_read_and_leave_together() -> None:
    inner = Recording()
    stream = _WholeRequestStream(inner)
    stream.write(b"POST /rest/V1/order/7/refund HTTP/1.1\r\nContent-Length: 2\r\n\r\n")
    stream.write(b"{}")
    assert inner.writes == []  # killed here: nothing was sent
    assert stream.read(100) == b"HTTP/1.1 200 OK\r\n"
    assert inner.writes == [b"POST /rest/V1/order/7/refund HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"]
    stream.read(100)
    assert len(inner.writes) == 1
    stream.write(b"unsent")
    stream.close()
    assert inner.closed
    assert len(inner.writes) == 1


def test_the_magento_client_works_over_it_and_still_maps_failures() -> None:
    state = SimulatorState(tokens={"t": None})
    with running_simulator(state) as sim, MagentoClient(
        sim.url, auth=BearerAuth("t"), timeout=2, transport=WholeRequestTransport()
    ) as client:
        order = state.add_order({"payment_method": "checkmo",
                                 "items": [{"sku": "A", "qty": 2, "price": 5}]})
        assert client.get_order(order["order_id"])["entity_id"] == order["order_id"]
        item = order["items"][0]["item_id"]
        memo_id = client.refund_order(order["order_id"], {
            "items": [{"order_item_id": item, "qty": 1}],
            "comment": {"comment": "[refund-worker:x]", "is_visible_on_front": 0}})
        assert state.creditmemo(memo_id)["comments"][0]["comment"] == "[refund-worker:x]"
        state.add_fault({"route": "order_refund", "kind": "commit_then_drop", "count": 1})
        with pytest.raises(MagentoUnavailable) as caught:
            client.refund_order(order["order_id"], {"items": [{"order_item_id": item, "qty": 1}]})
        assert caught.value.outcome_unknown
        assert client.get_order(order["order_id"])["entity_id"] == order["order_id"]
