"""MagentoClient against httpx.MockTransport: URLs, bodies, results, failures and CallRecords."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from refund_worker.errors import (
    ConfigurationError,
    InvalidRefund,
    MagentoAuthError,
    MagentoNotFound,
    MagentoRateLimited,
    MagentoRejected,
    MagentoUnavailable,
)
from refund_worker.magento import CallRecord, MagentoClient
from refund_worker.reconcile import with_marker

MakeClient = Callable[..., MagentoClient]


def reply(body: Any, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body)


def query(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))


def creditmemo(entity_id: int, *comments: str) -> dict[str, Any]:
    return {
        "entity_id": entity_id,
        "order_id": 42,
        "comments": [
            {"entity_id": entity_id * 10 + i, "comment": c} for i, c in enumerate(comments)
        ],
    }


# ---------------------------------------------------------------- routes and results


CALLS: list[tuple[str, Callable[[MagentoClient], Any], Any, str, str, Any]] = [
    # operation, call, response body, method, path, expected result
    ("order_get", lambda c: c.get_order(5), {"entity_id": 5}, "GET", "/orders/5", {"entity_id": 5}),
    (
        "invoice_get",
        lambda c: c.get_invoice(7),
        {"entity_id": 7},
        "GET",
        "/invoices/7",
        {"entity_id": 7},
    ),
    (
        "invoice_refund",
        lambda c: c.refund_invoice(7, {"isOnline": False}),
        "123",
        "POST",
        "/invoice/7/refund",
        123,
    ),
    (
        "order_refund",
        lambda c: c.refund_order(5, {"notify": False}),
        124,
        "POST",
        "/order/5/refund",
        124,
    ),
    (
        "creditmemo_refund",
        lambda c: c.refund_creditmemo({"creditmemo": {"order_id": 5}, "offlineRequested": True}),
        {"entity_id": 9, "state": 2},
        "POST",
        "/creditmemo/refund",
        {"entity_id": 9, "state": 2},
    ),
    (
        "creditmemo_save",
        lambda c: c.save_creditmemo({"entity": {"order_id": 5}}),
        {"entity_id": 9},
        "POST",
        "/creditmemo",
        {"entity_id": 9},
    ),
    (
        "creditmemo_get",
        lambda c: c.get_creditmemo(9),
        {"entity_id": 9},
        "GET",
        "/creditmemo/9",
        {"entity_id": 9},
    ),
    (
        "creditmemo_emails",
        lambda c: c.send_creditmemo_email(9),
        True,
        "POST",
        "/creditmemo/9/emails",
        True,
    ),
]


@pytest.mark.parametrize(
    ("operation", "call", "body", "method", "route", "expected"), CALLS, ids=[c[0] for c in CALLS]
)
def test_each_operation_hits_its_route_and_parses_the_result(
    make_client: MakeClient,
    recorder: Any,
    operation: str,
    call: Callable[[MagentoClient], Any],
    body: Any,
    method: str,
    route: str,
    expected: Any,
) -> None:
    client = make_client(reply(body))
    assert call(client) == expected
    (request,) = recorder.requests
    assert request.method == method
    assert str(request.url) == f"http://magento.test:8081/rest/default/V1{route}"
    assert request.headers["User-Agent"] == "refund-worker/0.1"
    assert request.headers["Accept"] == "application/json"
    (record,) = recorder.records
    assert record.operation == operation
    assert record.method == method
    assert record.path == f"/rest/default/V1{route}"
    assert record.http_status == 200
    assert record.error is None
    assert record.duration_ms >= 0


def test_post_sends_the_body_as_json(make_client: MakeClient, recorder: Any) -> None:
    body = {
        "items": [{"order_item_id": 11, "qty": 1.5}],
        "notify": False,
        "comment": {"comment": "refund-worker:abc", "is_visible_on_front": 0},
    }
    make_client(reply(55)).refund_order(5, body)
    (request,) = recorder.requests
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == body


def test_send_creditmemo_email_false(make_client: MakeClient, recorder: Any) -> None:
    assert make_client(reply(False)).send_creditmemo_email(9) is False
    assert recorder.requests[0].content == b""


@pytest.mark.parametrize("body", [125, "125", " 125 "])
def test_creditmemo_id_as_int_or_string(make_client: MakeClient, body: Any) -> None:
    client = make_client(reply(body))
    assert client.refund_order(5, {}) == 125
    assert client.refund_invoice(7, {}) == 125


@pytest.mark.parametrize("body", ["abc", "12.5", 12.5, True, None, 0, "-3", [125], {"id": 125}])
def test_unparseable_refund_result_means_outcome_unknown(
    make_client: MakeClient, recorder: Any, body: Any
) -> None:
    with pytest.raises(MagentoUnavailable) as caught:
        make_client(reply(body)).refund_order(5, {})
    assert caught.value.outcome_unknown is True
    assert caught.value.http_status == 200
    assert str(caught.value).startswith("order_refund for order 5: Magento answered 200")
    (record,) = recorder.records
    assert record.http_status == 200
    assert record.error is not None
    assert record.error.startswith("unexpected response body")


def test_non_json_success_body_of_a_refund_is_outcome_unknown(make_client: MakeClient) -> None:
    client = make_client(lambda request: httpx.Response(200, text="<html>Welcome</html>"))
    with pytest.raises(MagentoUnavailable) as caught:
        client.refund_invoice(7, {})
    assert caught.value.outcome_unknown is True
    assert "Welcome" in str(caught.value)


def test_non_json_success_body_of_a_read_is_retryable_not_unknown(make_client: MakeClient) -> None:
    client = make_client(lambda request: httpx.Response(200, text="<html>Welcome</html>"))
    with pytest.raises(MagentoUnavailable) as caught:
        client.get_order(5)
    assert caught.value.outcome_unknown is False


def test_a_read_that_is_not_an_object_is_refused(make_client: MakeClient) -> None:
    with pytest.raises(MagentoUnavailable):
        make_client(reply([1, 2])).get_creditmemo(9)
    with pytest.raises(MagentoUnavailable):
        make_client(reply("yes")).send_creditmemo_email(9)


# ---------------------------------------------------------------- store codes and base URL


def test_store_code_default_and_per_call(make_client: MakeClient, recorder: Any) -> None:
    client = make_client(reply({"entity_id": 5}), store_code="german")
    client.get_order(5)
    client.get_order(5, store_code="all")
    paths = [request.url.path for request in recorder.requests]
    assert paths == ["/rest/german/V1/orders/5", "/rest/all/V1/orders/5"]
    assert [record.path for record in recorder.records] == paths


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_invoice(1, store_code="fr"),
        lambda c: c.search_invoices(order_id=1, store_code="fr"),
        lambda c: c.refund_invoice(1, {}, store_code="fr"),
        lambda c: c.refund_order(1, {}, store_code="fr"),
        lambda c: c.refund_creditmemo({}, store_code="fr"),
        lambda c: c.save_creditmemo({}, store_code="fr"),
        lambda c: c.get_creditmemo(1, store_code="fr"),
        lambda c: c.search_creditmemos(order_id=1, store_code="fr"),
        lambda c: c.send_creditmemo_email(1, store_code="fr"),
    ],
)
def test_every_method_takes_a_store_code(
    make_client: MakeClient, recorder: Any, call: Callable[[MagentoClient], Any]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(("/invoices", "/creditmemos")):
            return httpx.Response(200, json={"items": [], "total_count": 0})
        if request.url.path.endswith("/emails"):
            return httpx.Response(200, json=True)
        if request.url.path.endswith("/refund") and "creditmemo" not in request.url.path:
            return httpx.Response(200, json=3)
        return httpx.Response(200, json={"entity_id": 1})

    call(make_client(handler))
    assert recorder.requests[0].url.path.startswith("/rest/fr/V1/")


@pytest.mark.parametrize("store_code", ["", "de/../admin", "a b", "x?y=1"])
def test_a_bad_store_code_is_refused_before_any_call(
    make_client: MakeClient, recorder: Any, store_code: str
) -> None:
    client = make_client(reply({}))
    with pytest.raises(InvalidRefund):
        client.get_order(5, store_code=store_code)
    with pytest.raises(ConfigurationError):
        make_client(reply({}), store_code=store_code)
    assert recorder.requests == []


def test_base_url_with_a_path_prefix_and_trailing_slash(recorder: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        recorder.requests.append(request)
        return httpx.Response(200, json={"entity_id": 5})

    with MagentoClient(
        "https://shop.test/magento/",
        auth=httpx.BasicAuth("u", "p"),
        transport=httpx.MockTransport(handler),
        user_agent="custom/1",
    ) as client:
        client.get_order(5)
    (request,) = recorder.requests
    assert str(request.url) == "https://shop.test/magento/rest/default/V1/orders/5"
    assert request.headers["User-Agent"] == "custom/1"


@pytest.mark.parametrize(("base_url", "timeout"), [("shop.test", 10.0), ("http://shop.test", 0)])
def test_bad_settings_are_configuration_errors(base_url: str, timeout: float) -> None:
    with pytest.raises(ConfigurationError):
        MagentoClient(base_url, auth=httpx.BasicAuth("u", "p"), timeout=timeout)


def test_ids_must_be_ints(make_client: MakeClient, recorder: Any) -> None:
    client = make_client(reply({}))
    with pytest.raises(TypeError):
        client.get_order("5/../../V1/orders/6")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.refund_order(True, {})
    assert recorder.requests == []


def test_close_and_context_manager(make_client: MakeClient) -> None:
    client = make_client(reply({}))
    with client as entered:
        assert entered is client
    with pytest.raises(RuntimeError):
        client.get_order(5)


def test_a_call_logs_one_debug_line_and_nothing_at_info(
    make_client: MakeClient, recorder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(reply({"entity_id": 5}))
    with caplog.at_level(logging.DEBUG):
        client.get_order(5)
    recorder.requests.clear()
    lines = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert len(lines) == 1
    name, level, message = lines[0]
    assert (name, level) == ("refund_worker.magento.client", logging.DEBUG)
    assert message.startswith("magento order_get GET /rest/default/V1/orders/5 -> 200 in ")


def test_cookies_are_neither_kept_nor_sent(recorder: Any) -> None:
    """A session cookie from Magento must not follow later calls (threads share one client)."""

    def handler(request: httpx.Request) -> httpx.Response:
        recorder.requests.append(request)
        return httpx.Response(200, json={"entity_id": 5}, headers={"Set-Cookie": "PHPSESSID=a1"})

    with MagentoClient(
        "https://shop.test", auth=httpx.BasicAuth("u", "p"), transport=httpx.MockTransport(handler)
    ) as client:
        client.get_order(5)
        client.get_order(6)
    assert [request.headers.get("Cookie") for request in recorder.requests] == [None, None]


def test_an_auth_flow_of_several_rounds_is_followed() -> None:
    """The client runs any httpx.Auth flow: digest answers a 401 challenge with a second send."""
    challenge = 'Digest realm="magento", nonce="abc", qop="auth", algorithm=MD5'
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("Authorization"))
        if "Authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, json={"entity_id": 5})

    with MagentoClient(
        "https://shop.test", auth=httpx.DigestAuth("u", "p"), transport=httpx.MockTransport(handler)
    ) as client:
        assert client.get_order(5) == {"entity_id": 5}
    first, second = sent
    assert first is None
    assert second is not None
    assert second.startswith("Digest ")


def test_a_redirect_is_not_followed(recorder: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        recorder.requests.append(request)
        return httpx.Response(302, headers={"Location": "https://elsewhere.test/"})

    with (
        MagentoClient(
            "https://shop.test",
            auth=httpx.BasicAuth("u", "p"),
            transport=httpx.MockTransport(handler),
        ) as client,
        pytest.raises(MagentoRejected, match="unexpected HTTP status 302"),
    ):
        client.refund_order(5, {})
    assert len(recorder.requests) == 1


# ---------------------------------------------------------------- failures through the client


def test_400_rejection_message_names_the_operation(make_client: MakeClient, recorder: Any) -> None:
    message = "Creditmemo Document Validation Error(s):\nThe most money available to refund is 10."
    client = make_client(reply({"message": message}, status=400))
    with pytest.raises(MagentoRejected) as caught:
        client.refund_order(5, {})
    assert type(caught.value) is MagentoRejected
    assert str(caught.value) == f"order_refund for order 5: Magento rejected it (400): {message}"
    assert caught.value.magento_message == message
    assert caught.value.http_status == 400
    (record,) = recorder.records
    assert record == CallRecord(
        operation="order_refund",
        method="POST",
        path="/rest/default/V1/order/5/refund",
        http_status=400,
        duration_ms=record.duration_ms,
        error=message,
        started_at=record.started_at,
    )
    assert record.started_at is not None
    assert record.started_at.tzinfo is not None


@pytest.mark.parametrize(
    ("status", "exception", "call"),
    [
        (404, MagentoNotFound, lambda c: c.get_creditmemo(9)),
        (401, MagentoAuthError, lambda c: c.refund_invoice(7, {})),
        (403, MagentoAuthError, lambda c: c.get_order(5)),
        (429, MagentoRateLimited, lambda c: c.refund_order(5, {})),
        (500, MagentoUnavailable, lambda c: c.get_order(5)),
        (503, MagentoUnavailable, lambda c: c.refund_order(5, {})),
        (409, MagentoRejected, lambda c: c.refund_order(5, {})),
    ],
)
def test_status_classes_through_the_client(
    make_client: MakeClient,
    recorder: Any,
    status: int,
    exception: type[Exception],
    call: Callable[[MagentoClient], Any],
) -> None:
    body = {"message": "Failure %1", "parameters": [status]}
    with pytest.raises(exception) as caught:
        call(make_client(reply(body, status=status)))
    assert type(caught.value) is exception
    (record,) = recorder.records
    assert record.http_status == status
    assert record.error == f"Failure {status}"


def test_5xx_outcome_unknown_depends_on_method(make_client: MakeClient) -> None:
    client = make_client(lambda request: httpx.Response(502, text="<h1>Bad Gateway</h1>"))
    with pytest.raises(MagentoUnavailable) as on_post:
        client.refund_order(5, {})
    with pytest.raises(MagentoUnavailable) as on_get:
        client.get_order(5)
    assert on_post.value.outcome_unknown is True
    assert on_get.value.outcome_unknown is False
    assert "Bad Gateway" in str(on_post.value)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("17", 17.0),
        ("http-date in 60s", 60),  # built when the test runs, not when it is collected
    ],
    ids=["delta-seconds", "http-date"],
)
def test_429_retry_after_through_the_client(
    make_client: MakeClient, header: str, expected: float
) -> None:
    if header.startswith("http-date"):
        header = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    client = make_client(
        lambda request: httpx.Response(
            429, json={"message": "Too Many Requests"}, headers={"Retry-After": header}
        )
    )
    with pytest.raises(MagentoRateLimited) as caught:
        client.refund_order(5, {})
    assert caught.value.retry_after is not None
    assert expected - 5 <= caught.value.retry_after <= expected


def raising(exc_type: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated failure", request=request)

    return handler


@pytest.mark.parametrize(
    ("exc_type", "post_unknown"),
    [
        (httpx.ConnectError, False),
        (httpx.ConnectTimeout, False),
        (httpx.PoolTimeout, False),
        (httpx.ReadTimeout, True),
        (httpx.WriteTimeout, True),
        (httpx.RemoteProtocolError, True),
        (httpx.ReadError, True),
        (httpx.NetworkError, True),
    ],
)
def test_transport_errors_through_the_client(
    make_client: MakeClient,
    recorder: Any,
    exc_type: type[httpx.TransportError],
    post_unknown: bool,
) -> None:
    client = make_client(raising(exc_type))
    with pytest.raises(MagentoUnavailable) as on_post:
        client.refund_order(5, {})
    with pytest.raises(MagentoUnavailable) as on_get:
        client.get_order(5)
    assert on_post.value.outcome_unknown is post_unknown
    assert on_get.value.outcome_unknown is False
    assert isinstance(on_post.value.__cause__, exc_type)
    assert str(on_post.value).startswith("order_refund for order 5: Magento could not be reached")
    for record in recorder.records:
        assert record.http_status is None
        assert record.error == f"{exc_type.__name__}: simulated failure"


# ---------------------------------------------------------------- CallRecords


def test_records_hold_no_secrets_headers_or_bodies(
    make_client: MakeClient, recorder: Any, token: str
) -> None:
    secret_comment = "refund-worker:secret-marker"
    client = make_client(reply({"message": f"Bad: {token}?"}, status=400))
    with pytest.raises(MagentoRejected):
        client.refund_order(5, {"comment": {"comment": secret_comment}})
    client = make_client(raising(httpx.ConnectError))
    with pytest.raises(MagentoUnavailable) as caught:
        client.refund_order(5, {"comment": {"comment": secret_comment}})
    assert token not in str(caught.value)
    assert len(recorder.records) == 2
    for record in recorder.records:
        assert set(vars(record)) == {
            "operation",
            "method",
            "path",
            "http_status",
            "duration_ms",
            "error",
            "started_at",
        }
        assert "Bearer" not in repr(record)
        assert secret_comment not in repr(record)
        assert "?" not in record.path


def test_a_failing_on_call_hook_does_not_change_the_outcome(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_hook(record: CallRecord) -> None:
        raise RuntimeError("audit table is down")

    client = make_client(reply(321), on_call=broken_hook)
    assert client.refund_order(5, {}) == 321
    assert "on_call hook failed for order_refund" in caplog.text


def test_no_hook_is_fine(make_client: MakeClient) -> None:
    assert make_client(reply(321), on_call=None).refund_order(5, {}) == 321


# ---------------------------------------------------------------- searches and the marker


def paged_handler(
    memos: list[dict[str, Any]], *, repeat_last_page: bool = True
) -> Callable[[httpx.Request], httpx.Response]:
    """Answers like Magento: a page past the end repeats the last page."""

    def handler(request: httpx.Request) -> httpx.Response:
        params = query(request)
        size = int(params["searchCriteria[pageSize]"])
        page = int(params["searchCriteria[currentPage]"])
        last_page = max(1, -(-len(memos) // size))
        if repeat_last_page:
            page = min(page, last_page)
        items = memos[(page - 1) * size : page * size]
        return httpx.Response(
            200, json={"items": items, "search_criteria": {}, "total_count": len(memos)}
        )

    return handler


def test_search_creditmemos_builds_the_criteria(make_client: MakeClient, recorder: Any) -> None:
    client = make_client(paged_handler([]))
    created = datetime(2025, 6, 1, 14, 30, 15, 999999, tzinfo=timezone(timedelta(hours=2)))
    assert client.search_creditmemos(order_id=42, created_from=created, page_size=50) == []
    (request,) = recorder.requests
    assert request.url.path == "/rest/default/V1/creditmemos"
    assert query(request) == {
        "searchCriteria[filter_groups][0][filters][0][field]": "order_id",
        "searchCriteria[filter_groups][0][filters][0][value]": "42",
        "searchCriteria[filter_groups][0][filters][0][condition_type]": "eq",
        "searchCriteria[filter_groups][1][filters][0][field]": "created_at",
        "searchCriteria[filter_groups][1][filters][0][value]": "2025-06-01 12:30:15",
        "searchCriteria[filter_groups][1][filters][0][condition_type]": "gteq",
        "searchCriteria[sortOrders][0][field]": "entity_id",
        "searchCriteria[sortOrders][0][direction]": "ASC",
        "searchCriteria[pageSize]": "50",
        "searchCriteria[currentPage]": "1",
    }
    (record,) = recorder.records
    assert record.operation == "creditmemo_search"
    assert record.path == "/rest/default/V1/creditmemos"


def test_naive_created_from_is_utc(make_client: MakeClient, recorder: Any) -> None:
    make_client(paged_handler([])).search_creditmemos(
        order_id=42, created_from=datetime(2025, 1, 2, 3, 4, 5)
    )
    params = query(recorder.requests[0])
    assert params["searchCriteria[filter_groups][1][filters][0][value]"] == "2025-01-02 03:04:05"


def test_search_without_created_from_has_one_filter_group(
    make_client: MakeClient, recorder: Any
) -> None:
    make_client(paged_handler([])).search_creditmemos(order_id=42)
    assert not any("[filter_groups][1]" in key for key in query(recorder.requests[0]))


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("repeat_last_page", [True, False])
def test_search_reads_every_page_exactly_once(
    make_client: MakeClient, recorder: Any, count: int, repeat_last_page: bool
) -> None:
    memos = [creditmemo(i) for i in range(1, count + 1)]
    client = make_client(paged_handler(memos, repeat_last_page=repeat_last_page))
    found = client.search_creditmemos(order_id=42, page_size=2)
    assert [memo["entity_id"] for memo in found] == list(range(1, count + 1))
    pages = [int(query(request)["searchCriteria[currentPage]"]) for request in recorder.requests]
    assert pages == list(range(1, len(pages) + 1))
    assert len(pages) <= count // 2 + 1
    assert len(recorder.records) == len(pages)


def test_search_without_total_count_stops_on_a_short_page(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(query(request)["searchCriteria[currentPage]"])
        items = [creditmemo(1), creditmemo(2)] if page == 1 else [creditmemo(3)]
        return httpx.Response(200, json={"items": items})

    found = make_client(handler).search_creditmemos(order_id=42, page_size=2)
    assert [memo["entity_id"] for memo in found] == [1, 2, 3]


def test_search_with_null_items(make_client: MakeClient) -> None:
    assert (
        make_client(reply({"items": None, "total_count": 0})).search_creditmemos(order_id=42) == []
    )


def test_search_with_broken_items_is_retryable(make_client: MakeClient) -> None:
    with pytest.raises(MagentoUnavailable) as caught:
        make_client(reply({"items": "nope"})).search_creditmemos(order_id=42)
    assert caught.value.outcome_unknown is False


def test_search_page_size_must_be_positive(make_client: MakeClient) -> None:
    with pytest.raises(ValueError, match="page_size"):
        make_client(reply({})).search_creditmemos(order_id=42, page_size=0)


def test_search_invoices(make_client: MakeClient, recorder: Any) -> None:
    invoices = [{"entity_id": 3, "order_id": 42}]
    assert (
        make_client(reply({"items": invoices, "total_count": 1})).search_invoices(order_id=42)
        == invoices
    )
    (request,) = recorder.requests
    assert request.url.path == "/rest/default/V1/invoices"
    params = query(request)
    assert params["searchCriteria[filter_groups][0][filters][0][field]"] == "order_id"
    assert params["searchCriteria[filter_groups][0][filters][0][value]"] == "42"
    assert recorder.records[0].operation == "invoice_search"


def test_search_creditmemos_reads_every_page_and_the_marker_is_found_in_them(
    make_client: MakeClient, recorder: Any
) -> None:
    marker = "refund-worker:9f1c2e:ab12"
    memos = [creditmemo(i, "We refunded $5 offline.") for i in range(1, 201)]
    memos.append(creditmemo(201, "other", f"customer asked [{marker}]"))
    memos.append({"entity_id": 202, "comments": None})
    memos.append({"entity_id": 203, "comments": [{"comment": None}, "text", {"no": "comment"}]})
    client = make_client(paged_handler(memos))
    since = datetime(2025, 6, 1, tzinfo=UTC)
    found = client.search_creditmemos(order_id=42, created_from=since)
    assert [memo["entity_id"] for memo in found] == list(range(1, 204))
    assert [memo["entity_id"] for memo in with_marker(found, marker)] == [201]
    assert len(recorder.requests) == 3  # 100 + 100 + 3
    params = query(recorder.requests[0])
    assert params["searchCriteria[filter_groups][1][filters][0][value]"] == "2025-06-01 00:00:00"
    assert params["searchCriteria[filter_groups][1][filters][0][condition_type]"] == "gteq"


def test_search_creditmemos_propagates_failures(make_client: MakeClient) -> None:
    client = make_client(reply({"message": "down"}, status=503))
    with pytest.raises(MagentoUnavailable) as caught:
        client.search_creditmemos(order_id=42)
    assert caught.value.outcome_unknown is False
    assert str(caught.value).startswith("creditmemo_search for order 42: ")
