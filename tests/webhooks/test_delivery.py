"""One delivery against a real HTTP receiver on a socket: signed so that the reference
``standardwebhooks`` verifier accepts it; a 2xx is delivered; a 500, a wrong status (a redirect
is never followed), a timeout, a dropped connection and a receiver that is down are retried with
capped, jittered backoff, the same event id and body every time, until the retry window ends;
an endpoint failing for long enough is disabled with its reason."""

from __future__ import annotations

import json
import random
import socket
import time

import pytest
import standardwebhooks

from refund_worker.webhooks.delivery import COUNTDOWN_LIMIT_SECONDS, retry_delay
from refund_worker.webhooks.endpoints import get_endpoint, replay_deliveries, set_enabled
from tests.webhooks.conftest import Hooks, webhook_settings


def test_a_delivery_is_signed_per_standard_webhooks_and_recorded(hooks: Hooks) -> None:
    endpoint_id = hooks.endpoint()
    refund_id = hooks.refund()
    [delivery_id] = hooks.event(refund_id)

    result = hooks.service().deliver(delivery_id)

    assert (result.status, result.retry_in) == ("delivered", None)
    [request] = hooks.receiver.received
    row = hooks.row(delivery_id)
    assert request.headers["webhook-id"] == row.event_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 10
    assert request.headers["content-type"] == "application/json"
    secret = hooks.secrets[endpoint_id].get_secret_value()
    assert secret.startswith("whsec_")
    # The reference implementation accepts it ...
    payload = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "refund.succeeded"
    assert payload["data"]["refund_id"] == refund_id
    assert payload["data"]["idempotency_key"] == "rma-1"
    assert payload["data"]["order_id"] == 42
    assert payload["data"]["creditmemo_id"] == 7
    # ... and refuses it under another endpoint's secret.
    other = hooks.secrets[hooks.endpoint()].get_secret_value()
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(other).verify(request.body, request.headers)
    assert (row.status, row.attempts, row.last_http_status) == ("delivered", 1, 204)
    assert row.delivered_at is not None
    # A second copy of the message finds it settled and sends nothing.
    assert hooks.service().deliver(delivery_id).status == "delivered"
    assert len(hooks.receiver.received) == 1


def test_a_slow_receiver_within_the_timeout_is_delivered(hooks: Hooks) -> None:
    hooks.endpoint()
    [delivery_id] = hooks.event(hooks.refund())
    hooks.receiver.mode = "slow:0.2"
    assert hooks.service().deliver(delivery_id).status == "delivered"


@pytest.mark.parametrize(("mode", "error"), [
    ("status:500", "HTTP 500"),
    ("status:404", "HTTP 404"),
    ("status:302", "HTTP 302"),  # never followed (its Location is the metadata address)
    ("hang", "timed out"),
    ("drop", "RemoteProtocolError"),
])
def test_a_failed_attempt_is_retried_with_the_same_id_and_body(
    hooks: Hooks, mode: str, error: str
) -> None:
    hooks.endpoint()
    [delivery_id] = hooks.event(hooks.refund())
    hooks.receiver.mode = mode
    service = hooks.service()

    started = time.monotonic()
    first = service.deliver(delivery_id)
    assert time.monotonic() - started < 3  # the timeout held
    assert first.status == "retrying"
    assert first.retry_in is not None
    assert 2 <= first.retry_in <= 4  # base 4 s, half of it jittered
    row = hooks.row(delivery_id)
    assert row.last_error is not None
    assert error in row.last_error
    if mode.startswith("status:5"):
        assert row.response_excerpt is not None
        assert len(row.response_excerpt) <= 200  # the receiver said 2,400 characters
    assert len(hooks.receiver.received) == 1  # no redirect followed
    assert service.deliver(delivery_id).detail.startswith("not due")

    hooks.receiver.mode = "ok"
    hooks.clock.advance(first.retry_in)
    assert service.deliver(delivery_id).status == "delivered"
    first_try, second_try = hooks.receiver.received[-2:]
    assert first_try.headers["webhook-id"] == second_try.headers["webhook-id"]
    assert first_try.body == second_try.body
    assert hooks.row(delivery_id).attempts == 2


def test_a_receiver_that_is_down_is_retried(hooks: Hooks) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    hooks.endpoint(f"http://127.0.0.1:{port}/hooks")
    [delivery_id] = hooks.event(hooks.refund())
    result = hooks.service().deliver(delivery_id)
    assert result.status == "retrying"
    assert "ConnectError" in (hooks.row(delivery_id).last_error or "")


def test_backoff_is_exponential_capped_and_jittered() -> None:
    settings = webhook_settings(webhook_retry_base_seconds=5, webhook_retry_max_seconds=3600)
    rng = random.Random(1)
    delays = [retry_delay(attempt, settings, rng) for attempt in range(1, 16)]
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(3600, 5 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[-5:]}) == 5  # jittered, even at the cap
    # With the defaults, retries run past a day before the window closes.
    defaults = webhook_settings(webhook_retry_base_seconds=5, webhook_retry_max_seconds=3600,
                                webhook_retry_for_seconds=3 * 86400)
    assert defaults.webhook_retry_for_seconds >= 86400


def test_a_long_backoff_is_left_to_the_sweep(hooks: Hooks) -> None:
    from refund_worker.webhooks.sweep import find_stranded_deliveries

    hooks.endpoint()
    [delivery_id] = hooks.event(hooks.refund())
    hooks.receiver.mode = "status:503"
    service = hooks.service(webhook_retry_base_seconds=COUNTDOWN_LIMIT_SECONDS * 4,
                            webhook_retry_max_seconds=COUNTDOWN_LIMIT_SECONDS * 4)
    result = service.deliver(delivery_id)
    assert (result.status, result.retry_in) == ("retrying", None)  # no countdown message
    row = hooks.row(delivery_id)
    assert row.published_at is None
    assert row.next_attempt_at is not None
    assert find_stranded_deliveries(hooks.database, hooks.settings, hooks.clock()) == []
    due = row.next_attempt_at
    assert find_stranded_deliveries(hooks.database, hooks.settings, due) == [delivery_id]


def test_after_the_retry_window_the_delivery_fails_and_can_be_replayed(hooks: Hooks) -> None:
    hooks.endpoint()
    [delivery_id] = hooks.event(hooks.refund())
    hooks.receiver.mode = "status:500"
    service = hooks.service()
    assert service.deliver(delivery_id).status == "retrying"
    hooks.clock.advance(hooks.settings.webhook_retry_for_seconds)
    last = service.deliver(delivery_id)
    assert last.status == "failed"
    assert "gave up after 2 attempts: HTTP 500" in last.detail

    hooks.receiver.mode = "ok"
    outcome = replay_deliveries(hooks.database, hooks.settings, [delivery_id, 999], tenant=None)
    assert outcome.replayed == [delivery_id]
    assert outcome.refused == {999: "no such delivery"}
    again = replay_deliveries(hooks.database, hooks.settings, [delivery_id], tenant=None)
    assert again.refused == {delivery_id: "still in flight (pending)"}
    hooks.clock.now = hooks.row(delivery_id).next_attempt_at or hooks.clock.now
    assert service.deliver(delivery_id).status == "delivered"
    ids = {r.headers["webhook-id"] for r in hooks.receiver.received}
    assert len(ids) == 1


def test_an_endpoint_failing_long_enough_is_disabled_and_can_be_enabled(hooks: Hooks) -> None:
    endpoint_id = hooks.endpoint()
    refund_id = hooks.refund()
    hooks.receiver.mode = "status:500"
    service = hooks.service()
    [first] = hooks.event(refund_id)
    service.deliver(first)
    view = get_endpoint(hooks.database, endpoint_id, tenant=None)
    assert view is not None
    assert view.enabled
    assert view.failing_since == hooks.clock()
    hooks.clock.advance(hooks.settings.webhook_disable_after_seconds + 1)
    [second] = hooks.event(refund_id)
    service.deliver(second)
    view = get_endpoint(hooks.database, endpoint_id, tenant=None)
    assert view is not None
    assert not view.enabled
    assert view.disabled_reason is not None
    assert "disabled automatically" in view.disabled_reason
    assert "HTTP 500" in view.disabled_reason
    # A disabled endpoint gets no new events, and its waiting deliveries fail with the reason.
    assert hooks.event(refund_id) == []
    hooks.clock.advance(3600)
    failed = service.deliver(first)
    assert failed.status == "failed"
    assert "endpoint disabled" in failed.detail
    refused = replay_deliveries(hooks.database, hooks.settings, [first], tenant=None)
    assert "enable it first" in refused.refused[first]

    enabled = set_enabled(hooks.database, endpoint_id, enabled=True, tenant=None, actor="ops")
    assert enabled is not None
    assert enabled.enabled
    assert enabled.failing_since is None
    hooks.receiver.mode = "ok"
    assert replay_deliveries(hooks.database, hooks.settings, [first], tenant=None).replayed
    hooks.clock.advance(1)
    assert service.deliver(first).status == "delivered"


def test_no_secret_key_nothing_is_sent(hooks: Hooks) -> None:
    hooks.endpoint()
    [delivery_id] = hooks.event(hooks.refund())
    result = hooks.service(secret_key=None).deliver(delivery_id)
    assert result.status == "retrying"
    assert "REFUND_WORKER_SECRET_KEY" in result.detail
    assert hooks.receiver.received == []
    # Another key than the one the endpoint's secret came from: refused, never mis-signed.
    from pydantic import SecretStr

    hooks.clock.advance(60)
    other = hooks.service(secret_key=SecretStr("another-key-" + "x" * 30)).deliver(delivery_id)
    assert "not the key" in other.detail
    assert hooks.receiver.received == []


def test_the_body_is_the_event_and_nothing_else(hooks: Hooks) -> None:
    hooks.endpoint()
    [delivery_id] = hooks.event(hooks.refund(), outcome="refunded")
    hooks.service().deliver(delivery_id)
    body = json.loads(hooks.receiver.received[0].body)
    assert set(body) == {"type", "timestamp", "data"}
    assert body["timestamp"].endswith("Z")
    assert "tenant" not in body["data"]
    assert "marker" not in json.dumps(body)
