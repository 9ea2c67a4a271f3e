"""Settings: validated once; missing, placeholder or contradictory values name the setting."""

from __future__ import annotations

import pytest

from refund_worker.errors import ConfigurationError
from refund_worker.settings import load_settings

OAUTH = {
    "magento_oauth_consumer_key": "ck",
    "magento_oauth_consumer_secret": "cs-real",
    "magento_oauth_access_token": "at",
    "magento_oauth_access_token_secret": "ats-real",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("REFUND_WORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(str(tmp_path))  # no stray .env


def test_defaults() -> None:
    settings = load_settings()
    assert settings.broker_dsn == "redis://localhost:6379/0"
    assert settings.database_dsn == "sqlite:///refund_worker.db"
    assert settings.magento_store_code == "default"


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    Path(str(tmp_path), ".env").write_text("REFUND_WORKER_MAGENTO_STORE_CODE=fr\n")
    monkeypatch.setenv("REFUND_WORKER_MAGENTO_TIMEOUT", "7.5")
    settings = load_settings()
    assert settings.magento_store_code == "fr"
    assert settings.magento_timeout == 7.5


def test_secrets_are_never_printed() -> None:
    settings = load_settings(magento_url="http://shop", magento_token="s3cr3t-token")
    assert "s3cr3t-token" not in repr(settings)
    assert "s3cr3t-token" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"magento_token": "changeme"}, "REFUND_WORKER_MAGENTO_TOKEN"),
        ({**OAUTH, "magento_oauth_consumer_secret": "secret"},
         "REFUND_WORKER_MAGENTO_OAUTH_CONSUMER_SECRET"),
        ({"magento_oauth_consumer_key": "ck"}, "REFUND_WORKER_MAGENTO_OAUTH_ACCESS_TOKEN"),
        ({**OAUTH, "magento_token": "tok"}, "REFUND_WORKER_MAGENTO_TOKEN"),
        ({"magento_timeout": -1}, "REFUND_WORKER_MAGENTO_TIMEOUT"),
        ({"lease_seconds": 10, "magento_timeout": 10}, "REFUND_WORKER_LEASE_SECONDS"),
        ({"visibility_timeout": 100}, "REFUND_WORKER_VISIBILITY_TIMEOUT"),
        ({"flower_basic_auth": "admin"}, "REFUND_WORKER_FLOWER_BASIC_AUTH"),
    ],
)
def test_bad_settings_name_the_setting(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        load_settings(**overrides)


def test_worker_needs_magento() -> None:
    with pytest.raises(ConfigurationError, match="REFUND_WORKER_MAGENTO_URL"):
        load_settings().require_magento()
    with pytest.raises(ConfigurationError, match="no Magento credentials"):
        load_settings(magento_url="http://shop").require_magento()
    load_settings(magento_url="http://shop", **OAUTH).require_magento()


def test_urls_with_passwords_are_secrets_never_printed() -> None:
    settings = load_settings(
        database_url="postgresql+psycopg://refunds:pg-s3cret@db/refunds",
        broker_url="redis://:redis-s3cret@broker:6379/0",
    )
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "pg-s3cret" not in shown
        assert "redis-s3cret" not in shown
    assert settings.database_dsn.endswith("pg-s3cret@db/refunds")
    assert settings.broker_dsn == "redis://:redis-s3cret@broker:6379/0"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("database_url", "not a url", "not a database URL"),
        ("database_url", "mysql://u:pw@h/d", "'mysql' database is not supported"),
        ("database_url", "postgresql+asyncpg://u:pw@h/d", "name the psycopg driver"),
        ("broker_url", "kafka://u:pw@h", "not a broker URL"),
        ("broker_url", "localhost:6379", "not a broker URL"),
    ],
)
def test_unusable_urls_are_refused_by_name_without_echoing_them(
    field: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**{field: value})
    assert f"REFUND_WORKER_{field.upper()}" in str(caught.value)
    assert message in str(caught.value)
    assert "pw" not in str(caught.value).replace("psycopg", "")


def test_api_keys_that_are_not_json_are_one_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REFUND_WORKER_API_KEYS", '[{"name": ')
    with pytest.raises(ConfigurationError, match="api_keys"):
        load_settings()
