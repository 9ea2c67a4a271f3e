"""The synchronous Magento 2 REST client: one method per Magento operation the worker uses.

It knows nothing of the database or Celery. One instance (and its transport) is meant to be
shared by all threads of a worker process; requests are ``httpx.Request`` objects sent through an
``httpx`` transport, with ``httpx.Auth`` flows. Every failure leaves as an exception from
``refund_worker.errors`` (see :mod:`refund_worker.magento.errors`), and every HTTP call is reported
to ``on_call`` as a :class:`CallRecord`, succeeded or not, and counted in
:mod:`refund_worker.metrics` (operation, folded HTTP status, duration; never the path).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from refund_worker import metrics
from refund_worker.errors import (
    ConfigurationError,
    InvalidRefund,
    MagentoUnavailable,
    RefundWorkerError,
)
from refund_worker.magento.errors import (
    OUTCOME_UNKNOWN_TAIL,
    describe,
    error_for_response,
    error_for_transport,
    is_write,
    snippet,
    transport_error_text,
)

__all__ = ["CallRecord", "MagentoClient"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_STORE_CODE = re.compile(r"[A-Za-z0-9_]+")
_DIGITS = re.compile(r"[0-9]+")
#: Safety net for paging: Magento repeats the last page when asked for one past the end.
_MAX_PAGES = 1000


@dataclass(frozen=True)
class CallRecord:
    """One HTTP call to Magento, for the audit table. Never holds headers, bodies or secrets."""

    operation: str
    method: str
    path: str
    http_status: int | None
    duration_ms: float
    error: str | None
    #: When the call started (UTC): the audit row's time, so a timeline shows it in its place.
    started_at: datetime | None = None


class _UnexpectedBodyError(Exception):
    """Raised inside a response parser when a 2xx body is not what the operation returns."""


def _expect_object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise _UnexpectedBodyError(f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _expect_bool(payload: Any) -> bool:
    if not isinstance(payload, bool):
        raise _UnexpectedBodyError(f"expected a JSON boolean, got {type(payload).__name__}")
    return payload


def _expect_entity_id(payload: Any) -> int:
    """A credit memo id arrives as a JSON int or, from PHP's lastInsertId, a JSON string (§8.1)."""
    if isinstance(payload, int) and not isinstance(payload, bool):
        entity_id = payload
    elif isinstance(payload, str) and _DIGITS.fullmatch(payload.strip()):
        entity_id = int(payload.strip())
    else:
        raise _UnexpectedBodyError(f"expected a credit memo id, got {json.dumps(payload)[:80]}")
    if entity_id <= 0:
        raise _UnexpectedBodyError(f"expected a positive credit memo id, got {entity_id}")
    return entity_id


def _expect_page(payload: Any) -> tuple[list[dict[str, Any]], int | None]:
    result = _expect_object(payload)
    items = result.get("items") or []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise _UnexpectedBodyError("search result 'items' is not a list of objects")
    total_count = result.get("total_count")
    if isinstance(total_count, bool) or not isinstance(total_count, int):
        total_count = None
    return items, total_count


def _path_id(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Magento entity ids are ints, got {type(value).__name__}")
    return value


def magento_datetime(value: datetime) -> str:
    """UTC ``YYYY-MM-DD HH:MM:SS``, the way Magento stores ``created_at``; naive means UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def search_criteria(
    filters: list[tuple[str, str, str]],
    *,
    page_size: int,
    current_page: int,
    sort_field: str = "entity_id",
) -> dict[str, str]:
    """Query parameters for Magento's ``searchCriteria``: one filter group per filter (AND)."""
    params: dict[str, str] = {}
    for group, (field, value, condition) in enumerate(filters):
        key = f"searchCriteria[filter_groups][{group}][filters][0]"
        params[f"{key}[field]"] = field
        params[f"{key}[value]"] = value
        params[f"{key}[condition_type]"] = condition
    params["searchCriteria[sortOrders][0][field]"] = sort_field
    params["searchCriteria[sortOrders][0][direction]"] = "ASC"
    params["searchCriteria[pageSize]"] = str(page_size)
    params["searchCriteria[currentPage]"] = str(current_page)
    return params


class MagentoClient:
    """Synchronous client for the Magento 2 REST routes a refund needs (docs/magento.md §0).

    URLs are ``{base_url}/rest/{store_code}/V1/...``; every method takes ``store_code=`` to use
    another store view for that call.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth,
        store_code: str = "default",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        on_call: Callable[[CallRecord], None] | None = None,
        user_agent: str = "refund-worker/0.1",
        shop: str = "default",
    ) -> None:
        base_url = base_url.strip().rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError("Magento base URL must start with http:// or https://")
        if not timeout > 0:
            raise ConfigurationError("Magento timeout must be a positive number of seconds")
        self._store_code = self._checked_store_code(store_code, ConfigurationError)
        self._on_call = on_call
        self._shop = shop  # the configured name its calls are counted under
        # The base URL as httpx.Client would merge it: a path prefix keeps its trailing slash.
        self._base_url = base_url + "/"
        self._auth = auth
        self._transport = transport if transport is not None else httpx.HTTPTransport()
        self._timeout = httpx.Timeout(timeout).as_dict()
        self._closed = False
        # The headers httpx.Client sent, in its order; no cookies are kept or sent.
        self._headers = httpx.Headers(
            {
                "Accept-Encoding": "gzip, deflate",
                "Connection": "keep-alive",
                "User-Agent": user_agent,
                "Accept": "application/json",
            }
        )

    # ------------------------------------------------------------------ lifecycle

    def recording(self, on_call: Callable[[CallRecord], None]) -> Self:
        """This client, reporting each of its calls to ``on_call`` (an attempt's audit); the
        connections are shared, so it costs one small object."""
        twin = copy.copy(self)
        twin._on_call = on_call
        return twin

    def close(self) -> None:
        """Close the transport's connections; the client cannot send after this."""
        self._closed = True
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ orders and invoices

    def get_order(self, order_id: int, *, store_code: str | None = None) -> dict[str, Any]:
        """GET ``/V1/orders/{order_id}``."""
        return self._call(
            "order_get",
            "GET",
            self._path(store_code, f"orders/{_path_id(order_id)}"),
            parse=_expect_object,
            subject=f"order {order_id}",
        )

    def find_orders(
        self, *, increment_id: str, store_code: str | None = None
    ) -> list[dict[str, Any]]:
        """GET ``/V1/orders`` filtered by ``increment_id`` (eq): the orders carrying that order
        number, as ``{entity_id, increment_id, store_id}`` (``fields=``: not the whole orders).
        Several is possible: Magento's increment ids are unique per store view only."""
        params = search_criteria([("increment_id", increment_id, "eq")], page_size=20,
                                 current_page=1)
        params["fields"] = "items[entity_id,increment_id,store_id],total_count"
        items, _ = self._call(
            "order_search",
            "GET",
            self._path(store_code, "orders"),
            parse=_expect_page,
            subject=f"order {increment_id}",
            params=params,
        )
        return items

    def get_invoice(self, invoice_id: int, *, store_code: str | None = None) -> dict[str, Any]:
        """GET ``/V1/invoices/{invoice_id}``."""
        return self._call(
            "invoice_get",
            "GET",
            self._path(store_code, f"invoices/{_path_id(invoice_id)}"),
            parse=_expect_object,
            subject=f"invoice {invoice_id}",
        )

    def search_invoices(
        self, *, order_id: int, store_code: str | None = None
    ) -> list[dict[str, Any]]:
        """GET ``/V1/invoices`` filtered by ``order_id``; every page."""
        return self._search(
            "invoice_search",
            "invoices",
            [("order_id", str(_path_id(order_id)), "eq")],
            page_size=100,
            subject=f"order {order_id}",
            store_code=store_code,
        )

    # ------------------------------------------------------------------ refunds

    def refund_invoice(
        self, invoice_id: int, body: dict[str, Any], *, store_code: str | None = None
    ) -> int:
        """POST ``/V1/invoice/{invoice_id}/refund``; returns the new credit memo id."""
        return self._call(
            "invoice_refund",
            "POST",
            self._path(store_code, f"invoice/{_path_id(invoice_id)}/refund"),
            parse=_expect_entity_id,
            subject=f"invoice {invoice_id}",
            json_body=body,
        )

    def refund_order(
        self, order_id: int, body: dict[str, Any], *, store_code: str | None = None
    ) -> int:
        """POST ``/V1/order/{order_id}/refund`` (always offline); returns the new credit memo id."""
        return self._call(
            "order_refund",
            "POST",
            self._path(store_code, f"order/{_path_id(order_id)}/refund"),
            parse=_expect_entity_id,
            subject=f"order {order_id}",
            json_body=body,
        )

    def refund_creditmemo(
        self, body: dict[str, Any], *, store_code: str | None = None
    ) -> dict[str, Any]:
        """POST ``/V1/creditmemo/refund``: ``{"creditmemo": {...}, "offlineRequested": ...}``."""
        return self._call(
            "creditmemo_refund",
            "POST",
            self._path(store_code, "creditmemo/refund"),
            parse=_expect_object,
            subject=_order_subject(body.get("creditmemo")),
            json_body=body,
        )

    def save_creditmemo(
        self, body: dict[str, Any], *, store_code: str | None = None
    ) -> dict[str, Any]:
        """POST ``/V1/creditmemo`` with ``{"entity": {...}}``: persistence only, no refund (§4)."""
        return self._call(
            "creditmemo_save",
            "POST",
            self._path(store_code, "creditmemo"),
            parse=_expect_object,
            subject=_order_subject(body.get("entity")),
            json_body=body,
        )

    # ------------------------------------------------------------------ credit memos

    def get_creditmemo(
        self, creditmemo_id: int, *, store_code: str | None = None
    ) -> dict[str, Any]:
        """GET ``/V1/creditmemo/{creditmemo_id}``."""
        return self._call(
            "creditmemo_get",
            "GET",
            self._path(store_code, f"creditmemo/{_path_id(creditmemo_id)}"),
            parse=_expect_object,
            subject=f"credit memo {creditmemo_id}",
        )

    def search_creditmemos(
        self,
        *,
        order_id: int,
        created_from: datetime | None = None,
        page_size: int = 100,
        store_code: str | None = None,
    ) -> list[dict[str, Any]]:
        """GET ``/V1/creditmemos`` by ``order_id`` (and ``created_at >= created_from``); all pages.

        A naive ``created_from`` is taken as UTC. Results are ordered by ``entity_id``.
        """
        filters = [("order_id", str(_path_id(order_id)), "eq")]
        if created_from is not None:
            filters.append(("created_at", magento_datetime(created_from), "gteq"))
        return self._search(
            "creditmemo_search",
            "creditmemos",
            filters,
            page_size=page_size,
            subject=f"order {order_id}",
            store_code=store_code,
        )

    def send_creditmemo_email(self, creditmemo_id: int, *, store_code: str | None = None) -> bool:
        """POST ``/V1/creditmemo/{creditmemo_id}/emails``; True if Magento sent the email.

        Not idempotent: every call sends another email.
        """
        return self._call(
            "creditmemo_emails",
            "POST",
            self._path(store_code, f"creditmemo/{_path_id(creditmemo_id)}/emails"),
            parse=_expect_bool,
            subject=f"credit memo {creditmemo_id}",
        )

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _checked_store_code(store_code: str, error: type[RefundWorkerError]) -> str:
        if not isinstance(store_code, str) or not _STORE_CODE.fullmatch(store_code):
            raise error(f"invalid Magento store code {store_code!r}")
        return store_code

    def _path(self, store_code: str | None, route: str) -> str:
        if store_code is None:
            store = self._store_code
        else:
            store = self._checked_store_code(store_code, InvalidRefund)
        return f"/rest/{store}/V1/{route}"

    def _search(
        self,
        operation: str,
        route: str,
        filters: list[tuple[str, str, str]],
        *,
        page_size: int,
        subject: str,
        store_code: str | None,
    ) -> list[dict[str, Any]]:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        path = self._path(store_code, route)
        found: list[dict[str, Any]] = []
        seen: set[Any] = set()
        for page in range(1, _MAX_PAGES + 1):
            items, total_count = self._call(
                operation,
                "GET",
                path,
                parse=_expect_page,
                subject=subject,
                params=search_criteria(filters, page_size=page_size, current_page=page),
            )
            fresh = 0
            for item in items:
                key = item.get("entity_id")
                if key is not None and key in seen:
                    continue  # Magento answers a page past the end with the last page again
                if key is not None:
                    seen.add(key)
                found.append(item)
                fresh += 1
            if fresh == 0 or len(items) < page_size:
                break
            if total_count is not None and len(found) >= total_count:
                break
        else:
            raise MagentoUnavailable(
                f"{describe(operation, subject)}: more than {_MAX_PAGES} pages of results"
            )
        return found

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        parse: Callable[[Any], T],
        subject: str | None = None,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> T:
        """Send one request, map any failure, parse the 2xx body, and always report the call."""
        status: int | None = None
        error: str | None = None
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        try:
            try:
                response = self._send(method, path, params, json_body)
            except httpx.HTTPError as exc:
                error = transport_error_text(exc)
                raise error_for_transport(
                    exc, method=method, operation=operation, subject=subject
                ) from exc
            status = response.status_code
            if not response.is_success:
                mapped = error_for_response(response, operation=operation, subject=subject)
                error = mapped.magento_message
                raise mapped
            try:
                return parse(json.loads(response.content))
            except (ValueError, _UnexpectedBodyError) as exc:
                detail = (
                    str(exc)
                    if isinstance(exc, _UnexpectedBodyError)
                    else f"not JSON: {snippet(response.text)}"
                )
                error = f"unexpected response body: {detail}"
                outcome_unknown = is_write(method)
                tail = OUTCOME_UNKNOWN_TAIL if outcome_unknown else ""
                raise MagentoUnavailable(
                    f"{describe(operation, subject)}: Magento answered {status} with an "
                    f"{error}{tail}",
                    outcome_unknown=outcome_unknown,
                    http_status=status,
                ) from exc
        except BaseException as exc:
            if error is None:
                error = type(exc).__name__
            raise
        finally:
            duration_ms = (time.perf_counter() - started) * 1000.0
            metrics.magento_call(operation, status, duration_ms / 1000.0, self._shop)
            logger.debug(
                "magento %s %s %s -> %s in %.1f ms",
                operation,
                method,
                path,
                status if status is not None else "no response",
                duration_ms,
            )
            self._report(
                CallRecord(
                    operation=operation,
                    method=method,
                    path=path,
                    http_status=status,
                    duration_ms=duration_ms,
                    error=error,
                    started_at=started_at,
                )
            )

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        json_body: dict[str, Any] | None,
    ) -> httpx.Response:
        """Build the request, run the auth flow and hand it to the transport; body read.

        What ``httpx.Client.request`` does for this client, without what it does not need: no
        base-URL merge by re-parsing, cookie jar, redirects or event hooks. That machinery cost
        more CPU than the transport's whole round trip (``bench/micro.py http``).
        """
        if self._closed:
            raise RuntimeError("cannot send a request: the Magento client is closed")
        request = httpx.Request(
            method,
            self._base_url + path.lstrip("/"),
            params=params,
            headers=self._headers,
            json=json_body,
            extensions={"timeout": self._timeout},
        )
        flow = self._auth.sync_auth_flow(request)
        try:
            request = next(flow)
            while True:
                response = self._transport.handle_request(request)
                response.request = request
                try:
                    response.read()
                except BaseException:
                    response.close()
                    raise
                try:
                    request = flow.send(response)
                except StopIteration:
                    return response
                response.close()  # the auth flow asked for another round (digest-like auths)
        finally:
            flow.close()

    def _report(self, record: CallRecord) -> None:
        """Hand the record to ``on_call``; a failing hook is logged, never raised.

        The hook must not change what the call did: a refund that succeeded stays a success
        (with its credit memo id) even if writing the audit row fails.
        """
        if self._on_call is None:
            return
        try:
            self._on_call(record)
        except Exception:
            logger.exception(
                "on_call hook failed for %s %s %s", record.operation, record.method, record.path
            )


def _order_subject(document: Any) -> str | None:
    if isinstance(document, dict):
        order_id = document.get("order_id")
        if isinstance(order_id, int | str) and not isinstance(order_id, bool):
            return f"order {order_id}"
    return None
