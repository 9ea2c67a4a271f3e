"""The console's pages: the list and its filters, one refund's timeline, escaping, and replay
with the CLI's guards."""

from __future__ import annotations

import html
import re
import threading
from datetime import UTC, datetime, timedelta

import httpx
import markupsafe
import pytest
from sqlalchemy import select

from refund_worker.models import RefundEvent
from tests.api.support import Api
from tests.console.support import add_call, add_event, add_refund, csrf_of, logged_in


def escaped(text: str) -> str:
    """``text`` as the templates escape it (markupsafe: ``'`` is ``&#39;``)."""
    return str(markupsafe.escape(text))


START = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


def listed(page: httpx.Response, status_code: int = 200) -> list[str]:
    """Refund ids in a list page, in order."""
    assert page.status_code == status_code, page.text
    return re.findall(r'<tr id="row-([0-9a-f-]{36})">', page.text)


@pytest.fixture
def seeded(api: Api) -> dict[str, str]:
    """Refunds of two tenants in every interesting state, one minute apart (``a`` oldest)."""
    specs: list[tuple[str, dict[str, object]]] = [
        ("a-failed", {"status": "failed", "last_error": "order 7 is holded", "order_id": 7}),
        ("b-attention", {"status": "needs_attention", "attention": "two credit memos"}),
        ("c-succeeded", {"status": "succeeded", "creditmemo_id": 5}),
        ("d-queued", {}),
        ("e-failed", {"status": "failed", "last_error": "HTTP 401: consumer not authorized"}),
        ("f-other-tenant",
         {"status": "failed", "last_error": "order 7 is HOLDED too", "order_id": 7}),
    ]
    ids = {}
    for minute, (key, state) in enumerate(specs):
        order_id = int(state.pop("order_id", 40 + minute))  # type: ignore[call-overload]
        producer = api.other_producer if key == "f-other-tenant" else api.producer
        ids[key] = add_refund(
            api, key, producer=producer, order_id=order_id,
            created_at=START + timedelta(minutes=minute), **state,
        )
    return ids


def test_the_list_shows_what_needs_fixing_by_default(api: Api, seeded: dict[str, str]) -> None:
    browser = logged_in(api)

    page = browser.get("/console/refunds")

    assert listed(page) == [
        seeded["f-other-tenant"], seeded["e-failed"], seeded["b-attention"], seeded["a-failed"]
    ]
    assert "4 matching" in page.text
    assert "order 7 is holded" in page.text
    assert "two credit memos" in page.text  # a needs_attention row shows why


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "any"}, ["f-other-tenant", "e-failed", "d-queued", "c-succeeded",
                             "b-attention", "a-failed"]),
        ({"status": "failed"}, ["f-other-tenant", "e-failed", "a-failed"]),
        ({"status": "needs_attention"}, ["b-attention"]),
        ({"status": "succeeded"}, ["c-succeeded"]),
        ({"error": "holded"}, ["f-other-tenant", "a-failed"]),  # any case
        ({"error": "HTTP 401"}, ["e-failed"]),
        ({"error": "%"}, []),  # a LIKE wildcard is only a character
        ({"order_id": "7"}, ["f-other-tenant", "a-failed"]),
        ({"tenant": "returns"}, ["f-other-tenant"]),
        ({"tenant": "erp", "error": "holded"}, ["a-failed"]),
        ({"key": "e-failed"}, ["e-failed"]),
        ({"status": "any", "since": "2031-03-01T12:03:00"}, ["f-other-tenant", "e-failed",
                                                             "d-queued"]),
        ({"status": "any", "until": "2031-03-01T12:02:00Z"}, ["b-attention", "a-failed"]),
        ({"status": "any", "since": "2031-03-01T12:01:00", "until": "2031-03-01T12:03:00"},
         ["c-succeeded", "b-attention"]),
        ({"status": "any", "since": "2031-03-02"}, []),
    ],
)
def test_filters(
    api: Api, seeded: dict[str, str], params: dict[str, str], expected: list[str]
) -> None:
    page = logged_in(api).get("/console/refunds", params=params)

    assert listed(page) == [seeded[key] for key in expected]
    for name, value in params.items():  # the form shows the filters it applied
        assert f'name="{name}"' in page.text
        if name not in ("status",):
            assert f'value="{escaped(value)}"' in page.text


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"order_id": "seven"}, "order id: a Magento order id"),
        ({"order_id": "0"}, "order id"),
        ({"tenant": "no spaces"}, "tenant: 1-64 letters"),
        ({"since": "yesterday"}, "since: &#39;yesterday&#39; is neither"),
        ({"status": "lost"}, "status: &#39;lost&#39; is not a status"),
        ({"limit": "100000"}, "limit: a number from 1 to 500"),
        ({"before": "nope"}, "before: not a refund id"),
    ],
)
def test_bad_filters_are_named_on_the_page(
    api: Api, seeded: dict[str, str], params: dict[str, str], problem: str
) -> None:
    page = logged_in(api).get("/console/refunds", params=params)

    assert page.status_code == 422
    assert "text/html" in page.headers["content-type"]
    assert problem in page.text
    assert listed(page, 422) == []  # nothing listed under filters half understood
    assert 'id="empty">Fix the filters above.<' in page.text


def test_paging_goes_through_every_refund_once(api: Api, seeded: dict[str, str]) -> None:
    browser = logged_in(api)
    seen: list[str] = []
    url: str | None = "/console/refunds?status=any&limit=2"
    pages = 0
    while url is not None:
        page = browser.get(html.unescape(url))
        seen.extend(listed(page))
        found = re.search(r'<a href="([^"]+)" id="next-page">', page.text)
        url = found.group(1) if found else None
        pages += 1
        assert "6 matching" in page.text

    assert pages == 3
    assert seen == listed(browser.get("/console/refunds?status=any"))
    assert len(set(seen)) == 6


XSS_KEY = "<script>alert('key')</script>"
XSS_COMMENT = '<img src=x onerror="alert(1)">"quoted"&amp;'
XSS_ERROR = "<b>Magento</b> said <iframe src=//evil.example>"


def test_producer_controlled_text_renders_as_text(api: Api) -> None:
    refund_id = add_refund(
        api, XSS_KEY, request={"comment": XSS_COMMENT}, status="failed", last_error=XSS_ERROR,
        notification_error="<svg onload=alert(2)>",
    )
    add_call(api, refund_id, error="<script>alert('call')</script>", http_status=400)
    add_event(api, refund_id, "needs_attention", "<marquee>look</marquee>")
    browser = logged_in(api)

    pages = {
        "list": browser.get("/console/refunds"),
        "filtered": browser.get("/console/refunds", params={"key": XSS_KEY, "error": "<b>"}),
        "refund": browser.get(f"/console/refunds/{refund_id}"),
    }

    for name, page in pages.items():
        assert page.status_code == 200, name
        for raw in ("<script>alert", "<img src=x", "<iframe", "<b>Magento", "<svg", "<marquee"):
            assert raw not in page.text, (name, raw)
        assert escaped(XSS_KEY) in page.text, name
        assert "&lt;b&gt;Magento&lt;/b&gt;" in page.text, name
    refund_page = pages["refund"].text
    assert escaped(XSS_COMMENT) in refund_page  # in the request's fields
    assert "&lt;script&gt;alert(&#39;call&#39;)&lt;/script&gt;" in refund_page
    assert "&lt;marquee&gt;look&lt;/marquee&gt;" in refund_page
    assert "&lt;svg onload=alert(2)&gt;" in refund_page
    assert listed(pages["filtered"]) == [refund_id]
    # The only tags are the templates': no <script> anywhere, and scripts are forbidden anyway.
    assert "<script" not in refund_page
    assert "script-src" not in pages["refund"].headers["content-security-policy"]


def test_a_refunds_timeline(api: Api) -> None:
    refund_id = add_refund(
        api, "RMA-1042", order_id=1042,
        request={"comment": "damaged in transit", "notify_customer": True,
                 "items": [{"order_item_id": 7, "qty": 1}]},
        status="failed", last_error="A creditmemo can not be created: holded", attempts=1,
        notification_status="not_requested", created_at=START,
    )
    add_call(api, refund_id, operation="order_get", http_status=200, duration_ms=41.5,
             path="/V1/orders/1042", created_at=START + timedelta(seconds=1))
    add_call(api, refund_id, operation="order_refund", method="POST", http_status=400,
             duration_ms=1234.0, path="/V1/order/1042/refund",
             error="A creditmemo can not be created: holded",
             created_at=START + timedelta(seconds=2))
    add_call(api, refund_id, attempt=2, operation="creditmemo_search", http_status=None,
             duration_ms=2000.0, error="timed out", created_at=START + timedelta(seconds=3))
    add_event(api, refund_id, "reconciled", "credit memo 9 carries this refund's marker")
    browser = logged_in(api)

    page = browser.get(f"/console/refunds/{refund_id}")
    replayed = browser.replay(refund_id, reason="order taken off hold by <b>ops</b>")
    after = browser.get(replayed.headers["location"])

    assert page.status_code == 200
    text = page.text
    assert 'id="status">failed<' in text
    for expected in (
        "Magento call: order_get", "41.5 ms", "HTTP</em> 200", "GET /V1/orders/1042",
        "Magento call: order_refund", "1,234 ms", "HTTP</em> 400", "POST /V1/order/1042/refund",
        "Magento call: creditmemo_search", "no answer", "2,000 ms", "timed out",
        "Reconciled with Magento", "credit memo 9 carries this refund&#39;s marker",
        "damaged in transit", "RMA-1042", "order_item_id",
    ):
        assert expected in text, expected
    assert text.index("Received") < text.index("order_get") < text.index("order_refund")
    assert 'id="webhooks">None yet.<' in text
    assert 'id="email-status">not requested<' in text
    row = api.row(refund_id)
    assert row.marker_token
    assert row.marker_token not in text
    assert row.marker_token not in after.text

    assert replayed.status_code == 303
    assert after.status_code == 200
    assert "Replayed: the refund is queued again" in after.text
    assert 'id="status">queued<' in after.text
    assert "Replayed (refund)" in after.text
    assert "by</em> alice" in after.text
    assert "order taken off hold by &lt;b&gt;ops&lt;/b&gt;" in after.text
    assert "previous error</em> A creditmemo can not be created: holded" in after.text
    assert '<meta http-equiv="refresh" content="2;url=/console/refunds/' in after.text


def test_replay_goes_through_replay_with_the_operator_as_actor(api: Api) -> None:
    refund_id = add_refund(api, "fix-me", status="failed", last_error="ACL missing", attempts=3)
    browser = logged_in(api)

    response = browser.replay(refund_id, reason="ACL granted")

    assert response.status_code == 303
    assert response.headers["location"] == f"/console/refunds/{refund_id}?replayed=refund"
    row = api.row(refund_id)
    assert (row.status, row.attempts, row.last_error, row.in_doubt, row.replayed_by) == (
        "queued", 0, None, True, "alice"
    )
    assert api.publisher.refunds == [refund_id, refund_id]
    with api.database.session_scope() as session:
        event = session.scalars(select(RefundEvent).where(RefundEvent.refund_id == refund_id)).one()
    assert event.kind == "refund_replayed"
    assert event.detail == "by alice: ACL granted (previous error: ACL missing)"


@pytest.mark.parametrize(
    ("state", "refusal"),
    [
        ({"status": "succeeded", "creditmemo_id": 77},
         "already succeeded (credit memo 77); replaying would refund twice"),
        ({}, "still in flight (queued)"),
        ({"status": "processing"}, "still in flight (processing)"),
        ({"status": "retrying"}, "still in flight (retrying)"),
    ],
)
def test_a_succeeded_or_in_flight_refund_shows_the_refusal_and_never_replays(
    api: Api, state: dict[str, object], refusal: str
) -> None:
    refund_id = add_refund(api, "busy", **state)
    browser = logged_in(api)

    page = browser.get(f"/console/refunds/{refund_id}")
    forced = browser.post(  # the form is not offered; post it anyway
        f"/console/refunds/{refund_id}/replay",
        {"csrf": csrf_of(page.text), "reason": "again", "what": "refund"},
    )

    assert f"The refund cannot be replayed: {refusal}" in page.text
    assert 'id="replay-form"' not in page.text
    assert forced.status_code == 409
    assert f"Not replayed: cannot replay this refund: {refusal}" in forced.text
    assert api.publisher.refunds == [refund_id]
    assert api.row(refund_id).status == (state.get("status") or "queued")
    with api.database.session_scope() as session:
        assert session.scalars(select(RefundEvent)).all() == []


def test_a_double_submit_replays_once(api: Api) -> None:
    refund_id = add_refund(api, "twice", status="failed", last_error="boom")
    browser = logged_in(api)
    token = browser.csrf(f"/console/refunds/{refund_id}")

    first = browser.replay(refund_id, csrf=token)
    second = browser.replay(refund_id, csrf=token)  # the same form, sent again

    assert first.status_code == 303
    assert second.status_code == 409
    assert "still in flight (queued)" in second.text
    assert api.publisher.refunds == [refund_id, refund_id]


def test_simultaneous_submits_replay_once(api: Api) -> None:
    refund_ids = [
        add_refund(api, f"race-{n}", status="failed", last_error="boom") for n in range(5)
    ]
    browsers = [logged_in(api) for _ in range(2)]
    tokens = [browser.csrf() for browser in browsers]
    statuses: list[int] = []
    lock = threading.Lock()

    def submit(n: int, refund_id: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        response = browsers[n].replay(refund_id, csrf=tokens[n])
        with lock:
            statuses.append(response.status_code)

    for refund_id in refund_ids:
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=submit, args=(n, refund_id, barrier)) for n in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    assert sorted(statuses) == [303] * 5 + [409] * 5
    assert sorted(api.publisher.refunds) == sorted(refund_ids * 2)  # intake + one replay each
    with api.database.session_scope() as session:
        events = session.scalars(select(RefundEvent.refund_id)).all()
    assert sorted(events) == sorted(refund_ids)


def test_a_reason_is_required(api: Api) -> None:
    refund_id = add_refund(api, "why", status="failed", last_error="boom")
    browser = logged_in(api)

    for reason, problem in (
        ("", "a reason is required"),
        ("   ", "a reason is required"),
        ("x" * 501, "longer than 500 characters"),
        ("bad\x07bell", "control characters"),
    ):
        response = browser.replay(refund_id, reason=reason)
        assert response.status_code == 422
        assert problem in response.text
    bad_what = browser.replay(refund_id, what="everything")
    assert bad_what.status_code == 422
    assert api.row(refund_id).status == "failed"
    assert api.publisher.refunds == [refund_id]


def test_replaying_a_failed_email(api: Api) -> None:
    refund_id = add_refund(
        api, "email", status="succeeded", creditmemo_id=5, notify_customer=True,
        notification_status="failed", notification_error="SMTP down", notification_attempts=5,
    )
    browser = logged_in(api)

    page = browser.get(f"/console/refunds/{refund_id}")
    refused = browser.replay(refund_id, what="refund")
    response = browser.replay(refund_id, what="email", reason="SMTP back")

    assert "The refund cannot be replayed: already succeeded" in page.text
    assert 'value="email" checked' in page.text
    assert 'value="refund" disabled' in page.text
    assert 'id="email-error">SMTP down<' in page.text
    assert refused.status_code == 409
    assert response.status_code == 303
    assert api.row(refund_id).notification_status == "pending"
    assert api.publisher.notifications == [refund_id]
    after = browser.get(response.headers["location"])
    assert "Replayed: the credit memo email is queued again." in after.text
    assert "Replayed (email)" in after.text


def test_unknown_refunds_are_404_pages(api: Api) -> None:
    browser = logged_in(api)
    token = browser.csrf()

    for refund_id in ("00000000-0000-4000-8000-000000000000", "not-a-uuid", "RMA-1"):
        page = browser.get(f"/console/refunds/{refund_id}")
        posted = browser.post(
            f"/console/refunds/{refund_id}/replay", {"csrf": token, "reason": "x"}
        )
        assert page.status_code == posted.status_code == 404
        assert "No such refund" in page.text
        assert "text/html" in page.headers["content-type"]


def test_an_attempts_outcome_comes_after_its_calls(api: Api) -> None:
    """Calls are stamped when recorded, just after the outcome of their attempt."""
    settled = START + timedelta(minutes=1)
    refund_id = add_refund(
        api, "ordered", status="succeeded", creditmemo_id=3, settled_at=settled,
        outcome="RefundOrder on order 42", notify_customer=True, notification_status="sent",
        created_at=START,
    )
    add_call(api, refund_id, operation="order_refund", method="POST",
             created_at=settled + timedelta(milliseconds=30))
    add_call(api, refund_id, operation="creditmemo_emails", method="POST",
             created_at=settled + timedelta(milliseconds=300))
    with api.database.session_scope() as session:
        session.add(RefundEvent(refund_id=refund_id, kind="reconciled", detail="found memo 3",
                                created_at=settled))

    text = logged_in(api).get(f"/console/refunds/{refund_id}").text

    order = [text.index(marker) for marker in (
        "Received", "Magento call: order_refund", "Reconciled with Magento", "Settled: succeeded",
        "Magento call: creditmemo_emails",
    )]
    assert order == sorted(order)
