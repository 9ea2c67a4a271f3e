"""The HTTP layer: a Starlette app whose request path is one lean ASGI handler.

Per request: match the route (404) → read the body → faults before the service (latency,
status, reset, hang) → auth (401) → body parsing (400) → service → commit-then-fail faults →
respond → log a tuple in a bounded deque. Starlette's router and middleware are skipped for
HTTP requests (they cost more than the whole refund); Starlette still serves the lifespan.

``reset`` and ``*_drop`` faults close the TCP connection with no response (an RST, via the
server's transport); ``hang`` answers nothing until the client gives up, ``hang_seconds``
pass, or the app shuts down (:meth:`SimulatorApp.release_hangs`), then closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from typing import cast
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from . import control, partial
from .errors import MagentoError, dumps, internal_error, route_not_found
from .faults import Fault
from .routes import ROUTES, Call, Route, Router
from .state import SimulatorState

log = logging.getLogger("refund_worker.simulator")

_JSON = b"application/json; charset=utf-8"
_HTML = b"text/html"
_ID_KEYS = {
    "order_get": "order_id",
    "order_refund": "order_id",
    "invoice_get": "invoice_id",
    "invoice_refund": "invoice_id",
    "creditmemo_get": "creditmemo_id",
    "creditmemo_cancel": "creditmemo_id",
    "creditmemo_emails": "creditmemo_id",
    "creditmemo_comments_get": "creditmemo_id",
    "creditmemo_comment_add": "creditmemo_id",
}
_STATUS_PAGES = {
    502: b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n",
    503: b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n"
    b"<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
    b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
}


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _transport_of(send: Send) -> asyncio.Transport | None:
    """The connection's transport, when the server is uvicorn (its ``send`` is a bound method).

    Duck-typed: uvloop's transports do not inherit from ``asyncio.Transport``.
    """
    owner = getattr(send, "__self__", None)
    transport = getattr(owner, "transport", None)
    if callable(getattr(transport, "abort", None)) and callable(
        getattr(transport, "get_extra_info", None)
    ):
        return cast(asyncio.Transport, transport)
    return None


class ClientGone(Exception):
    """Raised when the client disconnects before its whole body arrived."""


class SimulatorHandler:
    """The raw ASGI handler serving ``/rest/...`` and ``/_simulator/...``."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.router = Router(ROUTES, state.store_codes)
        self._hangs: set[asyncio.Event] = set()

    def release_hangs(self) -> None:
        """End every hanging request now (call from the event loop's thread)."""
        for event in list(self._hangs):
            event.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        state = self.state
        state.in_flight += 1
        if state.in_flight > state.max_in_flight:
            state.max_in_flight = state.in_flight
        method: str = scope["method"]
        path: str = scope["path"]
        route_name = "unmatched"
        status = 0
        fault_name: str | None = None
        try:
            body = await _read_body(receive)
            if path.startswith(control.PREFIX):
                route_name = "_simulator"
                status = await self._control(scope, body, send)
                return
            match = self.router.match(method, path)
            if match is None:
                status = await _respond(send, 404, dumps(route_not_found().body()))
                return
            route, params = match
            route_name = route.name
            if body and route.takes_body and route.resource is not None:
                state.record_body(method, path, route.name, body)  # not admin_token: a password
            ids = self._fault_ids(route, params, body) if state.faults else {}
            decision = state.faults.before(route.name, ids) if state.faults else None
            if decision is not None and decision.latency_s > 0:
                await asyncio.sleep(decision.latency_s)
            if decision is not None and decision.fault is not None:
                fault_name = decision.fault.kind
                status = await self._inject(decision.fault, receive, send)
                return
            status, payload, headers = self._run(route, params, body, scope)
            if 200 <= status < 300 and state.faults:
                post = state.faults.after_commit(route.name, ids)
                if post is not None:
                    fault_name = post.kind
                    status = await self._inject(post, receive, send)
                    return
            status = await _respond(send, status, payload, headers)
        except ClientGone:
            route_name, status = "client_gone", 499  # nginx's code for it; nothing was run
        finally:
            state.in_flight -= 1
            state.record_request(
                method, path, route_name, status, time.perf_counter() - start, fault_name
            )

    def _run(
        self, route: Route, params: dict[str, str], body: bytes, scope: Scope
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]] | None]:
        """Auth, parsing and the service, synchronously: nothing else runs meanwhile."""
        query_string = scope["query_string"].decode("latin-1")
        try:
            host = ""
            if route.resource is not None:
                authorization = None
                for name, value in scope["headers"]:
                    if name == b"authorization":
                        authorization = value.decode("latin-1")
                    elif name == b"host":
                        host = value.decode("latin-1")
                url = ""
                if authorization and authorization[:6].lower() == "oauth ":
                    raw_path = scope.get("raw_path") or scope["path"].encode()
                    url = f"{scope['scheme']}://{host}{raw_path.decode('latin-1')}"
                self.state.auth.check(
                    route.resource,
                    authorization,
                    method=scope["method"],
                    url=url,
                    query_string=query_string,
                )
            payload = route.handler(self.state, Call(params, body, query_string, host))
            if "fields=" in query_string:
                fields = _fields_param(query_string)
                if fields:
                    payload = partial.filter_response(payload, fields)
            return 200, dumps(payload), None
        except MagentoError as exc:
            headers = [(k.encode(), v.encode()) for k, v in exc.headers.items()] or None
            return exc.status, dumps(exc.body()), headers
        except Exception:
            log.exception("simulator: unexpected error in %s", route.name)
            return 500, dumps(internal_error().body()), None

    def _fault_ids(
        self, route: Route, params: dict[str, str], body: bytes
    ) -> dict[str, int | None]:
        """The ids a fault may be restricted to: the path parameter, and its order."""
        ids: dict[str, int | None] = {}
        key = _ID_KEYS.get(route.name)
        if key is not None:
            ids[key] = _int_or_none(next(iter(params.values()), None))
        state = self.state
        if key == "invoice_id" and ids[key] is not None:
            ids["order_id"] = state.order_id_of_invoice(ids[key] or 0)
        elif key == "creditmemo_id" and ids[key] is not None:
            ids["order_id"] = state.order_id_of_creditmemo(ids[key] or 0)
        elif route.name in ("creditmemo_refund", "creditmemo_save") and state.faults.uses_match(
            route.name, "order_id"
        ):
            ids["order_id"] = _order_id_in(body)
        return ids

    async def _inject(self, fault: Fault, receive: Receive, send: Send) -> int:
        """Act on a fault; returns the status logged (0 when no response was sent)."""
        kind = fault.kind
        if kind == "status":
            if fault.status == 500:
                return await _respond(send, 500, dumps(internal_error().body()))
            if fault.status == 429:
                headers = [(b"retry-after", str(fault.retry_after).encode())]
                return await _respond(send, 429, dumps({"message": "Too Many Requests"}), headers)
            return await _respond(send, fault.status, _STATUS_PAGES[fault.status], None, _HTML)
        if kind == "commit_then_500":
            return await _respond(send, 500, dumps(internal_error().body()))
        if kind in ("reset", "commit_then_drop"):
            await _drop(send, receive, reset=True)
            return 0
        await self._hang(fault.hang_seconds, receive)
        await _drop(send, receive, reset=False)
        return 0

    async def _hang(self, seconds: float, receive: Receive) -> None:
        released = asyncio.Event()
        self._hangs.add(released)
        waiters = {
            asyncio.ensure_future(_wait_disconnect(receive)),
            asyncio.ensure_future(released.wait()),
        }
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._hangs.discard(released)

    async def _control(self, scope: Scope, body: bytes, send: Send) -> int:
        query_string = scope["query_string"].decode("latin-1")
        try:
            status, payload = control.handle(
                self.state, scope["method"], scope["path"], query_string, body
            )
        except control.ControlError as exc:
            status, payload = exc.status, {"message": exc.message}
        return await _respond(send, status, dumps(payload))


def _fields_param(query_string: str) -> str:
    """The last ``fields`` query parameter (PHP's ``$_GET`` keeps the last one)."""
    value = ""
    for key, found in parse_qsl(query_string, keep_blank_values=True):
        if key == "fields":
            value = found
    return value


def _order_id_in(body: bytes) -> int | None:
    try:
        data = json.loads(body)
        document = data.get("creditmemo") or data.get("entity") or {}
        return int(document["order_id"])
    except (ValueError, TypeError, AttributeError, KeyError):
        return None


async def _read_body(receive: Receive) -> bytes:
    """The whole request body; ``ClientGone`` if the client left before sending all of it.

    Like nginx in front of a real Magento, a request whose body never fully arrived is never
    handed to the application: running it with an empty body would refund the whole order.
    """
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = _JSON,
) -> int:
    raw_headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        raw_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
    return status


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _drop(send: Send, receive: Receive, *, reset: bool) -> None:
    """Close the connection without a response: RST when ``reset``, else FIN."""
    transport = _transport_of(send)
    if transport is None:
        raise ConnectionAbortedError("fault: connection dropped")
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let the server notice the disconnect, so it does not try to answer for us.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_wait_disconnect(receive), timeout=1.0)


class SimulatorApp(Starlette):
    """The simulator as a Starlette app; ``simulator`` is the live :class:`SimulatorState`."""

    def __init__(self, state: SimulatorState) -> None:
        self.handler = SimulatorHandler(state)
        super().__init__(routes=[Mount("/", app=self.handler)])
        self.simulator = state
        #: Other shops by path prefix (``"eu"`` serves ``/eu/rest/...``).
        self.shops: dict[str, SimulatorHandler] = {}

    def add_shop(self, name: str, state: SimulatorState) -> None:
        """Serve another shop's ``state`` under ``/<name>/``."""
        if not name.isidentifier() or name in ("rest", "_simulator"):
            raise ValueError(f"a shop's name is a word such as 'eu', not {name!r}")
        self.shops[name] = SimulatorHandler(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler, scope = self._shop_of(scope)
            await handler(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def _shop_of(self, scope: Scope) -> tuple[SimulatorHandler, Scope]:
        """The handler of the shop the path names, and the scope without its prefix."""
        if self.shops:
            first, _, rest = scope["path"].lstrip("/").partition("/")
            handler = self.shops.get(first)
            if handler is not None:
                prefix = f"/{first}"
                raw = scope.get("raw_path")
                inner = dict(scope, path="/" + rest, root_path=scope.get("root_path", "") + prefix)
                if raw is not None:
                    inner["raw_path"] = raw[len(prefix) :] or b"/"
                return handler, inner
        return self.handler, scope

    def release_hangs(self) -> None:
        for handler in (self.handler, *self.shops.values()):
            handler.release_hangs()


def create_app(
    state: SimulatorState | None = None, *, shops: dict[str, SimulatorState] | None = None
) -> SimulatorApp:
    """The Magento simulator as an ASGI (Starlette) app over ``state`` (a new empty one if None).

    ``shops``: more Magento installations served by the same process, each under its own path
    prefix with its own state (``/eu/rest/V1/...``, ``/eu/_simulator/...``): point a shop's
    base URL at ``http://host:port/eu``. The root (``/rest/...``) is ``state``.
    """
    app = SimulatorApp(state if state is not None else SimulatorState())
    for name, shop_state in (shops or {}).items():
        app.add_shop(name, shop_state)
    return app
