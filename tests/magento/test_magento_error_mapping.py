"""The pure error-mapping functions: placeholders, bodies, Retry-After, status, transport."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from refund_worker.errors import (
    MagentoAuthError,
    MagentoNotFound,
    MagentoRateLimited,
    MagentoRejected,
    MagentoUnavailable,
    PermanentError,
    RetryableError,
)
from refund_worker.magento.errors import (
    ACL_RESOURCES,
    error_for_response,
    error_for_transport,
    error_text,
    fill_placeholders,
    parse_retry_after,
    snippet,
)

URL = "http://magento.test/rest/default/V1/order/5/refund"


def response(
    status: int, body: Any = None, *, method: str = "POST", **kwargs: Any
) -> httpx.Response:
    request = httpx.Request(method, URL)
    if isinstance(body, bytes | str):
        return httpx.Response(status, content=body, request=request, **kwargs)
    if body is None:
        return httpx.Response(status, request=request, **kwargs)
    return httpx.Response(status, json=body, request=request, **kwargs)


# ---------------------------------------------------------------- placeholders


def test_positional_placeholders_come_from_a_list() -> None:
    assert (
        fill_placeholders("The most money available to refund is %1.", ["$25.00"])
        == "The most money available to refund is $25.00."
    )


def test_positional_placeholders_use_each_index_and_two_digit_numbers() -> None:
    values = [f"v{i}" for i in range(1, 12)]
    assert fill_placeholders("%2 then %1, %11 not %1 1", values) == "v2 then v1, v11 not v1 1"


def test_named_placeholders_come_from_an_object() -> None:
    assert (
        fill_placeholders(
            "The consumer isn't authorized to access %resources.",
            {"resources": "Magento_Sales::creditmemo"},
        )
        == "The consumer isn't authorized to access Magento_Sales::creditmemo."
    )


def test_longer_named_placeholder_wins_over_its_prefix() -> None:
    message = '"%fieldName" is %field'
    assert fill_placeholders(message, {"field": "F", "fieldName": "N"}) == '"N" is F'


def test_unknown_placeholders_stay_and_values_are_rendered() -> None:
    assert fill_placeholders("%1 %2 %3 %4", [7, 2.5, None]) == "7 2.5  %4"
    assert fill_placeholders("%1 and %2", [25.0, True]) == "25 and true"
    assert fill_placeholders("%other", {"name": "x"}) == "%other"
    assert fill_placeholders("no parameters %1", None) == "no parameters %1"
    assert fill_placeholders("%types", {"types": ["a", "b"]}) == '["a","b"]'


# ---------------------------------------------------------------- error bodies


def test_error_text_fills_in_a_list_body() -> None:
    body = {"message": "Maximum shipping amount allowed to refund is: %1", "parameters": ["$5.00"]}
    assert (
        error_text(json.dumps(body).encode())
        == "Maximum shipping amount allowed to refund is: $5.00"
    )


def test_error_text_fills_in_a_dict_body() -> None:
    body = {
        "message": '"%fieldName" is required. Enter and try again.',
        "parameters": {"fieldName": "creditmemo"},
    }
    assert error_text(json.dumps(body).encode()) == '"creditmemo" is required. Enter and try again.'


def test_error_text_keeps_rendered_validation_messages_verbatim() -> None:
    message = (
        "Creditmemo Document Validation Error(s):\n"
        "The most money available to refund is 10.\n"
        "We can't create creditmemo for the invoice."
    )
    assert error_text(json.dumps({"message": message}).encode()) == message


def test_error_text_includes_each_sub_error_of_an_aggregate() -> None:
    body = {
        "message": "One or more input exceptions have occurred.",
        "errors": [
            {
                "message": '"%fieldName" is required. Enter and try again.',
                "parameters": {"fieldName": "creditmemo"},
            },
            {"message": "Value %1 is not valid for %2.", "parameters": ["abc", "qty"]},
        ],
    }
    assert error_text(json.dumps(body).encode()) == (
        "One or more input exceptions have occurred.\n"
        '"creditmemo" is required. Enter and try again.\n'
        "Value abc is not valid for qty."
    )


def test_error_text_leaves_out_the_developer_mode_trace() -> None:
    body = {"message": "Internal Error.", "trace": "#0 /var/www/html/vendor/..."}
    assert error_text(json.dumps(body).encode()) == "Internal Error."


def test_error_text_of_an_html_page_is_a_short_snippet() -> None:
    html = (
        "<html><head><title>502 Bad Gateway</title><style>body {color: red}</style></head>"
        "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>"
        + "<p>padding</p>" * 200
        + "</body></html>"
    )
    text = error_text(html.encode())
    assert text.startswith("502 Bad Gateway 502 Bad Gateway nginx")
    assert "<" not in text
    assert "color" not in text
    assert len(text) <= 200


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "(empty response body)"),
        (b"   \n ", "(empty response body)"),
        (b'"just a string"', '"just a string"'),
        (b"[1, 2]", "[1, 2]"),
        (b'{"no_message": true}', '{"no_message": true}'),
        (b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8"),
    ],
)
def test_error_text_never_crashes_on_odd_bodies(body: bytes, expected: str) -> None:
    assert error_text(body) == expected


def test_snippet_collapses_whitespace_and_truncates() -> None:
    assert snippet("a\n\n  b\tc") == "a b c"
    assert snippet("x" * 500, limit=10) == "x" * 9 + "…"


# ---------------------------------------------------------------- Retry-After


NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("Sun, 01 Jun 2025 12:00:30 GMT", 30.0),
        ("Sun, 01 Jun 2025 11:00:00 GMT", 0.0),
        ("Sunday, 01-Jun-25 12:01:00 GMT", 60.0),  # obsolete RFC 850 form
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_parse_retry_after_http_date_against_the_clock() -> None:
    later = datetime.now(UTC) + timedelta(seconds=90)
    seconds = parse_retry_after(format_datetime(later, usegmt=True))
    assert seconds is not None
    assert 85 <= seconds <= 90


# ---------------------------------------------------------------- status mapping


def test_400_is_a_rejection_with_the_filled_in_message() -> None:
    body = {"message": "The most money available to refund is %1.", "parameters": ["$25.00"]}
    error = error_for_response(response(400, body), operation="order_refund", subject="order 5")
    assert type(error) is MagentoRejected
    assert isinstance(error, PermanentError)
    assert error.http_status == 400
    assert error.magento_message == "The most money available to refund is $25.00."
    assert str(error) == (
        "order_refund for order 5: Magento rejected it (400): "
        "The most money available to refund is $25.00."
    )


def test_404_is_not_found() -> None:
    body = {
        "message": "The entity that was requested doesn't exist. Verify the entity and try again."
    }
    error = error_for_response(
        response(404, body, method="GET"), operation="order_get", subject="order 9"
    )
    assert type(error) is MagentoNotFound
    assert isinstance(error, MagentoRejected)
    assert error.http_status == 404
    assert str(error).startswith("order_get for order 9: ")
    assert error.magento_message == body["message"]


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_explain_acl_and_bearer_setting(status: int) -> None:
    body = {
        "message": "The consumer isn't authorized to access %resources.",
        "parameters": {"resources": "Magento_Sales::creditmemo"},
    }
    error = error_for_response(response(status, body), operation="order_refund", subject="order 5")
    assert type(error) is MagentoAuthError
    assert error.http_status == status
    assert error.magento_message == (
        "The consumer isn't authorized to access Magento_Sales::creditmemo."
    )
    message = str(error)
    for resource in ACL_RESOURCES:
        assert resource in message
    assert "Magento_Sales::actions_view" in message
    assert "Allow OAuth Access Tokens to be used as standalone Bearer tokens" in message
    assert "oauth/consumer/enable_integration_as_bearer" in message


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"Retry-After": "30"}, 30.0),
        ({"Retry-After": "Sun, 01 Jun 2025 12:02:00 GMT"}, 120.0),
        ({}, None),
    ],
)
def test_429_is_rate_limited_with_retry_after(
    headers: dict[str, str], retry_after: float | None
) -> None:
    error = error_for_response(
        response(429, {"message": "Too Many Requests"}, headers=headers),
        operation="order_refund",
        subject="order 5",
        now=NOW,
    )
    assert type(error) is MagentoRateLimited
    assert isinstance(error, RetryableError)
    assert error.retry_after == retry_after
    assert error.http_status == 429


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize(("method", "unknown"), [("POST", True), ("PUT", True), ("GET", False)])
def test_5xx_is_unavailable_and_unknown_only_for_writes(
    status: int, method: str, unknown: bool
) -> None:
    error = error_for_response(
        response(status, b"<html><body>Service Unavailable</body></html>", method=method),
        operation="order_refund",
        subject="order 5",
    )
    assert type(error) is MagentoUnavailable
    assert error.outcome_unknown is unknown
    assert error.http_status == status
    assert "Service Unavailable" in str(error)


@pytest.mark.parametrize("status", [405, 409, 413, 422])
def test_other_4xx_are_rejections(status: int) -> None:
    error = error_for_response(response(status, {"message": "nope"}), operation="order_refund")
    assert type(error) is MagentoRejected
    assert str(error) == f"order_refund: Magento rejected it ({status}): nope"


def test_a_redirect_is_a_rejection_pointing_at_the_base_url() -> None:
    error = error_for_response(response(301, b""), operation="order_get", subject="order 1")
    assert type(error) is MagentoRejected
    assert "base URL" in str(error)


# ---------------------------------------------------------------- transport mapping

REQUEST = httpx.Request("POST", URL)

NOT_SENT = [
    httpx.ConnectError("refused", request=REQUEST),
    httpx.ConnectTimeout("connect timed out", request=REQUEST),
    httpx.PoolTimeout("pool full", request=REQUEST),
    httpx.UnsupportedProtocol("no scheme", request=REQUEST),
]
MAYBE_SENT = [
    httpx.ReadTimeout("read timed out", request=REQUEST),
    httpx.WriteTimeout("write timed out", request=REQUEST),
    httpx.RemoteProtocolError("peer closed connection", request=REQUEST),
    httpx.ReadError("connection reset", request=REQUEST),
    httpx.WriteError("broken pipe", request=REQUEST),
    httpx.ProxyError("proxy said no", request=REQUEST),
    httpx.DecodingError("bad gzip", request=REQUEST),
]


@pytest.mark.parametrize("exc", NOT_SENT, ids=lambda exc: type(exc).__name__)
@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
def test_errors_before_sending_are_never_outcome_unknown(exc: httpx.HTTPError, method: str) -> None:
    error = error_for_transport(exc, method=method, operation="order_refund", subject="order 5")
    assert type(error) is MagentoUnavailable
    assert error.outcome_unknown is False
    assert error.http_status is None
    assert str(error).startswith(
        f"order_refund for order 5: Magento could not be reached ({type(exc).__name__}: "
    )


@pytest.mark.parametrize("exc", MAYBE_SENT, ids=lambda exc: type(exc).__name__)
@pytest.mark.parametrize(("method", "unknown"), [("POST", True), ("PUT", True), ("GET", False)])
def test_errors_after_sending_are_outcome_unknown_for_writes(
    exc: httpx.HTTPError, method: str, unknown: bool
) -> None:
    error = error_for_transport(exc, method=method, operation="order_refund", subject="order 5")
    assert type(error) is MagentoUnavailable
    assert error.outcome_unknown is unknown
    assert ("reconcile" in str(error)) is unknown
