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
    assert settings.broker_url == "redis://localhost:6379/0"
    assert settings.database_url == "sqlite:///refund_worker.db"
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
