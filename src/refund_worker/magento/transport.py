"""A lean synchronous httpx transport: one kept-alive connection per thread, whole-request writes.

httpx's own transport goes through httpcore's connection pool, which on every request scans every
pooled connection (``has_expired`` → a readability check per socket) under a lock: with the 32
threads of a worker sharing one client, that scan is most of the CPU an HTTP call costs. Here
each thread keeps its own ``http.client`` connection per (scheme, host, port) in a
``threading.local``, so there is no pool to scan and no lock on the request path; a lock is taken
only to register a new connection and in :meth:`LeanTransport.close`.

**One write per request.** The request line, headers and body are joined and handed to the
kernel in a single ``sendall``: a worker killed while sending never leaves headers without their
body. Magento reads a missing body as "no parameters", and RefundOrder without parameters refunds
the whole order, without our marker; a front end that buffers request bodies (nginx's default)
never passes such a request on, one that does not would.

**Failures** become the httpx exceptions :func:`refund_worker.magento.errors.error_for_transport`
classifies: :class:`httpx.ConnectError` / :class:`httpx.ConnectTimeout` only when nothing was
sent (safe to send again); once a single byte may have left, :class:`httpx.WriteError`,
:class:`httpx.WriteTimeout`, :class:`httpx.ReadTimeout`, :class:`httpx.ReadError` or
:class:`httpx.RemoteProtocolError` (the outcome of a POST is unknown). A kept-alive connection is
checked before it is reused (idle for longer than ``keepalive_expiry``, or readable: closed by
the server, or holding bytes nobody asked for) and replaced by a new one *before* anything is
sent; a request that fails after that is never sent again here.

Not supported (the Magento client needs none of it): proxies, HTTP/2, streaming responses (the
whole body is read before the response is returned), Unix sockets.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
import threading
import time
import weakref
from typing import Any

import httpx

__all__ = ["LeanTransport"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HTTP_VERSIONS = {10: b"HTTP/1.0", 11: b"HTTP/1.1"}


class _Connection:
    """One thread's connection to one origin: an ``http.client`` connection and its idle time."""

    __slots__ = ("__weakref__", "_readable", "http", "idle_since", "sock")

    def __init__(self, connection: http.client.HTTPConnection) -> None:
        self.http = connection
        self.sock: socket.socket | None = None
        self.idle_since = 0.0
        self._readable: Any = None

    def open(self, timeout: float | None, request: httpx.Request) -> socket.socket:
        """Connect (and do the TLS handshake); nothing of the request has been sent yet."""
        self.http.timeout = timeout
        try:
            self.http.connect()
        except BaseException as exc:
            self.close()
            if isinstance(exc, TimeoutError):
                message = str(exc) or "connect timed out"
                raise httpx.ConnectTimeout(message, request=request) from exc
            if isinstance(exc, OSError):  # refused, unreachable, DNS, TLS handshake/certificate
                raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
            raise
        sock = self.http.sock
        assert sock is not None
        self.sock = sock
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLPRI)
            self._readable = poller.poll
        else:  # pragma: no cover - Windows
            self._readable = lambda timeout: select.select([sock], [], [], timeout)[0]
        return sock

    def reusable(self, now: float, expiry: float | None) -> bool:
        """Idle for less than ``expiry`` and not readable: the server has not closed it (or sent
        bytes nobody asked for). One ``poll`` of this one socket, no waiting."""
        readable = self._readable  # None once closed, perhaps by close() in another thread
        if readable is None or (expiry is not None and now - self.idle_since > expiry):
            return False
        try:
            return not readable(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self.sock = None
        self._readable = None
        with contextlib.suppress(OSError):  # never more important than the error at hand
            self.http.close()

    def __del__(self) -> None:
        # A thread that ends drops its connections: close the socket rather than leave it to
        # the garbage collector (and its ResourceWarning). Quietly: this may be at shutdown.
        with contextlib.suppress(Exception):
            self.close()


class _HeaderLines:
    """The response's file while its head is read: notes a line cut short by the end of input."""

    __slots__ = ("cut", "fp")

    def __init__(self, fp: Any) -> None:
        self.fp = fp
        self.cut = False

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self.fp.readline(limit)
        if not line.endswith(b"\n") and (limit < 0 or len(line) < limit):
            self.cut = True
        return line

    def close(self) -> None:
        self.fp.close()


class _Response(http.client.HTTPResponse):
    """``http.client``'s response, but a head cut short by the server is an error.

    ``http.client`` takes the end of input for the end of the headers, so a server dying in
    the middle of them would leave an empty 200 answer; httpx (h11) calls that a protocol error.
    And it only skips "100 Continue": another interim answer would be taken for the answer, and
    the real one for the answer to the next request on the connection.
    """

    def begin(self) -> None:
        this: Any = self  # typeshed calls fp a BufferedReader
        fp = this.fp
        lines = _HeaderLines(fp)
        this.fp = lines
        try:
            super().begin()  # skips "100 Continue" itself
            while 100 < self.status < 200 and not lines.cut:
                if self.status == 101:
                    raise http.client.HTTPException("unexpected 101 Switching Protocols")
                # Another interim answer (102, 103 Early Hints): the real one follows it.
                self.headers = self.msg = None  # type: ignore[assignment]
                super().begin()
        finally:
            if this.fp is lines:
                this.fp = fp
        if lines.cut:
            raise http.client.HTTPException("the server closed the connection in the response head")


class LeanTransport(httpx.BaseTransport):
    """An ``httpx`` transport over ``http.client``: per-thread keep-alive, one write per request.

    ``keepalive_expiry`` (seconds, like httpx's default of 5) retires a connection left idle
    that long before it is reused, well before a server is likely to close it under us;
    ``None`` keeps connections for as long as the server does. ``ssl_context`` defaults to
    httpx's (certifi's certificates, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured).
    """

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, keepalive_expiry: float | None = 5.0
    ) -> None:
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()

    # ------------------------------------------------------------------ httpx.BaseTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        default_port = _DEFAULT_PORTS.get(scheme)
        if default_port is None or not url.host:
            raise httpx.UnsupportedProtocol(f"cannot send a request to {url}", request=request)
        key = (scheme, url.host, url.port or default_port)
        data = _encode(request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}

        try:
            connections: dict[tuple[str, str, int], _Connection] = self._local.connections
        except AttributeError:
            connections = self._local.connections = {}
        connection = connections.get(key)
        if connection is None:
            connection = connections[key] = self._new_connection(*key)
        sock = connection.sock
        if sock is not None and not connection.reusable(time.monotonic(), self._keepalive_expiry):
            connection.close()  # stale: replaced before a single byte of this request went out
            sock = None
        if sock is None:
            sock = connection.open(timeouts.get("connect"), request)

        try:
            _set_timeout(sock, timeouts.get("write"))
            try:
                sock.sendall(data)
            except TimeoutError as exc:
                raise httpx.WriteTimeout(str(exc) or "write timed out", request=request) from exc
            except OSError as exc:
                raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc

            _set_timeout(sock, timeouts.get("read"))
            response = _Response(sock, method=request.method)
            try:
                response.begin()
                body = response.read()
            except TimeoutError as exc:
                raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
            except (http.client.HTTPException, ValueError) as exc:  # closed early, bad response
                raise httpx.RemoteProtocolError(_describe(exc), request=request) from exc
            except OSError as exc:  # reset, TLS error
                raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
            finally:
                response.close()
        except BaseException:
            connection.close()  # its state is unknown: never reuse it
            raise

        if response.will_close:  # "Connection: close", HTTP/1.0, or a body read to EOF
            connection.close()
        else:
            connection.idle_since = time.monotonic()
        return httpx.Response(
            response.status,
            headers=[
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in response.getheaders()
            ],
            # A stream, not content=: httpx would add a Content-Length to a chunked answer.
            # The client reads (and decodes) it as it would a stream from its own transport.
            stream=httpx.ByteStream(body),
            extensions={
                "http_version": _HTTP_VERSIONS.get(response.version, b"HTTP/1.1"),
                "reason_phrase": response.reason.encode("latin-1", "replace"),
            },
            request=request,
        )

    def close(self) -> None:
        """Close every connection this transport opened, in any thread.

        Meant for shutdown: a request still running in another thread then fails. The transport
        stays usable; a later request opens a new connection.
        """
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()

    # ------------------------------------------------------------------ helpers

    def _new_connection(self, scheme: str, host: str, port: int) -> _Connection:
        connection: http.client.HTTPConnection
        if scheme == "https":
            connection = http.client.HTTPSConnection(host, port, context=self._tls_context())
        else:
            connection = http.client.HTTPConnection(host, port)
        wrapped = _Connection(connection)
        with self._lock:
            self._connections.add(wrapped)
        return wrapped

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            return self._ssl_context


def _set_timeout(sock: socket.socket, timeout: float | None) -> None:
    if sock.gettimeout() != timeout:
        sock.settimeout(timeout)


def _describe(exc: Exception) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return f"the server closed the connection mid-body ({exc!r})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _encode(request: httpx.Request) -> bytes:
    """The whole request as it goes on the wire: request line, headers and body."""
    body = request.read()
    headers = request.headers.raw
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    # Every CR or LF must be one of ours, or a header would smuggle in another line.
    lines = len(headers) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
        raise httpx.LocalProtocolError("invalid characters in the request line or headers")
    if "Transfer-Encoding" in request.headers:  # a body of unknown length: httpx asks for chunks
        body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    return head + body
