"""The control and inspection API under ``/_simulator/`` (not Magento; no auth).

=======  ===============================  ================================================
method   path                             what
=======  ===============================  ================================================
GET      /_simulator/health               ``{"status": "ok"}``
POST     /_simulator/orders               create an order: a compact spec (``orderspec``), or
                                          Magento's entity form ``{"order": {...},
                                          "invoices": [...], "creditmemos": [...]}`` (``imports``)
POST     /_simulator/orders:batch         ``{"orders": [spec or import, ...]}`` (or a list)
GET      /_simulator/orders/{id}          the order as ``GET /V1/orders/{id}`` shows it
GET      /_simulator/creditmemos          every credit memo, with order id, items, comments
GET      /_simulator/emails               the outbox
GET      /_simulator/stock                what refunds returned to stock, by product
GET      /_simulator/requests?limit=N     request log: method, path, route, status, duration
GET      /_simulator/bodies?limit=N       bodies of refund/credit memo/comment POSTs received
POST     /_simulator/reset                back to the seed (body ``{"seed": ...}`` optional)
POST     /_simulator/faults               add a fault (``faults``), or ``{"faults": [...]}``
GET      /_simulator/faults               active faults
DELETE   /_simulator/faults[/{id}]        remove all faults, or one
GET      /_simulator/config               switches
POST     /_simulator/config               ``{"emails_enabled": false, "id_as_string": true}``
GET      /_simulator/stats                counts by route and status, in-flight gauge
=======  ===============================  ================================================

Errors are ``{"message": ...}`` with 400 (bad spec, naming the field) or 404.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from .faults import FaultSpecError
from .orderspec import SpecError
from .seeds import SeedError
from .state import SimulatorState

PREFIX = "/_simulator"


class ControlError(Exception):
    """Raised for a bad control request; carries the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError:
        raise ControlError(400, "the body is not valid JSON") from None


def _limit(query_string: str) -> int | None:
    value = dict(parse_qsl(query_string)).get("limit")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ControlError(400, "limit must be an integer") from None


def _batch(data: Any) -> list[Any]:
    specs = data.get("orders") if isinstance(data, dict) else data
    if not isinstance(specs, list):
        raise ControlError(400, 'send {"orders": [spec, ...]} or a list of specs')
    return specs


def _faults(state: SimulatorState, method: str, rest: str, body: bytes) -> tuple[int, Any]:
    if rest == "" and method == "GET":
        return 200, state.faults.list()
    if rest == "" and method == "DELETE":
        state.clear_faults()
        return 200, {"cleared": True}
    if rest == "" and method == "POST":
        data = _json(body)
        if isinstance(data, dict) and "faults" in data:
            return 200, [state.add_fault(spec) for spec in data["faults"]]
        return 200, state.add_fault(data)
    if rest.startswith("/") and method == "DELETE":
        try:
            fault_id = int(rest[1:])
        except ValueError:
            raise ControlError(400, "fault id must be an integer") from None
        if not state.faults.remove(fault_id):
            raise ControlError(404, f"no fault {fault_id}")
        return 200, {"removed": fault_id}
    raise ControlError(404, "Request does not match any route.")


def handle(
    state: SimulatorState, method: str, path: str, query_string: str, body: bytes
) -> tuple[int, Any]:
    """Answer one control request: (status, JSON payload)."""
    rest = path[len(PREFIX) :]
    try:
        if rest.startswith("/faults"):
            return _faults(state, method, rest[len("/faults") :], body)
        key = (method, rest)
        if key == ("GET", "/health"):
            return 200, {"status": "ok"}
        if key == ("POST", "/orders"):
            return 200, state.add_order(_json(body))
        if key == ("POST", "/orders:batch"):
            return 200, {"orders": state.add_orders(_batch(_json(body)))}
        if method == "GET" and rest.startswith("/orders/"):
            try:
                order_id = int(rest[len("/orders/") :])
            except ValueError:
                raise ControlError(400, "order id must be an integer") from None
            if not state.has_order(order_id):
                raise ControlError(404, f"no order {order_id}")
            return 200, state.order(order_id)
        if key == ("GET", "/creditmemos"):
            return 200, state.creditmemos()
        if key == ("GET", "/emails"):
            return 200, state.emails()
        if key == ("GET", "/stock"):
            return 200, state.stock()
        if key == ("GET", "/requests"):
            return 200, state.requests(_limit(query_string))
        if key == ("GET", "/bodies"):
            return 200, state.request_bodies(_limit(query_string))
        if key == ("GET", "/stats"):
            return 200, state.stats()
        if key == ("GET", "/config"):
            return 200, state.config.to_dict()
        if key == ("POST", "/config"):
            data = _json(body)
            if not isinstance(data, dict):
                raise ControlError(400, "config must be a JSON object")
            return 200, state.configure(data)
        if key == ("POST", "/reset"):
            data = _json(body)
            if isinstance(data, dict) and "seed" in data:
                state.reset(data["seed"])
            else:
                state.reset()
            return 200, {"reset": True, "seed": state.seed}
    except (SpecError, FaultSpecError, SeedError) as exc:
        raise ControlError(400, str(exc)) from None
    raise ControlError(404, "Request does not match any route.")
