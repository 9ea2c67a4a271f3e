"""GET /V1/creditmemos with searchCriteria: every condition type, OR/AND, sorting, paging."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from refund_worker.simulator import SimulatorState
from refund_worker.simulator.search import Filter, SearchCriteria, apply, matches, parse
from tests.simulator.sim_support import Clock

T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC


@pytest.fixture
def memos(state: SimulatorState, clock: Clock, client: httpx.Client) -> list[dict[str, Any]]:
    """Five credit memos at known times.

    ===  =====  ===========  =======  ===================
    id   order  grand_total  invoice  created_at
    ===  =====  ===========  =======  ===================
     1     4       50.0        -      2025-06-15 15:06:40
     2     9       52.0        -      2025-06-15 15:06:40
     3     2       60.0        -      2025-06-15 16:06:40
     4     7       24.0        -      2025-06-16 15:06:40
     5     1       56.29       1      2025-06-16 15:06:40
    ===  =====  ===========  =======  ===================
    """
    clock.frozen = T0
    state.reset("demo")
    clock.frozen = T0 + 3600
    assert client.post("/V1/order/2/refund", json={}).json() == 3
    clock.frozen = T0 + 86400
    body = {"items": [{"order_item_id": 10, "qty": 1}]}
    assert client.post("/V1/order/7/refund", json=body).json() == 4
    body = {
        "isOnline": True,
        "items": [{"order_item_id": 1, "qty": 1}],
        "arguments": {"shipping_amount": 0},
    }
    assert client.post("/V1/invoice/1/refund", json=body).json() == 5
    return state.creditmemos()


def criteria(*groups: list[tuple[str, str, str]], **extra: Any) -> dict[str, str]:
    params: dict[str, str] = {}
    for g, group in enumerate(groups):
        for f, (field, value, condition) in enumerate(group):
            prefix = f"searchCriteria[filter_groups][{g}][filters][{f}]"
            params[f"{prefix}[field]"] = field
            params[f"{prefix}[value]"] = value
            params[f"{prefix}[condition_type]"] = condition
    for key, value in extra.items():
        params[f"searchCriteria[{key}]"] = str(value)
    return params


def ids(client: httpx.Client, params: dict[str, str]) -> list[int]:
    response = client.get("/V1/creditmemos", params=params)
    assert response.status_code == 200, response.text
    return [item["entity_id"] for item in response.json()["items"]]


@pytest.mark.usefixtures("memos")
@pytest.mark.parametrize(
    ("field", "value", "condition", "expected"),
    [
        ("order_id", "2", "eq", [3]),
        ("order_id", "2", "neq", [1, 2, 4, 5]),
        ("order_id", "2,7", "in", [3, 4]),
        ("order_id", "2, 7", "nin", [1, 2, 5]),
        ("grand_total", "52", "gt", [3, 5]),
        ("grand_total", "52", "gteq", [2, 3, 5]),
        ("grand_total", "52", "lt", [1, 4]),
        ("grand_total", "52", "lteq", [1, 2, 4]),
        ("grand_total", "52", "moreq", [2, 3, 5]),
        ("increment_id", "%3", "like", [3]),
        ("increment_id", "00000000_", "like", [1, 2, 3, 4, 5]),
        ("increment_id", "%3", "nlike", [1, 2, 4, 5]),
        ("transaction_id", "TXN-%", "like", [5]),
        ("invoice_id", "1", "null", [1, 2, 3, 4]),
        ("invoice_id", "1", "notnull", [5]),
        ("invoice_id", "1", "neq", []),  # SQL: NULL <> 1 is not true
        ("created_at", "2025-06-15 16:00:00", "from", [3, 4, 5]),
        ("created_at", "2025-06-15 16:06:40", "to", [1, 2, 3]),
        ("created_at", "2025-06-16", "gteq", [4, 5]),
        ("created_at", "2025-06-15T16:06:40Z", "eq", [3]),
        ("state", "2", "finset", [1, 2, 3, 4, 5]),
    ],
)
def test_condition_types(
    client: httpx.Client, field: str, value: str, condition: str, expected: list[int]
) -> None:
    assert ids(client, criteria([(field, value, condition)])) == expected


@pytest.mark.usefixtures("memos")
def test_default_condition_is_eq(client: httpx.Client) -> None:
    params = {
        "searchCriteria[filter_groups][0][filters][0][field]": "order_id",
        "searchCriteria[filter_groups][0][filters][0][value]": "7",
    }
    assert ids(client, params) == [4]


@pytest.mark.usefixtures("memos")
def test_filters_in_a_group_are_ored_and_groups_are_anded(client: httpx.Client) -> None:
    either = [("order_id", "2", "eq"), ("order_id", "7", "eq")]
    assert ids(client, criteria(either)) == [3, 4]
    assert ids(client, criteria(either, [("grand_total", "30", "gt")])) == [3]
    assert ids(client, criteria(either, [("grand_total", "100", "gt")])) == []


@pytest.mark.usefixtures("memos")
def test_the_worker_reconciliation_query(client: httpx.Client) -> None:
    params = criteria([("order_id", "2", "eq")], [("created_at", "2025-06-15 16:00:00", "gteq")])
    response = client.get("/V1/creditmemos", params=params).json()
    [memo] = response["items"]
    assert memo["entity_id"] == 3
    assert "items" in memo
    assert "comments" in memo
    assert response["total_count"] == 1
    assert response["search_criteria"] == {
        "filter_groups": [
            {"filters": [{"field": "order_id", "value": "2", "condition_type": "eq"}]},
            {
                "filters": [
                    {
                        "field": "created_at",
                        "value": "2025-06-15 16:00:00",
                        "condition_type": "gteq",
                    }
                ]
            },
        ]
    }


@pytest.mark.usefixtures("memos")
def test_sorting(client: httpx.Client) -> None:
    by_total = {
        "searchCriteria[sortOrders][0][field]": "grand_total",
        "searchCriteria[sortOrders][0][direction]": "DESC",
    }
    assert ids(client, by_total) == [3, 5, 2, 1, 4]
    two_keys = {
        "searchCriteria[sort_orders][0][field]": "created_at",
        "searchCriteria[sort_orders][0][direction]": "desc",
        "searchCriteria[sort_orders][1][field]": "entity_id",
        "searchCriteria[sort_orders][1][direction]": "ASC",
    }
    assert ids(client, two_keys) == [4, 5, 3, 1, 2]


@pytest.mark.usefixtures("memos")
def test_paging_and_the_last_page_quirk(client: httpx.Client) -> None:
    page = {"searchCriteria[pageSize]": "2"}
    assert ids(client, {**page, "searchCriteria[currentPage]": "1"}) == [1, 2]
    assert ids(client, {**page, "searchCriteria[currentPage]": "2"}) == [3, 4]
    assert ids(client, {**page, "searchCriteria[currentPage]": "3"}) == [5]
    # Past the last page Magento serves the last page again.
    response = client.get("/V1/creditmemos", params={**page, "searchCriteria[currentPage]": "9"})
    assert [m["entity_id"] for m in response.json()["items"]] == [5]
    assert response.json()["total_count"] == 5
    assert response.json()["search_criteria"] == {
        "filter_groups": [],
        "page_size": 2,
        "current_page": 9,
    }


@pytest.mark.usefixtures("memos")
def test_camel_and_snake_keys(client: httpx.Client) -> None:
    camel = {
        "searchCriteria[filterGroups][0][filters][0][field]": "order_id",
        "searchCriteria[filterGroups][0][filters][0][value]": "9",
        "searchCriteria[filterGroups][0][filters][0][conditionType]": "eq",
    }
    snake = {
        k.replace("searchCriteria", "search_criteria")
        .replace("filterGroups", "filter_groups")
        .replace("conditionType", "condition_type"): v
        for k, v in camel.items()
    }
    assert ids(client, camel) == ids(client, snake) == [2]


@pytest.mark.usefixtures("memos")
def test_search_without_filters(client: httpx.Client) -> None:
    assert ids(client, {"searchCriteria": ""}) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            criteria([("order_id", "", "eq")]),
            {"message": "Invalid search filter: %1 cannot be empty.", "parameters": ["value"]},
        ),
        (
            criteria([("order_id", "0", "eq")]),
            {"message": "Invalid search filter: %1 cannot be empty.", "parameters": ["value"]},
        ),
        (
            criteria([("", "2", "eq")]),
            {"message": "Invalid search filter: %1 cannot be empty.", "parameters": ["field"]},
        ),
        (
            {},
            {
                "message": '"%fieldName" is required. Enter and try again.',
                "parameters": {"fieldName": "searchCriteria"},
            },
        ),
        (
            {"searchCriteria[foo]": "1"},
            {
                "message": '"%fieldName" is not supported. Correct the field name and try again.',
                "parameters": {"fieldName": "Foo"},
            },
        ),
    ],
)
def test_bad_criteria(client: httpx.Client, params: dict[str, str], expected: Any) -> None:
    response = client.get("/V1/creditmemos", params=params)
    assert (response.status_code, response.json()) == (400, expected)


def test_unknown_column(client: httpx.Client) -> None:
    response = client.get("/V1/creditmemos", params=criteria([("comment", "x", "eq")]))
    assert response.status_code == 400
    assert "Unknown column 'main_table.comment'" in response.json()["message"]


def test_bad_page_size(client: httpx.Client) -> None:
    response = client.get("/V1/creditmemos", params={"searchCriteria[pageSize]": "ten"})
    assert response.status_code == 400
    assert '"page_size"' in response.json()["message"]


# ---------------------------------------------------------------------- the pure functions


def test_parse_nested_keys_in_index_order() -> None:
    pairs = [
        ("searchCriteria[filter_groups][1][filters][0][field]", "b"),
        ("searchCriteria[filter_groups][1][filters][0][value]", "2"),
        ("searchCriteria[filter_groups][0][filters][10][field]", "c"),
        ("searchCriteria[filter_groups][0][filters][10][value]", "3"),
        ("searchCriteria[filter_groups][0][filters][2][field]", "a"),
        ("searchCriteria[filter_groups][0][filters][2][value]", "1"),
        ("searchCriteria[filter_groups][0][filters][2][condition_type]", "LIKE"),
    ]
    parsed = parse(pairs)
    assert parsed.filter_groups == [
        [Filter("a", "1", "like"), Filter("c", "3", "eq")],
        [Filter("b", "2", "eq")],
    ]


def test_matches_sql_semantics() -> None:
    row = {"a": None, "s": "Hello_World", "n": 10}
    assert not matches(row, Filter("a", "x", "eq"))
    assert not matches(row, Filter("a", "x", "nin"))
    assert matches(row, Filter("s", "hello_world", "eq"))  # case-insensitive collation
    assert matches(row, Filter("s", "hello\\_%", "like"))
    assert not matches(row, Filter("s", "hellox%", "like"))
    assert matches(row, Filter("n", "9.5", "gt"))
    assert matches(row, Filter("n", "abc", "gt"))  # MySQL casts 'abc' to 0


def test_apply_pages_and_totals() -> None:
    rows = [{"entity_id": n} for n in range(1, 8)]
    page, total = apply(rows, SearchCriteria(page_size=3, current_page=3), frozenset({"entity_id"}))
    assert (page, total) == ([6], 7)
    page, total = apply(rows, SearchCriteria(page_size=0), frozenset({"entity_id"}))
    assert (len(page), total) == (7, 7)
