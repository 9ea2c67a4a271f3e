"""A request to Magento leaves in one write: a worker killed while sending it sends all of it
or nothing, never headers without their body (which Magento would read as a RefundOrder without
parameters: refund the whole order, without our marker)."""

from __future__ import annotations

import json

import pytest

from refund_worker.errors import MagentoUnavailable
from refund_worker.magento import BearerAuth, MagentoClient
from refund_worker.magento.transport import LeanTransport
from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import running_simulator
from tests.fakes import record_socket_writes


def test_the_request_line_headers_and_body_leave_in_one_sendall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = SimulatorState(tokens={"t": None})
    with running_simulator(state) as sim:
        writes = record_socket_writes(monkeypatch, sim.port)
        with MagentoClient(
            sim.url, auth=BearerAuth("t"), timeout=2, transport=LeanTransport()
        ) as client:
            order = state.add_order({"payment_method": "checkmo",
                                     "items": [{"sku": "A", "qty": 2, "price": 5}]})
            body = {"items": [{"order_item_id": order["items"][0]["item_id"], "qty": 1}],
                    "comment": {"comment": "[refund-worker:x]", "is_visible_on_front": 0}}
            memo_id = client.refund_order(order["order_id"], body)
    assert state.creditmemo(memo_id)["comments"][0]["comment"] == "[refund-worker:x]"
    [request] = writes
    head, _, sent = request.partition(b"\r\n\r\n")
    assert head.startswith(f"POST /rest/default/V1/order/{order['order_id']}/refund ".encode())
    assert f"\r\nContent-Length: {len(sent)}\r\n".encode() in head + b"\r\n"
    assert json.loads(sent) == body


def test_the_magento_client_works_over_it_and_still_maps_failures() -> None:
    state = SimulatorState(tokens={"t": None})
    with running_simulator(state) as sim, MagentoClient(
        sim.url, auth=BearerAuth("t"), timeout=2, transport=LeanTransport()
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
