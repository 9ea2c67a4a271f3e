"""The Magento REST routes the simulator serves, their ACL resources and handlers (§0).

A handler gets the state and the parsed call and returns the JSON payload, or raises
``MagentoError``. Handlers follow Magento's order inside a request: decode the body
(``Decoding error.``), convert the path parameters, convert the body parameters, then call
the service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from . import search, stores
from .errors import MagentoError
from .fields import (
    ADMIN_TOKEN,
    COMMENT_SAVE,
    CREDITMEMO_REFUND,
    CREDITMEMO_SAVE,
    REFUND_INVOICE,
    REFUND_ORDER,
)
from .inputs import convert_params, parse_body, path_int
from .state import SimulatorState

ACL_VIEW_ORDER = "Magento_Sales::actions_view"
ACL_STORE = "Magento_Backend::store"
ACL_INVOICE = "Magento_Sales::sales_invoice"
ACL_ORDER_CREDITMEMO = "Magento_Sales::creditmemo"
ACL_CREDITMEMO = "Magento_Sales::sales_creditmemo"


@dataclass(frozen=True, slots=True)
class Call:
    params: dict[str, str]
    body: bytes
    query_string: str
    host: str = ""

    def query_pairs(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query_string, keep_blank_values=True)


Handler = Callable[[SimulatorState, Call], Any]


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    method: str
    parts: tuple[str, ...]
    resource: str | None
    handler: Handler
    takes_body: bool = False  # the operation has a body parameter in the schema

    @property
    def param_count(self) -> int:
        return sum(part.startswith(":") for part in self.parts)


def _new_id(state: SimulatorState, creditmemo_id: int) -> int | str:
    return str(creditmemo_id) if state.config.id_as_string else creditmemo_id


def order_get(state: SimulatorState, call: Call) -> Any:
    return state.order(path_int(call.params["id"]))


def order_search(state: SimulatorState, call: Call) -> Any:
    return state.search_orders(search.parse(call.query_pairs()))


def order_item_get(state: SimulatorState, call: Call) -> Any:
    return state.order_item(path_int(call.params["id"]))


def order_item_search(state: SimulatorState, call: Call) -> Any:
    return state.search_order_items(search.parse(call.query_pairs()))


def store_websites(state: SimulatorState, call: Call) -> Any:
    return stores.websites()


def store_groups(state: SimulatorState, call: Call) -> Any:
    return stores.groups()


def store_views(state: SimulatorState, call: Call) -> Any:
    return stores.views(state.store_codes)


def store_configs(state: SimulatorState, call: Call) -> Any:
    wanted = [value for key, value in call.query_pairs() if key.startswith("storeCodes")]
    return stores.configs(state.store_codes, call.host, wanted or None)


def invoice_get(state: SimulatorState, call: Call) -> Any:
    return state.invoice(path_int(call.params["id"]))


def invoice_search(state: SimulatorState, call: Call) -> Any:
    return state.search_invoices(search.parse(call.query_pairs()))


def order_refund(state: SimulatorState, call: Call) -> Any:
    data = parse_body(call.body)
    order_id = path_int(call.params["orderId"])
    params = convert_params(data, REFUND_ORDER)
    return _new_id(state, state.refund_order(order_id, params))


def invoice_refund(state: SimulatorState, call: Call) -> Any:
    data = parse_body(call.body)
    invoice_id = path_int(call.params["invoiceId"])
    params = convert_params(data, REFUND_INVOICE)
    return _new_id(state, state.refund_invoice(invoice_id, params))


def creditmemo_refund(state: SimulatorState, call: Call) -> Any:
    params = convert_params(parse_body(call.body), CREDITMEMO_REFUND)
    return state.refund_creditmemo(params["creditmemo"], bool(params.get("offlineRequested")))


def creditmemo_save(state: SimulatorState, call: Call) -> Any:
    params = convert_params(parse_body(call.body), CREDITMEMO_SAVE)
    return state.save_creditmemo(params["entity"])


def creditmemo_get(state: SimulatorState, call: Call) -> Any:
    return state.creditmemo(path_int(call.params["id"]))


def creditmemo_search(state: SimulatorState, call: Call) -> Any:
    return state.search_creditmemos(search.parse(call.query_pairs()))


def creditmemo_cancel(state: SimulatorState, call: Call) -> Any:
    parse_body(call.body)
    path_int(call.params["id"])
    raise MagentoError(400, "You can not cancel Credit Memo")


def creditmemo_emails(state: SimulatorState, call: Call) -> Any:
    parse_body(call.body)
    return state.notify_creditmemo(path_int(call.params["id"]))


def creditmemo_comments_get(state: SimulatorState, call: Call) -> Any:
    return state.creditmemo_comments(path_int(call.params["id"]))


def creditmemo_comment_add(state: SimulatorState, call: Call) -> Any:
    params = convert_params(parse_body(call.body), COMMENT_SAVE)
    return state.add_creditmemo_comment(params["entity"])


def admin_token(state: SimulatorState, call: Call) -> Any:
    params = convert_params(parse_body(call.body), ADMIN_TOKEN)
    return state.auth.issue_admin_token(params["username"], params["password"])


_BODY_ROUTES = frozenset(
    {"invoice_refund", "order_refund", "creditmemo_refund", "creditmemo_save",
     "creditmemo_comment_add", "admin_token"}
)  # fmt: skip


def _route(name: str, method: str, path: str, resource: str | None, handler: Handler) -> Route:
    parts = tuple(path.strip("/").split("/"))
    return Route(name, method, parts, resource, handler, name in _BODY_ROUTES)


ROUTES: tuple[Route, ...] = (
    _route("order_get", "GET", "V1/orders/:id", ACL_VIEW_ORDER, order_get),
    _route("order_search", "GET", "V1/orders", ACL_VIEW_ORDER, order_search),
    _route("order_item_get", "GET", "V1/orders/items/:id", ACL_VIEW_ORDER, order_item_get),
    _route("order_item_search", "GET", "V1/orders/items", ACL_VIEW_ORDER, order_item_search),
    _route("store_websites", "GET", "V1/store/websites", ACL_STORE, store_websites),
    _route("store_groups", "GET", "V1/store/storeGroups", ACL_STORE, store_groups),
    _route("store_views", "GET", "V1/store/storeViews", ACL_STORE, store_views),
    _route("store_configs", "GET", "V1/store/storeConfigs", ACL_STORE, store_configs),
    _route("invoice_get", "GET", "V1/invoices/:id", ACL_INVOICE, invoice_get),
    _route("invoice_search", "GET", "V1/invoices", ACL_INVOICE, invoice_search),
    _route("invoice_refund", "POST", "V1/invoice/:invoiceId/refund", ACL_INVOICE, invoice_refund),
    _route("order_refund", "POST", "V1/order/:orderId/refund", ACL_ORDER_CREDITMEMO, order_refund),
    _route("creditmemo_refund", "POST", "V1/creditmemo/refund", ACL_CREDITMEMO, creditmemo_refund),
    _route("creditmemo_save", "POST", "V1/creditmemo", ACL_CREDITMEMO, creditmemo_save),
    _route("creditmemo_search", "GET", "V1/creditmemos", ACL_CREDITMEMO, creditmemo_search),
    _route("creditmemo_get", "GET", "V1/creditmemo/:id", ACL_CREDITMEMO, creditmemo_get),
    _route("creditmemo_cancel", "PUT", "V1/creditmemo/:id", ACL_CREDITMEMO, creditmemo_cancel),
    _route(
        "creditmemo_emails", "POST", "V1/creditmemo/:id/emails", ACL_CREDITMEMO, creditmemo_emails
    ),
    _route(
        "creditmemo_comments_get",
        "GET",
        "V1/creditmemo/:id/comments",
        ACL_CREDITMEMO,
        creditmemo_comments_get,
    ),
    _route(
        "creditmemo_comment_add",
        "POST",
        "V1/creditmemo/:id/comments",
        ACL_CREDITMEMO,
        creditmemo_comment_add,
    ),
    _route("admin_token", "POST", "V1/integration/admin/token", None, admin_token),
)


class Router:
    """Matches ``/rest[/<store_code>]/V1/...`` paths; literal segments beat parameters.

    Slashes around the route are trimmed, as Magento's REST router trims the path info, so
    ``/V1/orders/12/`` is ``/V1/orders/12``.
    """

    def __init__(self, routes: tuple[Route, ...], store_codes: frozenset[str]) -> None:
        self.store_codes = store_codes
        self._table: dict[tuple[str, int], list[Route]] = {}
        for route in sorted(routes, key=lambda r: r.param_count):
            self._table.setdefault((route.method, len(route.parts)), []).append(route)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        if not path.startswith("/rest/"):
            return None
        rest = path[6:]
        if rest[-1:] == "/" or rest[:1] == "/":
            rest = rest.strip("/")
        segments = rest.split("/")
        if len(segments) > 1 and segments[0] in self.store_codes:
            segments = segments[1:]
        for route in self._table.get((method, len(segments)), ()):
            params: dict[str, str] = {}
            for part, segment in zip(route.parts, segments, strict=True):
                if part[0] == ":":
                    params[part[1:]] = segment
                elif part != segment:
                    break
            else:
                return route, params
        return None
