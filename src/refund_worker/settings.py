"""One validated settings object from the environment (prefix ``REFUND_WORKER_``) and ``.env``."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from refund_worker.environment import DATABASE_DIALECTS as DATABASE_DIALECTS  # re-exported
from refund_worker.environment import DEFAULT_DATABASE_URL, ENV_FILE
from refund_worker.environment import ENV_PREFIX as ENV_PREFIX  # re-exported
from refund_worker.environment import database_url_problem as database_url_problem
from refund_worker.errors import ConfigurationError
from refund_worker.statuses import DEFAULT_SHOP as DEFAULT_SHOP  # re-exported
from refund_worker.statuses import MAX_SHOP_NAME as MAX_SHOP_NAME
from refund_worker.statuses import SHOP_NAME_PATTERN as SHOP_NAME_PATTERN

#: Values people leave in example files; refused for any secret.
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "change_me", "secret", "password", "token", "xxx", "todo", "..."}
)

#: A metrics bearer token is at least this long.
MIN_METRICS_TOKEN_LENGTH = 24

#: The console's signing secret is at least this long (32 URL-safe characters: 192 bits).
MIN_CONSOLE_SECRET_LENGTH = 32
#: ``REFUND_WORKER_SECRET_KEY`` (webhook secrets are derived from it) is at least this long.
MIN_SECRET_KEY_LENGTH = 32
#: History younger than this many days is never pruned: operators investigate and replay failed
#: refunds from their audit rows and events (``refund-worker db prune``, ``PRUNE_AFTER_DAYS``).
MIN_RETENTION_DAYS = 30

_OAUTH_FIELDS = (
    "magento_oauth_consumer_key",
    "magento_oauth_consumer_secret",
    "magento_oauth_access_token",
    "magento_oauth_access_token_secret",
)


class ApiKey(BaseModel):
    """One HTTP API key: its holder's name, its role, its tenant, and the SHA-256 of the key
    (never the key). A producer key acts for its tenant only (its name unless ``tenant`` says
    otherwise, so that an old and a new key can share one while a key is rotated)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    role: Literal["producer", "operator"] = "producer"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenant: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    #: The shops this key may refund in (None: every configured shop). A producer's key for
    #: one brand's order system cannot then queue a refund in another brand's Magento.
    shops: list[str] | None = Field(None, min_length=1)

    @property
    def tenant_name(self) -> str:
        """The tenant this key's refunds belong to."""
        return self.tenant or self.name



_SHOP_OAUTH_FIELDS = (
    "oauth_consumer_key",
    "oauth_consumer_secret",
    "oauth_access_token",
    "oauth_access_token_secret",
)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a Magento base URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "must not carry a query, a fragment or credentials (set the token separately)"
    return None


class ShopSettings(BaseModel):
    """One Magento installation the worker refunds in: where, how, how fast. The credentials
    are ``SecretStr``: never in ``repr``, logs, the database or a task's arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=MAX_SHOP_NAME)
    url: str
    store_code: str = Field("default", pattern=r"^[a-z0-9_]{1,32}$")
    token: SecretStr | None = None
    oauth_consumer_key: SecretStr | None = None
    oauth_consumer_secret: SecretStr | None = None
    oauth_access_token: SecretStr | None = None
    oauth_access_token_secret: SecretStr | None = None
    timeout: float = Field(10.0, gt=0, le=300)
    #: Calls per second to this shop, shared by every worker (0 = no limit).
    rate_limit: float = Field(50.0, ge=0)
    #: Refunds of this shop in flight at once across all workers (None = no cap): a shop that
    #: is slow or down then holds at most this many worker threads.
    max_in_flight: int | None = Field(None, ge=1, le=100_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not SHOP_NAME_PATTERN.fullmatch(value):
            raise ValueError(
                f"{value[:40]!r} is not a shop name (1-32 of a-z 0-9, words joined by _ or -)"
            )
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        problem = url_problem(value)
        if problem:
            raise ValueError(problem)
        return value.rstrip("/")

    @model_validator(mode="after")
    def _credentials(self) -> ShopSettings:
        for name in ("token", *_SHOP_OAUTH_FIELDS):
            value = getattr(self, name)
            if (
                value is not None
                and value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS
            ):
                raise ValueError(
                    f"shop {self.name!r}: {name} is a placeholder; set the real secret"
                )
        oauth_set = [name for name in _SHOP_OAUTH_FIELDS if getattr(self, name) is not None]
        if oauth_set and len(oauth_set) != len(_SHOP_OAUTH_FIELDS):
            missing = [name for name in _SHOP_OAUTH_FIELDS if name not in oauth_set]
            raise ValueError(
                f"shop {self.name!r}: OAuth 1.0a needs all four credentials; missing "
                + ", ".join(missing)
            )
        if oauth_set and self.token is not None:
            raise ValueError(f"shop {self.name!r}: set either token or the four oauth_*, not both")
        if not oauth_set and self.token is None:
            raise ValueError(
                f"shop {self.name!r}: no Magento credentials: set token or the four oauth_* "
                "credentials"
            )
        return self


def _shops_json(value: Any) -> Any:
    """``REFUND_WORKER_SHOPS`` as given: a JSON list of shops. A name given twice is refused
    here, and so is a key given twice in one shop (JSON would silently keep the last)."""
    if isinstance(value, str):
        try:
            value = json.loads(value, object_pairs_hook=_no_duplicate_keys)
        except ValueError as exc:
            raise ValueError(f"not a JSON list of shops: {exc}") from None
    if isinstance(value, dict):
        raise ValueError('a JSON list of shops: [{"name": "eu", "url": "https://...", ...}]')
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"key {key[:40]!r} appears twice in one object")
    return dict(pairs)


class Settings(BaseSettings):
    """Everything refund-worker can be told; secrets are ``SecretStr`` and never printed."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=ENV_FILE, extra="ignore", frozen=True
    )

    #: Secret-bearing URLs (they may hold a password): read them with ``broker_dsn`` and
    #: ``database_dsn``; ``repr`` and ``model_dump_json`` show ``**********``.
    broker_url: SecretStr = SecretStr("redis://localhost:6379/0")
    #: A Redis for the shared Magento call limit when the broker is not Redis (RabbitMQ): every
    #: worker must see the same limit. With a Redis broker the broker's Redis serves.
    redis_url: SecretStr | None = None
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    #: Database connections each process keeps open. Default: a worker's concurrency + 1 (one
    #: per task thread, so none is opened and closed per task), 10 for other processes.
    database_pool_size: int | None = Field(None, ge=1, le=1000)

    magento_url: str | None = None
    magento_store_code: str = "default"
    magento_token: SecretStr | None = None
    magento_oauth_consumer_key: SecretStr | None = None
    magento_oauth_consumer_secret: SecretStr | None = None
    magento_oauth_access_token: SecretStr | None = None
    magento_oauth_access_token_secret: SecretStr | None = None
    magento_timeout: float = Field(10.0, gt=0, le=300)
    #: Calls per second allowed to the Magento instance, shared by every worker (0 = no limit).
    magento_rate_limit: float = Field(50.0, ge=0)
    #: More Magento installations, as a JSON list of ``ShopSettings`` (docs/operations.md,
    #: "Several shops"). The ``MAGENTO_*`` settings above, when ``MAGENTO_URL`` is set, are the
    #: shop named ``default``.
    shops: Annotated[list[ShopSettings], NoDecode] = Field(default_factory=list)
    #: Payment methods that refund offline, on top of Magento's own offline methods.
    offline_payment_methods: list[str] = Field(default_factory=list)

    max_attempts: int = Field(8, ge=1, le=100)
    retry_backoff_base: float = Field(2.0, gt=0)
    retry_backoff_max: float = Field(300.0, gt=0)
    #: How long a claimed refund belongs to one worker before another may take it over.
    lease_seconds: float = Field(120.0, gt=0)
    #: Wait after an attempt with an unknown outcome before reconciling (a slow commit may land).
    in_doubt_grace_seconds: float = Field(15.0, ge=0)
    #: Look this far before the first attempt when searching Magento for our credit memo.
    reconcile_clock_skew_seconds: float = Field(600.0, ge=0)
    visibility_timeout: int = Field(3600, gt=0)
    #: RabbitMQ's delivery acknowledgement timeout (its ``consumer_timeout``, 30 min unless the
    #: server says otherwise), in seconds: what the worker may count on (docs/operations.md).
    consumer_timeout: int = Field(1800, gt=0)
    #: The sweeper re-publishes a refund whose message was due this long ago and never ran.
    republish_after_seconds: float = Field(300.0, gt=0)
    sweep_interval_seconds: float = Field(30.0, gt=0)
    notification_max_attempts: int = Field(5, ge=1, le=100)
    #: Beat prunes the history (audit rows, events) of refunds settled this many days ago, once
    #: a day (``refund-worker db prune``); unset: never. At least ``MIN_RETENTION_DAYS``.
    prune_after_days: int | None = None

    flower_basic_auth: SecretStr | None = None
    #: HTTP intake keys, as JSON: ``[{"name": "erp", "role": "producer", "sha256": "..."}]``.
    api_keys: list[ApiKey] = Field(default_factory=list)
    api_max_body_bytes: int = Field(1024 * 1024, gt=0)
    #: Signs the operator console's session cookies and CSRF tokens (docs/console.md). Shared
    #: by every API process; unset, each process makes its own at start-up (``refund-worker api
    #: --workers N`` hands one made at start-up to its N processes).
    console_secret: SecretStr | None = None
    #: How long a console login lasts.
    console_session_minutes: int = Field(480, ge=1, le=7 * 24 * 60)
    #: Mark the console's cookies ``Secure`` even when the API itself is reached over plain HTTP
    #: (behind a TLS-terminating proxy); over https they always are.
    console_secure_cookies: bool = False
    #: Derives every webhook endpoint's signing secret (docs/webhooks.md): without it the
    #: database cannot sign. Needed by the processes that create endpoints and deliver.
    secret_key: SecretStr | None = None
    #: Hosts webhook endpoints may use over plain http and at private or loopback addresses
    #: (tests, development); every other endpoint is https at a public address.
    webhook_allowed_hosts: list[str] = Field(default_factory=list)
    #: Seconds to connect to a receiver, and for each read of its answer.
    webhook_timeout: float = Field(10.0, gt=0, le=60)
    #: Backoff between attempts: base * 2^(attempt-1), capped, with jitter.
    webhook_retry_base_seconds: float = Field(5.0, gt=0)
    webhook_retry_max_seconds: float = Field(3600.0, gt=0)
    #: A delivery is retried this long after its event (default 3 days), then failed.
    webhook_retry_for_seconds: float = Field(3 * 86400.0, gt=0)
    #: An endpoint whose deliveries kept failing this long (no success since) is disabled.
    webhook_disable_after_seconds: float = Field(5 * 86400.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``refund-worker worker`` serves its metrics on this port (docs/metrics.md); unset, none.
    #: Needs ``PROMETHEUS_MULTIPROC_DIR``: one empty, writable directory per worker command.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    #: The worker exporter's address; anything but loopback needs ``METRICS_TOKEN``.
    metrics_host: str = Field("127.0.0.1", min_length=1)
    #: Bearer token for the worker exporter and the API's ``/metrics`` (which also takes an
    #: operator key); Prometheus reads it from a file (``authorization.credentials_file``).
    metrics_token: SecretStr | None = None

    @field_validator("shops", mode="before")
    @classmethod
    def _shops_given(cls, value: Any) -> Any:
        return _shops_json(value)

    @field_validator("magento_url")
    @classmethod
    def _magento_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr) -> SecretStr:
        problem = database_url_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: SecretStr) -> SecretStr:
        scheme, separator, _ = value.get_secret_value().partition("://")
        if not separator or scheme not in BROKER_SCHEMES:
            raise ValueError(
                f"not a broker URL: expected one of {', '.join(sorted(BROKER_SCHEMES))}://..."
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and broker_kind(value.get_secret_value()) != "redis":
            raise ValueError("not a Redis URL: expected redis://host:port/db or rediss://...")
        return value

    @property
    def broker_kind(self) -> str:
        """``redis``, ``amqp`` (RabbitMQ) or ``memory``."""
        return broker_kind(self.broker_dsn)

    @property
    def limiter_redis_dsn(self) -> str | None:
        """The Redis of the shared call limit (password included: never print it): the broker's
        when it is Redis, else ``REDIS_URL``; None when there is none."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        return self.broker_dsn if self.broker_kind == "redis" else None

    @property
    def database_dsn(self) -> str:
        """The database URL, password included: hand it to the engine, never print it."""
        return self.database_url.get_secret_value()

    @property
    def broker_dsn(self) -> str:
        """The broker URL, password included: hand it to Celery, never print it."""
        return self.broker_url.get_secret_value()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for name in (
            "magento_token",
            *_OAUTH_FIELDS,
            "flower_basic_auth",
            "console_secret",
            "metrics_token",
            "secret_key",
        ):
            value = getattr(self, name)
            if (
                value is not None
                and value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS
            ):
                raise ValueError(
                    f"{ENV_PREFIX}{name.upper()} is a placeholder; set the real secret"
                )
        oauth_set = [name for name in _OAUTH_FIELDS if getattr(self, name) is not None]
        if oauth_set and len(oauth_set) != len(_OAUTH_FIELDS):
            missing = [f"{ENV_PREFIX}{n.upper()}" for n in _OAUTH_FIELDS if n not in oauth_set]
            raise ValueError(f"OAuth 1.0a needs all four credentials; missing {', '.join(missing)}")
        if oauth_set and self.magento_token is not None:
            raise ValueError(
                f"set either {ENV_PREFIX}MAGENTO_TOKEN or the four {ENV_PREFIX}MAGENTO_OAUTH_* "
                "settings, not both"
            )
        if (
            self.flower_basic_auth is not None
            and ":" not in self.flower_basic_auth.get_secret_value()
        ):
            raise ValueError(f"{ENV_PREFIX}FLOWER_BASIC_AUTH must look like user:password")
        if (
            self.console_secret is not None
            and len(self.console_secret.get_secret_value()) < MIN_CONSOLE_SECRET_LENGTH
        ):
            raise ValueError(
                f"{ENV_PREFIX}CONSOLE_SECRET must be at least {MIN_CONSOLE_SECRET_LENGTH} "
                "characters (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        names = [shop.name for shop in self.shops]
        if self.magento_url:
            names.insert(0, DEFAULT_SHOP)
        twice = sorted({name for name in names if names.count(name) > 1})
        known = set(names or [DEFAULT_SHOP])
        for key in self.api_keys:
            strangers = sorted(set(key.shops or ()) - known)
            if strangers:
                raise ValueError(
                    f"{ENV_PREFIX}API_KEYS: key {key.name!r} names shops that are not configured: "
                    f"{', '.join(strangers)} (configured: {', '.join(sorted(known))})"
                )
        if twice:
            implicit = (
                f" ({DEFAULT_SHOP!r} is also the shop {ENV_PREFIX}MAGENTO_URL configures)"
                if DEFAULT_SHOP in twice and self.magento_url
                else ""
            )
            raise ValueError(f"{ENV_PREFIX}SHOPS names {', '.join(twice)} twice{implicit}")
        if (
            self.metrics_token is not None
            and len(self.metrics_token.get_secret_value()) < MIN_METRICS_TOKEN_LENGTH
        ):
            raise ValueError(
                f"{ENV_PREFIX}METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} "
                "characters (e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if (
            self.secret_key is not None
            and len(self.secret_key.get_secret_value()) < MIN_SECRET_KEY_LENGTH
        ):
            raise ValueError(
                f"{ENV_PREFIX}SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters "
                "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if self.prune_after_days is not None and self.prune_after_days < MIN_RETENTION_DAYS:
            raise ValueError(
                f"{ENV_PREFIX}PRUNE_AFTER_DAYS ({self.prune_after_days}) must be at least "
                f"{MIN_RETENTION_DAYS}: history younger than that is never pruned (unset it to "
                "never prune)"
            )
        self._check_timings()
        return self

    @property
    def shop_configs(self) -> dict[str, ShopSettings]:
        """Every configured shop by name: the ``default`` one from ``MAGENTO_*`` first (when
        ``MAGENTO_URL`` is set), then ``SHOPS`` in their order. Checked by ``require_magento``."""
        shops: dict[str, ShopSettings] = {}
        if self.magento_url:
            shops[DEFAULT_SHOP] = ShopSettings.model_construct(
                name=DEFAULT_SHOP,
                url=self.magento_url.rstrip("/"),
                store_code=self.magento_store_code,
                token=self.magento_token,
                oauth_consumer_key=self.magento_oauth_consumer_key,
                oauth_consumer_secret=self.magento_oauth_consumer_secret,
                oauth_access_token=self.magento_oauth_access_token,
                oauth_access_token_secret=self.magento_oauth_access_token_secret,
                timeout=self.magento_timeout,
                rate_limit=self.magento_rate_limit,
                max_in_flight=None,
            )
        for shop in self.shops:
            shops[shop.name] = shop
        return shops

    @property
    def shop_names(self) -> list[str]:
        """The configured shops' names (what a request's ``shop`` may say)."""
        return list(self.shop_configs)

    @property
    def intake_shops(self) -> list[str]:
        """The shops a request may name: the configured ones; ``default`` alone when none is
        (an API or CLI process that never calls Magento need not be told where it is)."""
        return self.shop_names or [DEFAULT_SHOP]

    def shops_for(self, key: ApiKey) -> list[str]:
        """The shops a request made with ``key`` may name."""
        shops = self.intake_shops
        return shops if key.shops is None else [name for name in shops if name in key.shops]

    @property
    def longest_magento_timeout(self) -> float:
        """The longest Magento timeout of any shop: leases and in-doubt waits are sized by it."""
        return max(
            [self.magento_timeout, *(shop.timeout for shop in self.shops)], default=10.0
        )

    def require_secret_key(self) -> bytes:
        """The secret key's bytes, or a ``ConfigurationError`` naming the setting."""
        if self.secret_key is None:
            raise ConfigurationError(
                f"{ENV_PREFIX}SECRET_KEY is not set: webhook secrets are derived from it "
                "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return self.secret_key.get_secret_value().encode()

    def _check_timings(self) -> None:
        # One attempt makes up to four Magento calls (order, invoice, reconcile, refund).
        timeout = self.longest_magento_timeout
        if self.lease_seconds < 4 * timeout + 5:
            raise ValueError(
                f"{ENV_PREFIX}LEASE_SECONDS ({self.lease_seconds:g}) must be at least "
                f"4 x {ENV_PREFIX}MAGENTO_TIMEOUT (the longest of any shop) + 5 "
                f"({4 * timeout + 5:g}) so a live attempt is never taken over"
            )
        if self.visibility_timeout <= self.longest_countdown + self.lease_seconds:
            raise ValueError(
                f"{ENV_PREFIX}VISIBILITY_TIMEOUT ({self.visibility_timeout}) must exceed the "
                f"longest retry countdown (max of {ENV_PREFIX}RETRY_BACKOFF_MAX and "
                f"{ENV_PREFIX}MAGENTO_TIMEOUT + {ENV_PREFIX}IN_DOUBT_GRACE_SECONDS) + "
                f"{ENV_PREFIX}LEASE_SECONDS ({self.longest_countdown + self.lease_seconds:g}); "
                "otherwise Redis redelivers messages that are only waiting for their countdown"
            )
        if (
            self.broker_kind == "amqp"
            and self.consumer_timeout <= self.longest_countdown + self.lease_seconds
        ):
            raise ValueError(
                f"{ENV_PREFIX}CONSUMER_TIMEOUT ({self.consumer_timeout}) must exceed the longest "
                f"retry countdown + {ENV_PREFIX}LEASE_SECONDS "
                f"({self.longest_countdown + self.lease_seconds:g}), and so must RabbitMQ's "
                "consumer_timeout; otherwise RabbitMQ closes the channel of a worker whose "
                "task is still running"
            )

    @property
    def longest_countdown(self) -> float:
        """The longest a task ever waits for its next attempt: retries are capped at this."""
        return max(
            self.retry_backoff_max, self.longest_magento_timeout + self.in_doubt_grace_seconds
        )

    def require_magento(self) -> None:
        """Fail with a message naming the setting when the worker cannot reach Magento."""
        if not self.magento_url and not self.shops:
            raise ConfigurationError(
                f"{ENV_PREFIX}MAGENTO_URL is not set (nor {ENV_PREFIX}SHOPS): "
                "no Magento to refund in"
            )
        if not self.magento_url:
            return
        if self.magento_token is None and self.magento_oauth_consumer_key is None:
            raise ConfigurationError(
                f"no Magento credentials: set {ENV_PREFIX}MAGENTO_TOKEN or the four "
                f"{ENV_PREFIX}MAGENTO_OAUTH_* settings"
            )


#: Brokers Celery is configured for (``memory`` runs the demo in one process).
BROKER_SCHEMES = frozenset({"redis", "rediss", "amqp", "amqps", "pyamqp", "memory"})
_BROKER_KINDS = {"redis": "redis", "rediss": "redis", "amqp": "amqp", "amqps": "amqp",
                 "pyamqp": "amqp", "memory": "memory"}


def broker_kind(url: str) -> str:
    """``redis``, ``amqp`` or ``memory`` for a broker URL (``unknown`` for anything else)."""
    return _BROKER_KINDS.get(url.partition("://")[0], "unknown")


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's error into a ``ConfigurationError`` naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:  # a value pydantic-settings could not even decode (bad JSON)
        cause = exc.__cause__
        detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        raise ConfigurationError(f"invalid settings: {exc}{detail}") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error["loc"]
            if len(loc) > 1 and loc[0] == "shops" and isinstance(loc[1], int):
                rest = ".".join(str(part) for part in loc[2:])
                name = f"{ENV_PREFIX}SHOPS[{loc[1]}]{'.' + rest if rest else ''}: "
            else:
                field = ".".join(str(part) for part in loc)
                name = f"{ENV_PREFIX}{field.upper()}: " if field else ""
            problems.append(f"{name}{error['msg'].removeprefix('Value error, ')}")
        raise ConfigurationError("invalid settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
