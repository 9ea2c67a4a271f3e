"""Helpers for the console tests: a browser-like httpx client that logs in and posts forms."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import update

from refund_worker.models import MagentoCall, Refund, RefundEvent
from tests.api.support import Api, refund

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the (first) form on a page."""
    found = _CSRF.search(html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


@dataclass
class Console:
    """A browser on the console: keeps its cookies, follows nothing by itself."""

    client: httpx.Client

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
        return self.client.post(path, data=data, **kwargs)

    def login(self, key: str, next_page: str | None = None) -> httpx.Response:
        form_page = self.get("/console/login", params={"next": next_page} if next_page else None)
        assert form_page.status_code == 200, form_page.text
        data = {"csrf": csrf_of(form_page.text), "key": key}
        if next_page is not None:
            data["next"] = next_page
        return self.post("/console/login", data)

    def csrf(self, path: str = "/console/refunds") -> str:
        page = self.get(path)
        assert page.status_code == 200, page.text
        return csrf_of(page.text)

    def replay(
        self, refund_id: str, reason: str = "fixed in Magento", what: str = "refund",
        csrf: str | None = None,
    ) -> httpx.Response:
        token = self.csrf(f"/console/refunds/{refund_id}") if csrf is None else csrf
        return self.post(
            f"/console/refunds/{refund_id}/replay",
            {"csrf": token, "reason": reason, "what": what},
        )


def console(api: Api, **kwargs: Any) -> Console:
    """A new browser (no cookies) on ``api``'s console."""
    client = httpx.Client(base_url=api.url, timeout=30, follow_redirects=False, **kwargs)
    api.clients.append(client)
    return Console(client)


def logged_in(api: Api) -> Console:
    """A browser logged in with the operator key (``alice``)."""
    browser = console(api)
    response = browser.login(api.keys.operator)
    assert response.status_code == 303, response.text
    return browser


def add_refund(
    api: Api, key: str, *, producer: httpx.Client | None = None, order_id: int = 42,
    created_at: datetime | None = None, request: dict[str, Any] | None = None, **state: Any,
) -> str:
    """A refund accepted through the API (as ``erp`` unless told), then set to ``state``."""
    client = producer or api.producer
    response = client.post("/v1/refunds", json=refund(key, order_id=order_id, **(request or {})))
    assert response.status_code == 202, response.text
    refund_id: str = response.json()["refund_id"]
    values = dict(state)
    if created_at is not None:
        values["created_at"] = created_at
    if values:
        with api.database.session_scope() as session:
            session.execute(update(Refund).where(Refund.id == refund_id).values(**values))
    return refund_id


def add_call(api: Api, refund_id: str, **fields: Any) -> None:
    values: dict[str, Any] = {
        "attempt": 1, "operation": "order_get", "method": "GET", "path": "/V1/orders/42",
        "http_status": 200, "duration_ms": 12.0, "error": None, **fields,
    }
    with api.database.session_scope() as session:
        session.add(MagentoCall(refund_id=refund_id, **values))


def add_event(api: Api, refund_id: str, kind: str, detail: str) -> None:
    with api.database.session_scope() as session:
        session.add(RefundEvent(refund_id=refund_id, kind=kind, detail=detail))
