"""The store structure ``GET /V1/store/...`` describes (``app/code/Magento/Store/etc/webapi.xml``).

One website (``base``), one store group, the ``default`` store view and one more store view per
extra store code, plus Magento's admin website, group and store (id 0). Shapes follow
``store-data-website-interface``, ``store-data-group-interface``, ``store-data-store-interface``
and ``store-data-store-config-interface``. Clients such as my-magento call
``GET /V1/store/websites`` to check a token before anything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ADMIN_WEBSITE = {"id": 0, "code": "admin", "name": "Admin", "default_group_id": 0}
MAIN_WEBSITE = {"id": 1, "code": "base", "name": "Main Website", "default_group_id": 1}
ADMIN_GROUP = {
    "id": 0,
    "website_id": 0,
    "root_category_id": 0,
    "default_store_id": 0,
    "name": "Default",
    "code": "default",
}
MAIN_GROUP = {
    "id": 1,
    "website_id": 1,
    "root_category_id": 2,
    "default_store_id": 1,
    "name": "Main Website Store",
    "code": "main_website_store",
}
_NOT_VIEWS = frozenset({"default", "all", "admin"})


def websites() -> list[dict[str, Any]]:
    return [dict(ADMIN_WEBSITE), dict(MAIN_WEBSITE)]


def groups() -> list[dict[str, Any]]:
    return [dict(ADMIN_GROUP), dict(MAIN_GROUP)]


def views(store_codes: Iterable[str]) -> list[dict[str, Any]]:
    """Admin (0), ``default`` (1), then the extra store codes in name order."""
    extra = sorted(set(store_codes) - _NOT_VIEWS)
    out = [
        {"id": 0, "code": "admin", "name": "Admin", "website_id": 0, "store_group_id": 0},
        {"id": 1, "code": "default", "name": "Default Store View", "website_id": 1},
    ]
    out[0]["is_active"] = 1
    out[1].update({"store_group_id": 1, "is_active": 1})
    for offset, code in enumerate(extra):
        out.append(
            {
                "id": 2 + offset,
                "code": code,
                "name": f"{code} Store View",
                "website_id": 1,
                "store_group_id": 1,
                "is_active": 1,
            }
        )
    return out


def configs(
    store_codes: Iterable[str], host: str, wanted: list[str] | None = None
) -> list[dict[str, Any]]:
    """StoreConfigManager::getStoreConfigs: every store view but admin, or those asked for."""
    base = f"http://{host or 'localhost'}/"
    out = []
    for view in views(store_codes)[1:]:
        if wanted and view["code"] not in wanted:
            continue
        out.append(
            {
                "id": view["id"],
                "code": view["code"],
                "website_id": view["website_id"],
                "locale": "en_US",
                "base_currency_code": "USD",
                "default_display_currency_code": "USD",
                "timezone": "UTC",
                "weight_unit": "lbs",
                "base_url": base,
                "base_link_url": base,
                "base_static_url": f"{base}static/version1/",
                "base_media_url": f"{base}media/",
                "secure_base_url": base,
                "secure_base_link_url": base,
                "secure_base_static_url": f"{base}static/version1/",
                "secure_base_media_url": f"{base}media/",
            }
        )
    return out
