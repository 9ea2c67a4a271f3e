"""A delivery connects to the address its SSRF check approved, never to a second DNS answer: a
name that resolves to a public address for the check cannot send the connection inside."""

from __future__ import annotations

import httpcore
import pytest
from sqlalchemy import update

from refund_worker.models import WebhookEndpoint
from refund_worker.webhooks.pinning import PinnedBackend
from refund_worker.webhooks.urls import UnsafeDestination
from tests.webhooks.conftest import Hooks


def _point_endpoint_at(hooks: Hooks, endpoint_id: str, url: str) -> None:
    """As if the endpoint had been registered under ``url`` (registration resolves with the
    system's DNS, which knows none of these test names)."""
    with hooks.database.connection_scope() as connection:
        connection.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
                           .values(url=url))


def test_the_connection_goes_to_the_checked_address_under_the_hosts_name(hooks: Hooks) -> None:
    endpoint_id = hooks.endpoint()
    _point_endpoint_at(hooks, endpoint_id, f"http://hooks.invalid:{hooks.receiver.port}/in")
    [delivery_id] = hooks.event(hooks.refund())
    answers: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        answers.append(host)
        return ["127.0.0.1"]  # ".invalid" resolves nowhere else: only the pin can reach it

    service = hooks.service(webhook_allowed_hosts=["hooks.invalid"])
    service._resolve = resolve
    result = service.deliver(delivery_id)

    assert result.status == "delivered", result.detail
    assert answers == ["hooks.invalid"]  # resolved once, by the check
    [request] = hooks.receiver.received
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert headers["host"] == f"hooks.invalid:{hooks.receiver.port}"
    assert request.path == "/in"


def test_a_name_resolving_inside_is_refused_and_nothing_is_sent(hooks: Hooks) -> None:
    endpoint_id = hooks.endpoint()
    _point_endpoint_at(hooks, endpoint_id, "https://hooks.example.com/in")
    [delivery_id] = hooks.event(hooks.refund())
    service = hooks.service()
    service._resolve = lambda host, port: ["10.1.2.3"]

    result = service.deliver(delivery_id)

    assert result.status == "retrying"
    assert "10.1.2.3" in (hooks.row(delivery_id).last_error or "")
    assert hooks.receiver.received == []


def test_the_backend_refuses_a_host_nobody_checked() -> None:
    backend = PinnedBackend()
    with pytest.raises(httpcore.ConnectError, match="no checked address"):
        backend.connect_tcp("127.0.0.1", 1)
    with backend.pinned("hooks.invalid", "127.0.0.1"), pytest.raises(
            httpcore.ConnectError, match=r"other\.invalid"):
        backend.connect_tcp("other.invalid", 1)  # pinned for another name
    with pytest.raises(httpcore.ConnectError):
        backend.connect_unix_socket("/run/docker.sock")


def test_an_unresolvable_name_is_a_refused_destination() -> None:
    from refund_worker.webhooks.urls import check_destination

    with pytest.raises(UnsafeDestination, match="cannot resolve"):
        check_destination("https://nothing.invalid/x", [])
