"""Builds the per-process services (database, Magento client, limiter) from settings, once."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx
import redis

from refund_worker.db import Database
from refund_worker.errors import ConfigurationError
from refund_worker.magento import BearerAuth, MagentoClient, OAuth1Auth
from refund_worker.magento.transport import LeanTransport
from refund_worker.notifications import NotificationService
from refund_worker.ratelimit import CallLimiter, NoLimit, RedisCallLimiter
from refund_worker.refunds import RefundService
from refund_worker.settings import Settings, get_settings
from refund_worker.store import EmailStore, RefundStore
from refund_worker.webhooks.delivery import DeliveryService


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


@dataclass
class Runtime:
    """Everything a worker process needs, built once per process."""

    settings: Settings
    database: Database
    client: MagentoClient
    limiter: CallLimiter
    refunds: RefundService
    notifications: NotificationService
    webhooks: DeliveryService

    @classmethod
    def from_settings(cls, settings: Settings, *, limiter: CallLimiter | None = None) -> Runtime:
        """Wire the services; one shared HTTP client (a kept-alive connection per thread, each
        request sent in one write: see :mod:`refund_worker.magento.transport`); each attempt
        records its calls through ``client.recording``."""
        settings.require_magento()
        database = Database.from_url(
            settings.database_dsn, pool_size=database_pool_size(settings, _task_slots)
        )
        client = MagentoClient(
            str(settings.magento_url),
            auth=magento_auth(settings),
            store_code=settings.magento_store_code,
            timeout=settings.magento_timeout,
            transport=LeanTransport(),
        )
        if limiter is None:
            limiter = _limiter_for(settings)
        return cls(
            settings=settings,
            database=database,
            client=client,
            limiter=limiter,
            refunds=RefundService(RefundStore(database), client, settings, limiter=limiter),
            notifications=NotificationService(
                EmailStore(database), client, settings, limiter=limiter
            ),
            webhooks=DeliveryService(database, settings),
        )

    def check_ready(self) -> None:
        """Schema ready (created on SQLite; up to date on PostgreSQL), Magento configured."""
        self.settings.require_magento()
        self.database.prepare()

    def close(self) -> None:
        """Release connections."""
        self.client.close()
        self.webhooks.close()
        self.database.dispose()


def database_pool_size(settings: Settings, task_slots: int | None) -> int | None:
    """The setting if given; else one connection per task slot and one for the process itself
    (kept open, where the default pool of 10 would open and close the rest per task once more
    than 10 tasks hold one); ``None`` (the engine's default) outside a worker."""
    if settings.database_pool_size is not None:
        return settings.database_pool_size
    if task_slots is not None:
        return task_slots + 1
    return None


def _limiter_for(settings: Settings) -> CallLimiter:
    if settings.magento_rate_limit <= 0 or settings.broker_kind == "memory":
        return NoLimit()
    url = settings.limiter_redis_dsn
    if url is None:
        raise ConfigurationError(
            "REFUND_WORKER_MAGENTO_RATE_LIMIT needs a Redis shared by every worker and the broker "
            "is not Redis: set REFUND_WORKER_REDIS_URL (or REFUND_WORKER_MAGENTO_RATE_LIMIT=0)"
        )
    # Short timeouts: the limiter fails open, and must not hold a refund up while Redis is away.
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    if settings.broker_kind != "redis":
        # Beside RabbitMQ the Redis is a dependency of its own: refuse to start without it (a
        # Redis broker is checked by the broker connection itself).
        try:
            client.ping()
        except redis.RedisError as exc:
            raise ConfigurationError(
                f"cannot reach the Redis of REFUND_WORKER_REDIS_URL: {type(exc).__name__}"
            ) from None
    return RedisCallLimiter(
        client, instance=str(settings.magento_url), rate=settings.magento_rate_limit
    )


_lock = threading.Lock()
_runtime: Runtime | None = None
_task_slots: int | None = None


def set_task_slots(slots: int | None) -> None:
    """Tell the runtime built next how many tasks this process runs at once (the worker's
    concurrency), to size its database pool."""
    global _task_slots
    _task_slots = slots


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
