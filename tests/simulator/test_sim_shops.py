"""One simulator process can be several Magento installations, each under its own path prefix
with its own orders, credit memos and faults."""

from __future__ import annotations

import httpx

from refund_worker.magento import BearerAuth, MagentoClient
from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import running_simulator

TOKEN = "shop-token"


def test_each_shop_under_its_prefix_keeps_its_own_world() -> None:
    root, eu = SimulatorState(tokens={TOKEN: None}), SimulatorState(tokens={TOKEN: None})
    root_order = root.add_order({"payment_method": "checkmo", "items": [{"sku": "A", "qty": 1,
                                                                         "price": 10}]})
    eu_order = eu.add_order({"payment_method": "checkmo", "items": [{"sku": "B", "qty": 2,
                                                                     "price": 30}]})
    eu.add_fault({"route": "order_get", "kind": "status", "status": 503, "count": 1})
    with running_simulator(root, shops={"eu": eu}) as sim:
        at_root = MagentoClient(sim.url, auth=BearerAuth(TOKEN))
        in_eu = MagentoClient(f"{sim.url}/eu", auth=BearerAuth(TOKEN))
        try:
            assert at_root.get_order(root_order["order_id"])["items"][0]["sku"] == "A"
            with httpx.Client() as plain:  # the fault belongs to the eu shop alone
                assert plain.get(
                    f"{sim.url}/eu/rest/V1/orders/{eu_order['order_id']}",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ).status_code == 503
                assert plain.get(f"{sim.url}/eu/_simulator/health").status_code == 200
            assert in_eu.get_order(eu_order["order_id"])["items"][0]["sku"] == "B"
            memo_id = in_eu.refund_order(eu_order["order_id"], {})
        finally:
            at_root.close()
            in_eu.close()
    assert [memo["entity_id"] for memo in eu.creditmemos()] == [memo_id]
    assert root.creditmemos() == []
