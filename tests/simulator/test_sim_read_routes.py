"""The GET routes integrations use: order search, order items, store structure, ``fields=``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from refund_worker.simulator import SimulatorState
from refund_worker.simulator.partial import filter_response, parse
from tests.simulator.sim_support import LIMITED_TOKEN


def criteria(*filters: tuple[int, str, str, str], **extra: Any) -> dict[str, str]:
    """searchCriteria query parameters: (group, field, value, condition) filters, page/sort."""
    params: dict[str, str] = {}
    counts: dict[int, int] = {}
    for group, name, value, condition in filters:
        index = counts.get(group, 0)
        counts[group] = index + 1
        prefix = f"searchCriteria[filter_groups][{group}][filters][{index}]"
        params[f"{prefix}[field]"] = name
        params[f"{prefix}[value]"] = value
        params[f"{prefix}[condition_type]"] = condition
    for key, value in extra.items():
        params[f"searchCriteria[{key}]"] = str(value)
    return params or {"searchCriteria": ""}


def test_order_search_by_increment_id(client: httpx.Client) -> None:
    found = client.get("/V1/orders", params=criteria((0, "increment_id", "000000007", "eq")))
    assert found.status_code == 200
    body = found.json()
    assert body["total_count"] == 1
    [order] = body["items"]
    assert (order["entity_id"], order["increment_id"]) == (7, "000000007")
    assert order == client.get("/V1/orders/7").json()  # each hit is the whole order
    assert body["search_criteria"]["filter_groups"][0]["filters"][0]["field"] == "increment_id"
    some = client.get(
        "/V1/orders", params=criteria((0, "increment_id", "000000002,000000009,nope", "in"))
    ).json()
    assert [o["entity_id"] for o in some["items"]] == [2, 9]
    none = client.get("/V1/orders", params=criteria((0, "increment_id", "999", "eq"))).json()
    assert (none["items"], none["total_count"]) == ([], 0)


def test_order_search_by_status_dates_and_pages(
    client: httpx.Client, state: SimulatorState
) -> None:
    for day in ("2025-03-01 10:00:00", "2025-03-02 10:00:00", "2025-03-03 10:00:00"):
        state.add_order({"created_at": day, "items": [{"sku": "D", "qty": 1, "price": 1}]})
    window = criteria(
        (0, "created_at", "2025-03-01 12:00:00", "from"),
        (1, "created_at", "2025-03-03", "to"),
    )
    dated = client.get("/V1/orders", params=window).json()
    assert [o["created_at"] for o in dated["items"]] == ["2025-03-02 10:00:00"]
    complete = client.get("/V1/orders", params=criteria((0, "status", "complete", "eq"))).json()
    assert sorted(o["entity_id"] for o in complete["items"]) == [1, 2, 7, 9]
    page = client.get(
        "/V1/orders",
        params={
            **criteria((0, "status", "complete", "eq")),
            "searchCriteria[pageSize]": "3",
            "searchCriteria[currentPage]": "2",
            "searchCriteria[sortOrders][0][field]": "entity_id",
            "searchCriteria[sortOrders][0][direction]": "DESC",
        },
    ).json()
    assert ([o["entity_id"] for o in page["items"]], page["total_count"]) == ([1], 4)


def test_order_search_needs_search_criteria_and_real_columns(client: httpx.Client) -> None:
    missing = client.get("/V1/orders")
    assert (missing.status_code, missing.json()["parameters"]) == (
        400,
        {"fieldName": "searchCriteria"},
    )
    unknown = client.get("/V1/orders", params=criteria((0, "nope", "1", "eq")))
    assert unknown.status_code == 400
    assert "Unknown column 'main_table.nope'" in unknown.json()["message"]


def test_order_items_are_not_an_order_id(client: httpx.Client) -> None:
    listed = client.get("/V1/orders/items", params=criteria((0, "sku", "SOCK-02", "eq")))
    assert listed.status_code == 200
    assert [(i["item_id"], i["order_id"]) for i in listed.json()["items"]] == [(6, 3), (14, 9)]
    one = client.get("/V1/orders/items/14").json()
    assert one == client.get("/V1/orders/9").json()["items"][1]
    assert client.get("/V1/orders/items/999").status_code == 404
    assert client.get("/V1/orders/items/0").json()["message"] == (
        "An ID is needed. Set the ID and try again."
    )


def test_order_item_shows_its_parent(client: httpx.Client, state: SimulatorState) -> None:
    state.add_order(
        {
            "order": {
                "entity_id": 500,
                "increment_id": "000000500",
                "state": "processing",
                "status": "processing",
                "grand_total": 20.0,
                "base_grand_total": 20.0,
                "customer_email": "c@example.com",
                "payment": {"method": "checkmo", "account_status": None, "cc_last4": None,
                            "additional_information": ["Check / Money order"]},
                "items": [
                    {"item_id": 900, "sku": "TEE-M-RED", "product_type": "configurable",
                     "price": 20.0, "qty_ordered": 1.0},
                    {"item_id": 901, "sku": "TEE-M-RED", "product_type": "simple",
                     "parent_item_id": 900, "price": 0.0, "qty_ordered": 1.0},
                ],
            }
        }
    )  # fmt: skip
    child = client.get("/V1/orders/items/901").json()
    assert child["parent_item_id"] == 900
    assert child["parent_item"] == client.get("/V1/orders/items/900").json()
    assert "parent_item" not in child["parent_item"]


def test_store_routes(client: httpx.Client) -> None:
    websites = client.get("/V1/store/websites").json()
    assert [(w["id"], w["code"]) for w in websites] == [(0, "admin"), (1, "base")]
    groups = client.get("/V1/store/storeGroups").json()
    assert [(g["id"], g["code"], g["default_store_id"]) for g in groups] == [
        (0, "default", 0),
        (1, "main_website_store", 1),
    ]
    views = client.get("/V1/store/storeViews").json()
    assert [(v["id"], v["code"], v["store_group_id"]) for v in views] == [
        (0, "admin", 0),
        (1, "default", 1),
        (2, "us", 1),
    ]
    configs = client.get("/V1/store/storeConfigs").json()
    assert [c["code"] for c in configs] == ["default", "us"]
    assert configs[0]["base_url"].startswith("http://127.0.0.1:")
    only = client.get("/V1/store/storeConfigs", params={"storeCodes[0]": "us"}).json()
    assert [c["code"] for c in only] == ["us"]


def test_store_and_order_routes_need_their_resources(anon: httpx.Client, sim: Any) -> None:
    assert anon.get("/V1/store/websites").json() == {
        "message": "The consumer isn't authorized to access %resources.",
        "parameters": {"resources": "Magento_Backend::store"},
    }
    with httpx.Client(
        base_url=f"{sim.url}/rest", headers={"Authorization": f"Bearer {LIMITED_TOKEN}"}
    ) as viewer:  # Magento_Sales::actions_view only
        assert viewer.get("/V1/orders", params=criteria()).status_code == 200
        assert viewer.get("/V1/orders/items/1").status_code == 200
        assert viewer.get("/V1/store/storeViews").status_code == 401


@pytest.mark.parametrize(
    "path",
    ["/V1/orders/2/", "/V1/orders/2//", "/default/V1/orders/2/", "/V1/orders/items/3/"],
)
def test_trailing_slashes_are_trimmed(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 200


def test_trailing_slash_with_search_criteria(client: httpx.Client) -> None:
    found = client.get("/V1/invoices/", params=criteria((0, "order_id", "7", "eq"))).json()
    assert [i["entity_id"] for i in found["items"]] == [6]


def test_fields_partial_responses(client: httpx.Client) -> None:
    flat = client.get(
        "/V1/orders",
        params={
            **criteria((0, "entity_id", "2,3", "in")),
            "fields": "items[entity_id,increment_id],total_count",
        },
    ).json()
    assert flat == {
        "items": [
            {"entity_id": 2, "increment_id": "000000002"},
            {"entity_id": 3, "increment_id": "000000003"},
        ],
        "total_count": 2,
    }
    nested = client.get(
        "/V1/orders", params={**criteria((0, "entity_id", "2", "eq")),
                              "fields": "items[entity_id,items[sku],payment[method]]"}
    ).json()  # fmt: skip
    assert nested == {
        "items": [
            {
                "entity_id": 2,
                "items": [{"sku": "BAG-01"}, {"sku": "BOTTLE-06"}],
                "payment": {"method": "checkmo"},
            }
        ]
    }
    one = client.get("/V1/orders/2", params={"fields": "entity_id,state,nope"}).json()
    assert one == {"entity_id": 2, "state": "complete"}
    assert client.get("/V1/orders/2", params={"fields": "entity_id)"}).json() == []
    assert client.get("/V1/orders/2", params={"fields": ""}).json()["entity_id"] == 2
    views = client.get("/V1/store/storeViews", params={"fields": "code"}).json()
    assert views == [{"code": "admin"}, {"code": "default"}, {"code": "us"}]


def test_fields_filter_parsing() -> None:
    assert parse("a,b[c,d[e]],f") == {"a": None, "b": {"c": None, "d": {"e": None}}, "f": None}
    assert parse("a[b") is None
    assert parse("a]") is None
    assert parse("a b") is None
    assert parse("") is None
    assert filter_response({"a": 1, "b": [{"c": 2, "x": 3}]}, "b[c]") == {"b": [{"c": 2}]}
    assert filter_response({"a": 1}, "zzz") == []  # PHP's empty array
