"""Several shops in settings: REFUND_WORKER_SHOPS as JSON, today's MAGENTO_* as the shop
``default``; every mistake is one line naming the shop's setting; secrets never shown."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from refund_worker.errors import ConfigurationError
from refund_worker.settings import ApiKey, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in list(os.environ):
        if name.startswith("REFUND_WORKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(str(tmp_path))  # no stray .env


def shop(name: str, **values: Any) -> dict[str, Any]:
    return {"name": name, "url": f"https://{name}.example.com", "token": f"{name}-s3cret", **values}


def with_shops(monkeypatch: pytest.MonkeyPatch, shops: Any, **overrides: Any) -> Any:
    text = shops if isinstance(shops, str) else json.dumps(shops)
    monkeypatch.setenv("REFUND_WORKER_SHOPS", text)
    return load_settings(**overrides)


def problem(monkeypatch: pytest.MonkeyPatch, shops: Any, **overrides: Any) -> str:
    with pytest.raises(ConfigurationError) as caught:
        with_shops(monkeypatch, shops, **overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_shops_from_json_each_with_its_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    oauth = {"oauth_consumer_key": "ck", "oauth_consumer_secret": "cs-real",
             "oauth_access_token": "at", "oauth_access_token_secret": "ats-real"}
    settings = with_shops(monkeypatch, [
        shop("eu", store_code="fr", timeout=4, rate_limit=10, max_in_flight=3),
        {"name": "us", "url": "http://us.example.com/magento/", **oauth},
    ])
    settings.require_magento()
    assert settings.shop_names == ["eu", "us"]
    eu, us = settings.shop_configs["eu"], settings.shop_configs["us"]
    assert (eu.store_code, eu.timeout, eu.rate_limit, eu.max_in_flight) == ("fr", 4, 10, 3)
    assert us.url == "http://us.example.com/magento"  # the trailing slash goes
    assert us.token is None
    assert us.oauth_consumer_secret is not None
    shown = repr(settings) + settings.model_dump_json() + repr(settings.shop_configs)
    assert "eu-s3cret" not in shown
    assert "cs-real" not in shown


def test_today_settings_are_the_shop_named_default(monkeypatch: pytest.MonkeyPatch) -> None:
    alone = load_settings(magento_url="http://shop", magento_token="tok-1", magento_timeout=3)
    assert alone.shop_names == ["default"]
    default = alone.shop_configs["default"]
    assert (default.url, default.timeout, default.token) == (
        "http://shop", 3, alone.magento_token)
    both = with_shops(monkeypatch, [shop("eu")], magento_url="http://shop", magento_token="t-1")
    assert both.shop_names == ["default", "eu"]
    # Leases are sized by the slowest shop.
    slow = with_shops(monkeypatch, [shop("eu", timeout=40)], lease_seconds=200)
    assert slow.longest_magento_timeout == 40
    assert "LEASE_SECONDS (120) must be at least" in problem(
        monkeypatch, [shop("eu", timeout=40)])


@pytest.mark.parametrize(("shops", "expected"), [
    ([shop("eu"), shop("eu")], "REFUND_WORKER_SHOPS names eu twice"),
    ([shop("default")], "names default twice ('default' is also the shop "
                        "REFUND_WORKER_MAGENTO_URL configures)"),
    ([shop("eu", url="ftp://eu.example.com")],
     "REFUND_WORKER_SHOPS[0].url: must be an http:// or https:// URL with a host"),
    ([shop("eu", url="https://user:pw@eu.example.com")], "REFUND_WORKER_SHOPS[0].url: must not"),
    ([{"name": "eu", "url": "https://eu.example.com"}],
     "REFUND_WORKER_SHOPS[0]: shop 'eu': no Magento credentials: set token or the four oauth_*"),
    ([shop("eu", token="changeme")], "shop 'eu': token is a placeholder"),
    ([shop("eu", token=None, oauth_consumer_key="ck")],
     "shop 'eu': OAuth 1.0a needs all four credentials; missing oauth_consumer_secret"),
    ([shop("EU")], "REFUND_WORKER_SHOPS[0].name: 'EU' is not a shop name"),
    ([shop("eu", tokn="x")], "REFUND_WORKER_SHOPS[0].tokn: Extra inputs are not permitted"),
    ([shop("eu", max_in_flight=0)], "REFUND_WORKER_SHOPS[0].max_in_flight"),
    ('[{"name": "eu", "name": "us", "url": "https://x.example.com", "token": "t-1"}]',
     "key 'name' appears twice in one object"),
    ('{"eu": {"url": "https://x.example.com"}}', "a JSON list of shops"),
    ("[{", "REFUND_WORKER_SHOPS: not a JSON list of shops"),
])
def test_a_bad_shop_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, shops: Any, expected: str
) -> None:
    message = problem(monkeypatch, shops, magento_url="http://shop", magento_token="tok-1")
    assert expected in message
    assert "s3cret" not in message
    assert "tok-1" not in message


def test_an_api_key_may_be_held_to_some_shops(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = "0" * 64
    keys = json.dumps([{"name": "eu-erp", "sha256": digest, "shops": ["eu"]},
                       {"name": "ops", "sha256": digest, "role": "operator"}])
    monkeypatch.setenv("REFUND_WORKER_API_KEYS", keys)
    settings = with_shops(monkeypatch, [shop("eu"), shop("us")])
    eu_erp, ops = settings.api_keys
    assert settings.shops_for(eu_erp) == ["eu"]
    assert settings.shops_for(ops) == ["eu", "us"]
    monkeypatch.setenv("REFUND_WORKER_API_KEYS", json.dumps(
        [{"name": "eu-erp", "sha256": digest, "shops": ["uk"]}]))
    assert ("REFUND_WORKER_API_KEYS: key 'eu-erp' names shops that are not configured: uk"
            in problem(monkeypatch, [shop("eu")]))
    # An API process without Magento settings takes requests for the one shop, 'default'.
    monkeypatch.delenv("REFUND_WORKER_SHOPS")
    bare = load_settings(api_keys=[ApiKey(name="erp", sha256=digest)])
    assert bare.shop_names == []
    assert bare.intake_shops == ["default"]


def test_no_shop_at_all_is_refused_by_the_worker() -> None:
    expected = r"MAGENTO_URL is not set \(nor REFUND_WORKER_SHOPS"
    with pytest.raises(ConfigurationError, match=expected):
        load_settings().require_magento()
