"""Builds the per-process services (database, one Magento client and limiter per shop) from
settings, once."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx
import redis

from refund_worker import metrics
from refund_worker.db import Database
from refund_worker.errors import ConfigurationError
from refund_worker.heartbeat import SweepHeartbeat
from refund_worker.magento import BearerAuth, MagentoClient, OAuth1Auth
from refund_worker.magento.transport import LeanTransport
from refund_worker.notifications import NotificationService
from refund_worker.ratelimit import (
    CallLimiter,
    LocalGate,
    NoLimit,
    RedisCallLimiter,
    RedisShopGate,
    ShopGate,
)
from refund_worker.refunds import RefundService, Shop
from refund_worker.settings import Settings, ShopSettings, get_settings
from refund_worker.store import EmailStore, RefundStore
from refund_worker.webhooks.delivery import DeliveryService


def magento_auth(settings: Settings) -> httpx.Auth:
    """Bearer or OAuth 1.0a credentials of the ``default`` shop (``MAGENTO_*``)."""
    settings.require_magento()
    shops = settings.shop_configs
    return shop_auth(shops["default"] if "default" in shops else next(iter(shops.values())))


def shop_auth(shop: ShopSettings) -> httpx.Auth:
    """Bearer or OAuth 1.0a credentials of one shop."""
    if shop.token is not None:
        return BearerAuth(shop.token.get_secret_value())
    assert shop.oauth_consumer_key is not None
    assert shop.oauth_consumer_secret is not None
    assert shop.oauth_access_token is not None
    assert shop.oauth_access_token_secret is not None
    return OAuth1Auth(
        shop.oauth_consumer_key.get_secret_value(),
        shop.oauth_consumer_secret.get_secret_value(),
        shop.oauth_access_token.get_secret_value(),
        shop.oauth_access_token_secret.get_secret_value(),
    )


def shop_client(shop: ShopSettings) -> MagentoClient:
    """One shop's client: its URL, credentials, default store code and timeout."""
    return MagentoClient(
        shop.url,
        auth=shop_auth(shop),
        store_code=shop.store_code,
        timeout=shop.timeout,
        transport=LeanTransport(),
        shop=shop.name,
    )


@dataclass
class Runtime:
    """Everything a worker process needs, built once per process."""

    settings: Settings
    database: Database
    #: The first shop's client and limiter (the ``default`` one in a single-shop deployment).
    client: MagentoClient
    limiter: CallLimiter
    refunds: RefundService
    notifications: NotificationService
    webhooks: DeliveryService
    #: Every configured shop by name, each with its own client, limiter and gate.
    shops: dict[str, Shop]
    #: The sweep's heartbeat: set by each sweep, read before a refund is parked.
    heartbeat: SweepHeartbeat

    @classmethod
    def from_settings(cls, settings: Settings, *, limiter: CallLimiter | None = None) -> Runtime:
        """Wire the services; one shared HTTP client per shop (a kept-alive connection per
        thread, each request sent in one write: see :mod:`refund_worker.magento.transport`);
        each attempt records its calls through ``client.recording``. ``limiter``: the one
        limiter of every shop (tests)."""
        settings.require_magento()
        metrics.use_shops(settings.shop_configs)
        database = Database.from_url(
            settings.database_dsn, pool_size=database_pool_size(settings, _task_slots)
        )
        redis_client = limiter_redis(settings)
        shops: dict[str, Shop] = {}
        for config in settings.shop_configs.values():
            shops[config.name] = Shop(
                config.name,
                shop_client(config),
                limiter if limiter is not None else _limiter_for(config, redis_client, settings),
                _gate_for(config, redis_client),
            )
        heartbeat = SweepHeartbeat(redis_client, settings.sweep_interval_seconds)
        first = next(iter(shops.values()))
        client = first.magento
        assert isinstance(client, MagentoClient)
        return cls(
            settings=settings,
            database=database,
            client=client,
            limiter=first.limiter,
            refunds=RefundService(
                RefundStore(database),
                client,
                settings,
                limiter=first.limiter,
                shops=shops,
                sweep=heartbeat,
            ),
            notifications=NotificationService(
                EmailStore(database), client, settings, limiter=first.limiter, shops=shops
            ),
            shops=shops,
            webhooks=DeliveryService(database, settings),
            heartbeat=heartbeat,
        )

    def check_ready(self) -> None:
        """Schema ready (created on SQLite; up to date on PostgreSQL), Magento configured."""
        self.settings.require_magento()
        self.database.prepare()

    def close(self) -> None:
        """Release connections."""
        for shop in self.shops.values():
            if isinstance(shop.magento, MagentoClient):
                shop.magento.close()
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


def limiter_redis(settings: Settings) -> redis.Redis | None:
    """The Redis the limiters and gates share: the broker's, or ``REDIS_URL`` beside another
    broker; None when there is none (gates are then this process's own)."""
    url = settings.limiter_redis_dsn
    if url is None or settings.broker_kind == "memory":
        return None
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
    return client


def _limiter_for(
    shop: ShopSettings, client: redis.Redis | None, settings: Settings
) -> CallLimiter:
    """The shop's call limit, keyed in Redis by the shop's name."""
    if shop.rate_limit <= 0 or settings.broker_kind == "memory":
        return NoLimit()
    if client is None:
        raise ConfigurationError(
            f"shop {shop.name!r} has a rate limit, which needs a Redis shared by every worker, "
            "and the broker is not Redis: set REFUND_WORKER_REDIS_URL (or a rate limit of 0)"
        )
    return RedisCallLimiter(client, instance=shop.name, rate=shop.rate_limit)


def _gate_for(shop: ShopSettings, client: redis.Redis | None) -> ShopGate:
    """The shop's pause and cap on refunds in flight: shared in Redis, else this process's."""
    if client is None:
        return LocalGate(shop.max_in_flight)
    return RedisShopGate(client, shop=shop.name, max_in_flight=shop.max_in_flight)


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
