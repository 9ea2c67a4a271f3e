"""The console in headless Chromium (Debian's, driven by Playwright), against the real pipeline.

A real ``refund-worker worker`` process on the machine's Redis refunds against the simulator on a
real socket; the API (console included) is served by uvicorn in a thread with the Celery
publisher. The test logs in with a producer key (refused) and an operator key, filters the
list, opens a refund that failed while Magento was down, replays it once Magento is back, and
watches it succeed on the page. It saves screenshots of the list, the refund page and the
refused login (``$REFUND_WORKER_TEST_ARTIFACTS``, else the test's tmp folder; the ones in
docs/images/ came from here).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from refund_worker.api import create_app, generate_api_key
from refund_worker.settings import ApiKey
from refund_worker.simulator import SimulatorState
from tests.api.support import Keys, make_settings, serving
from tests.conftest import REQUIRE_SERVICES
from tests.e2e.conftest import SIM_TOKEN, Stack, make_stack
from tests.ops.conftest import artifact, chromium_binary

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.slow]

#: The flags every headless Chromium of the test suite runs with: nothing phones home.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]
VIEWPORT = {"width": 1280, "height": 800}
XSS_KEY = "<script>alert('xss')</script>"


def playwright_api() -> Any:
    """Playwright's sync API; skipped by hand when it is missing, a failure in CI."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        message = "Playwright is not installed (pip install -e '.[test]')"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (REFUND_WORKER_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    return sync_playwright


@dataclass
class Pipeline:
    stack: Stack
    url: str
    keys: Keys

    def producer(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )


@pytest.fixture
def pipeline(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    """The simulator, one worker process (2 attempts at most, to fail fast) and the API."""
    producer, producer_digest = generate_api_key()
    other, other_digest = generate_api_key()
    operator, operator_digest = generate_api_key()
    keys = Keys(
        producer=producer,
        operator=operator,
        other_producer=other,
        entries=(
            ApiKey(name="erp", role="producer", sha256=producer_digest),
            ApiKey(name="returns", role="producer", sha256=other_digest),
            ApiKey(name="alice", role="operator", sha256=operator_digest),
        ),
    )
    stacks = make_stack(sqlite_url, redis_url, tmp_path, SimulatorState(tokens={SIM_TOKEN: None}))
    stack = next(stacks)
    try:
        stack.env["REFUND_WORKER_MAX_ATTEMPTS"] = "2"
        app = create_app(
            database=stack.database,
            publisher=stack.publisher(),
            settings=make_settings(keys),
            broker_check=lambda: True,
        )
        with serving(app) as url:
            stack.start_worker(2)
            yield Pipeline(stack=stack, url=url, keys=keys)
    finally:
        stacks.close()


def _order(simulator: SimulatorState, sku: str, price: float, **spec: Any) -> int:
    order = simulator.add_order(
        {"payment_method": "checkmo", "items": [{"sku": sku, "qty": 1, "price": price}], **spec}
    )
    return int(order["order_id"])


def _screenshot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"])
    assert len(data) > 20_000, f"{path.name} looks blank"


def test_an_operator_fixes_a_failed_refund_in_the_browser(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    binary = chromium_binary()
    sync_playwright = playwright_api()
    started = time.monotonic()
    state = pipeline.stack.state
    down = _order(state, "LAMP", 80, shipped=True)
    held = _order(state, "DESK", 240, state="holded")
    fine = _order(state, "BAG", 30, shipped=True)
    state.add_fault({"route": "order_get", "kind": "status", "status": 502, "order_id": down})
    with pipeline.producer(pipeline.keys.producer) as erp, pipeline.producer(
        pipeline.keys.other_producer
    ) as returns:
        posted = [
            erp.post("/v1/refunds", json={"idempotency_key": "RMA-5001", "order_id": down}),
            erp.post("/v1/refunds", json={"idempotency_key": "RMA-5002", "order_id": held}),
            erp.post("/v1/refunds", json={"idempotency_key": "RMA-5003", "order_id": fine}),
            returns.post(
                "/v1/refunds",
                json={"idempotency_key": XSS_KEY, "order_id": 999_999,
                      "comment": "<img src=x onerror=alert('comment')>"},
            ),
        ]
    assert [response.status_code for response in posted] == [202] * 4
    ids = [response.json()["refund_id"] for response in posted]
    down_id = ids[0]
    views = pipeline.stack.wait_settled(ids, timeout=90)
    assert [views[refund_id].status.value for refund_id in ids] == [
        "failed", "failed", "succeeded", "failed"
    ]
    dialogs: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=binary, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            context = browser.new_context(viewport=VIEWPORT, locale="en-GB", timezone_id="UTC")
            page = context.new_page()
            page.set_default_timeout(30_000)

            def on_dialog(dialog: Any) -> None:  # an alert() would mean a script ran
                dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)

            # A producer key is refused.
            page.goto(f"{pipeline.url}/console")
            assert page.url.startswith(f"{pipeline.url}/console/login?next=")
            page.fill("#key", pipeline.keys.producer)
            response_status = []
            page.on("response", lambda response: response_status.append(response.status))
            page.click("button[type=submit]")
            page.wait_for_selector("#message")
            assert 403 in response_status
            assert "is a producer key" in page.inner_text("#message")
            _screenshot(page, artifact(tmp_path, "console-refused.png"))
            assert "rw_console" not in {cookie["name"] for cookie in context.cookies()}

            # The operator logs in and lands on the failed refunds.
            page.fill("#key", pipeline.keys.operator)
            page.click("button[type=submit]")
            page.wait_for_selector("#refunds")
            assert page.url == f"{pipeline.url}/console/refunds"
            [session_cookie] = [c for c in context.cookies() if c["name"] == "rw_console"]
            assert session_cookie["httpOnly"] is True
            assert session_cookie["sameSite"] == "Strict"
            assert pipeline.keys.operator not in session_cookie["value"]
            rows = page.locator("#refunds tbody tr")
            assert rows.count() == 3  # the succeeded one is not among what needs fixing
            # The producer's key, a script, is shown as text and never runs.
            assert page.locator("td.key", has_text=XSS_KEY).count() == 1
            _screenshot(page, artifact(tmp_path, "console-list.png"))

            # Filter by error text, then by order.
            page.fill("#f-error", "holded")
            page.click("#f-apply")
            page.wait_for_selector("#summary")
            assert rows.count() == 1
            assert "RMA-5002" in page.inner_text("#refunds")
            page.fill("#f-error", "")
            page.fill("#f-order", str(down))
            page.click("#f-apply")
            page.wait_for_selector("#summary")
            assert rows.count() == 1
            assert "RMA-5001" in page.inner_text("#refunds")

            # Open it: Magento was down (502 on every order read).
            page.click("#refunds a.refund-link")
            page.wait_for_selector("#timeline")
            assert page.url == f"{pipeline.url}/console/refunds/{down_id}"
            assert page.inner_text("#status") == "failed"
            assert "order_get" in page.inner_text("#timeline")
            assert "502" in page.inner_text("#timeline")

            # Magento is back: replay with a reason, and watch it succeed.
            state.clear_faults()
            page.fill("#reason", "Magento answered 502 all morning; it is back")
            page.click("#replay-button")
            page.wait_for_selector("#message")
            assert "Replayed" in page.inner_text("#message")
            deadline = time.monotonic() + 60
            while page.inner_text("#status") != "succeeded":  # the page reloads itself
                assert time.monotonic() < deadline, page.inner_text("#status")
                page.wait_for_timeout(500)
                page.wait_for_selector("#status")
            timeline = page.inner_text("#timeline")
            assert "Replayed (refund)" in timeline
            assert "alice" in timeline
            assert "Magento answered 502 all morning; it is back" in timeline
            assert "Settled: succeeded" in timeline
            assert page.inner_text("#creditmemo") != "-"
            assert "already succeeded" in page.inner_text("#refund-refusal")
            assert page.locator("#replay-form").count() == 0
            _screenshot(page, artifact(tmp_path, "console-refund.png"))

            # Logging out ends the session in this browser.
            page.click("#logout")
            page.wait_for_selector("#login")
            page.goto(f"{pipeline.url}/console/refunds")
            assert page.url.startswith(f"{pipeline.url}/console/login")
        finally:
            browser.close()

    assert dialogs == []  # no script ran: no alert() from a key or a comment
    row = pipeline.stack.view(down_id)
    assert (row.status.value, row.replayed_by) == ("succeeded", "alice")
    memos = [memo for memo in state.creditmemos() if int(memo["order_id"]) == down]
    assert len(memos) == 1
    print(f"browser test: {time.monotonic() - started:.1f} s")
