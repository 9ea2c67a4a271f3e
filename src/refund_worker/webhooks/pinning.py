"""Deliveries connect to the address the SSRF guard checked, not to a second DNS answer.

``urls.check_destination`` resolves an endpoint's host and checks every address; if the
connection then resolved the name again, a receiver's DNS could answer with a public address to
the check and a private one to the connection (DNS rebinding). Here the HTTP client's network
backend connects only to the address checked for that host in this thread (``pinned``), and
refuses any connection it was not given an address for. TLS still verifies the certificate
against the host's name (the pool is keyed by the URL's host, so a kept-alive connection is
only ever reused for the same name, and it was opened to a checked address).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

__all__ = ["PinnedBackend", "pinned_transport"]


def _same_host(connecting: str, checked: str) -> bool:
    return connecting.strip("[]").lower() == checked.strip("[]").lower()


class PinnedBackend(httpcore.NetworkBackend):
    """A network backend that connects a host only to the address pinned for it."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._local = threading.local()

    @contextmanager
    def pinned(self, host: str, address: str) -> Iterator[None]:
        """While inside, a connection to ``host`` (from this thread) goes to ``address``."""
        self._local.pin = (host, address)
        try:
            yield
        finally:
            self._local.pin = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        """Connect to the checked address of ``host``; refuse a host nobody checked."""
        pin = getattr(self._local, "pin", None)
        if pin is None or not _same_host(host, pin[0]):
            raise httpcore.ConnectError(f"no checked address to connect {host!r} to")
        return self._inner.connect_tcp(
            pin[1], port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        """Never: a webhook goes over TCP to a checked address."""
        raise httpcore.ConnectError("webhooks do not connect to unix sockets")

    def sleep(self, seconds: float) -> None:
        """As the default backend."""
        self._inner.sleep(seconds)


def pinned_transport(backend: PinnedBackend, limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport over a connection pool that connects through ``backend`` (no
    proxy, no certificates or settings from the environment)."""
    transport = httpx.HTTPTransport(trust_env=False, limits=limits)
    # httpx builds its pool without a way to name the backend; the same pool, with it.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend,
    )
    return transport
