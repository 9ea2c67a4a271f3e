"""The refund page lists the refund's webhook deliveries from the outbox, oldest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from refund_worker.models import WebhookDelivery, WebhookEndpoint
from tests.api.support import Api
from tests.console.support import add_refund, logged_in

START = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


def test_the_refund_page_shows_its_webhook_deliveries(api: Api) -> None:
    refund_id = add_refund(api, "RMA-7", order_id=7, status="failed", last_error="holded",
                           created_at=START)
    with api.database.session_scope() as session:
        session.add(WebhookEndpoint(
            id="e1", tenant="erp", url="https://erp.example.com/hooks", event_types=",x,",
            secret_salt="s", key_id="k", enabled=True, created_at=START, updated_at=START))
        session.flush()
        session.add_all([
            WebhookDelivery(event_id="msg_second", event_type="refund.replayed",
                            refund_id=refund_id, endpoint_id="e1", data_json="{}",
                            status="retrying", attempts=3, last_error="HTTP 500",
                            created_at=START + timedelta(minutes=5), updated_at=START),
            WebhookDelivery(event_id="msg_first", event_type="refund.failed",
                            refund_id=refund_id, endpoint_id="e1", data_json="{}",
                            status="delivered", attempts=1, delivered_at=START,
                            created_at=START, updated_at=START),
        ])
    page = logged_in(api).get(f"/console/refunds/{refund_id}")
    assert page.status_code == 200
    text = page.text
    assert 'id="webhooks">None yet.<' not in text
    for expected in ("msg_first", "refund.failed", "delivered", "https://erp.example.com/hooks",
                     "msg_second", "refund.replayed", "retrying", "HTTP 500"):
        assert expected in text, expected
    assert text.index("msg_first") < text.index("msg_second")
