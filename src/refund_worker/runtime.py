"""Builds the per-process services (database, Magento client, limiter) from settings, once."""

from __future__ import annotations

import contextvars
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
import redis

from refund_worker.db import Database
from refund_worker.magento import BearerAuth, CallRecord, MagentoClient, OAuth1Auth
from refund_worker.notifications import NotificationService
from refund_worker.ratelimit import CallLimiter, NoLimit, RedisCallLimiter
from refund_worker.refunds import MagentoAPI, RefundService
from refund_worker.settings import Settings, get_settings

_recorder: contextvars.ContextVar[Callable[[CallRecord], None] | None] = contextvars.ContextVar(
    "refund_worker_call_recorder", default=None
)


def _record(call: CallRecord) -> None:
    callback = _recorder.get()
    if callback is not None:
        callback(call)


def magento_auth(settings: Settings) -> httpx.Auth:
    """Bearer or OAuth 1.0a credentials from settings."""
    settings.require_magento()
    if settings.magento_token is not None:
        return BearerAuth(settings.magento_token.get_secret_value())
    assert settings.magento_oauth_consumer_key is not None
    assert settings.magento_oauth_consumer_secret is not None
    assert settings.magento_oauth_access_token is not None
    assert settings.magento_oauth_access_token_secret is not None
    return OAuth1Auth(
        settings.magento_oauth_consumer_key.get_secret_value(),
        settings.magento_oauth_consumer_secret.get_secret_value(),
        settings.magento_oauth_access_token.get_secret_value(),
        settings.magento_oauth_access_token_secret.get_secret_value(),
    )


class _WholeRequestStream(httpcore.NetworkStream):
    """Holds what is written until the response is read, then sends it in one write.

    A request then reaches the kernel whole or not at all: a worker killed while sending never
    leaves headers without their body. Magento reads a missing body as "no parameters", and
    RefundOrder without parameters refunds the whole order, without our marker; a front end
    that buffers request bodies (nginx's default) never passes such a request on, one that
    does not would.
    """

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self._pending: list[bytes] = []

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._pending.append(buffer)

    def _flush(self, timeout: float | None) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._stream.write(data, timeout)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._flush(timeout)
        return self._stream.read(max_bytes, timeout)

    def close(self) -> None:
        self._pending.clear()
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        self._flush(timeout)
        return _WholeRequestStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _WholeRequestBackend(httpcore.NetworkBackend):
    """httpcore's synchronous sockets, each wrapped in a :class:`_WholeRequestStream`."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _WholeRequestStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(path, timeout, socket_options)
        return _WholeRequestStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class WholeRequestTransport(httpx.HTTPTransport):
    """httpx's transport, sending every request in a single write (see ``_WholeRequestStream``)."""

    def __init__(self) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=_WholeRequestBackend()
        )


@dataclass
class Runtime:
    """Everything a worker process needs, built once per process."""

    settings: Settings
    database: Database
    client: MagentoClient
    limiter: CallLimiter
    refunds: RefundService
    notifications: NotificationService

    @classmethod
    def from_settings(cls, settings: Settings, *, limiter: CallLimiter | None = None) -> Runtime:
        """Wire the services; one shared HTTP connection pool, calls recorded per attempt."""
        settings.require_magento()
        database = Database.from_url(settings.database_url)
        client = MagentoClient(
            str(settings.magento_url),
            auth=magento_auth(settings),
            store_code=settings.magento_store_code,
            timeout=settings.magento_timeout,
            transport=WholeRequestTransport(),
            on_call=_record,
        )
        if limiter is None:
            limiter = _limiter_for(settings)
        factory = _client_factory(client)
        return cls(
            settings=settings,
            database=database,
            client=client,
            limiter=limiter,
            refunds=RefundService(database, factory, settings, limiter=limiter),
            notifications=NotificationService(database, factory, settings, limiter=limiter),
        )

    def check_ready(self) -> None:
        """Schema ready (created on SQLite; up to date on PostgreSQL), Magento configured."""
        self.settings.require_magento()
        self.database.prepare()

    def close(self) -> None:
        """Release connections."""
        self.client.close()
        self.database.dispose()


def _client_factory(client: MagentoClient) -> Callable[[Callable[[CallRecord], None]], MagentoAPI]:
    def factory(on_call: Callable[[CallRecord], None]) -> MagentoAPI:
        _recorder.set(on_call)
        return client

    return factory


def _limiter_for(settings: Settings) -> CallLimiter:
    if settings.magento_rate_limit <= 0 or not settings.broker_url.startswith("redis"):
        return NoLimit()
    # Short timeouts: the limiter fails open, and must not hold a refund up while Redis is away.
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=1, socket_connect_timeout=1)
    return RedisCallLimiter(
        client, instance=str(settings.magento_url), rate=settings.magento_rate_limit
    )


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """This process's runtime, built from ``get_settings()`` on first use."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime.from_settings(get_settings())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (the demo and tests build their own)."""
    global _runtime
    with _lock:
        _runtime = runtime


def reset_runtime() -> None:
    """Forget this process's runtime (after a fork); it is rebuilt on next use."""
    set_runtime(None)
