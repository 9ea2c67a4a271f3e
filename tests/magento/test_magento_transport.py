"""LeanTransport on real sockets: per-thread keep-alive, one write per request, and failures that
become the httpx exceptions ``error_for_transport`` classifies (sent or maybe sent)."""

from __future__ import annotations

import contextlib
import gc
import gzip
import http.client
import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from refund_worker.errors import MagentoUnavailable
from refund_worker.magento import BearerAuth, MagentoClient
from refund_worker.magento.transport import LeanTransport
from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import running_simulator
from tests.fakes import record_socket_writes

Serve = Callable[["TinyServer", socket.socket, int], None]


def read_request(sock: socket.socket) -> bytes | None:
    """One whole request (head and Content-Length body), or None if the client left first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


class TinyServer:
    """Accepts on 127.0.0.1 and runs ``serve(server, sock, n)`` for the n-th connection."""

    def __init__(self, serve: Serve, *, tls: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.connections = 0
        self.requests: list[tuple[int, bytes]] = []
        self.ended: list[int] = []  # connections the client closed
        self.stop = threading.Event()
        self._serve = serve
        self._tls = tls
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                index = self.connections
            threading.Thread(target=self._run, args=(sock, index), daemon=True).start()

    def _run(self, sock: socket.socket, index: int) -> None:
        with contextlib.suppress(OSError), sock:
            sock.settimeout(10)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True)
            self._serve(self, sock, index)

    def record(self, index: int, request: bytes) -> None:
        with self._lock:
            self.requests.append((index, request))

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


def respond(sock: socket.socket, body: bytes, extra: bytes = b"") -> None:
    sock.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%b\r\n%b"
        % (len(body), extra, body)
    )


def answer(server: TinyServer, sock: socket.socket, index: int, *, extra: bytes = b"",
           requests: int | None = None, closed: threading.Event | None = None) -> None:
    """Answer ``{"connection": n, "count": k}`` to each request; close after ``requests``."""
    count = 0
    while requests is None or count < requests:
        request = read_request(sock)
        if request is None:
            server.ended.append(index)
            return
        server.record(index, request)
        count += 1
        respond(sock, json.dumps({"connection": index, "count": count}).encode(), extra)
    sock.close()
    if closed is not None:
        closed.set()


@pytest.fixture
def serve() -> Iterator[Callable[..., TinyServer]]:
    servers: list[TinyServer] = []

    def start(handler: Serve = answer, **kwargs: Any) -> TinyServer:
        server = TinyServer(handler, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def transport() -> Iterator[LeanTransport]:
    lean = LeanTransport()
    yield lean
    lean.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------- keep-alive


def test_one_connection_per_thread_across_calls(
    serve: Callable[..., TinyServer], transport: LeanTransport
) -> None:
    server = serve()
    seen: dict[int, set[int]] = {}
    with httpx.Client(base_url=server.url, transport=transport, timeout=5) as client:

        def work(thread: int) -> None:
            seen[thread] = {client.get("/x").json()["connection"] for _ in range(5)}

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        main = {client.get("/x").json()["connection"] for _ in range(3)}
    assert server.connections == 5
    assert all(len(connections) == 1 for connections in seen.values())
    assert len(main) == 1
    assert len(set().union(*seen.values(), main)) == 5


def test_a_connection_the_server_closed_is_replaced_before_anything_is_sent(
    serve: Callable[..., TinyServer], transport: LeanTransport
) -> None:
    closed = threading.Event()
    server = serve(partial(answer, requests=1, closed=closed))
    with httpx.Client(base_url=server.url, transport=transport, timeout=5) as client:
        assert client.get("/first").json() == {"connection": 1, "count": 1}
        assert closed.wait(5)
        time.sleep(0.05)  # the FIN reaches our socket
        response = client.post("/refund", json={"qty": 1})
    assert response.json() == {"connection": 2, "count": 1}
    # The POST went out once, on the new connection: nothing was written to the stale one.
    assert [(index, request.split(b" ", 2)[:2]) for index, request in server.requests] == [
        (1, [b"GET", b"/first"]),
        (2, [b"POST", b"/refund"]),
    ]


def test_connection_close_and_keepalive_expiry_open_new_connections(
    serve: Callable[..., TinyServer],
) -> None:
    closing = serve(partial(answer, extra=b"Connection: close\r\n"))
    with httpx.Client(base_url=closing.url, transport=LeanTransport(), timeout=5) as client:
        assert [client.get("/").json()["connection"] for _ in range(3)] == [1, 2, 3]
    expiring = serve()
    with httpx.Client(
        base_url=expiring.url, transport=LeanTransport(keepalive_expiry=0), timeout=5
    ) as client:
        assert [client.get("/").json()["connection"] for _ in range(3)] == [1, 2, 3]
    kept = serve()
    with httpx.Client(
        base_url=kept.url, transport=LeanTransport(keepalive_expiry=None), timeout=5
    ) as client:
        assert [client.get("/").json()["connection"] for _ in range(3)] == [1, 1, 1]


def test_close_closes_connections_and_a_finished_thread_drops_its_own(
    serve: Callable[..., TinyServer], transport: LeanTransport
) -> None:
    server = serve()
    with httpx.Client(base_url=server.url, transport=transport, timeout=5) as client:
        worker = threading.Thread(target=lambda: client.get("/"))
        worker.start()
        worker.join()
        gc.collect()
        deadline = time.monotonic() + 5
        while server.ended != [1] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.ended == [1]  # the thread ended: its connection was closed
        assert client.get("/").json()["connection"] == 2
        transport.close()
        while server.ended != [1, 2] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.ended == [1, 2]
        assert client.get("/").json()["connection"] == 3  # still usable


# ---------------------------------------------------------------------- bytes on the wire


def test_each_request_leaves_in_one_write(
    serve: Callable[..., TinyServer], transport: LeanTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve()
    writes = record_socket_writes(monkeypatch, server.port)
    body = {"items": [{"order_item_id": 3, "qty": 1}], "comment": {"comment": "[refund-worker:x]"}}
    with MagentoClient(server.url, auth=BearerAuth("t"), transport=transport) as client:
        with pytest.raises(MagentoUnavailable):  # the tiny server's answer is no credit memo id
            client.refund_order(7, body)
        client.get_order(7)
    assert len(writes) == 2
    post, get = writes
    assert post.startswith(b"POST /rest/default/V1/order/7/refund HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t\r\n" in post
    head, _, sent = post.partition(b"\r\n\r\n")
    assert json.loads(sent) == body
    assert f"\r\nContent-Length: {len(sent)}".encode() in head
    assert get.startswith(b"GET /rest/default/V1/orders/7 HTTP/1.1\r\n")
    assert get.endswith(b"\r\n\r\n")
    assert [request for _, request in server.requests] == writes


def test_a_body_of_unknown_length_goes_out_chunked_in_the_same_write(
    serve: Callable[..., TinyServer], transport: LeanTransport
) -> None:
    def echo(server: TinyServer, sock: socket.socket, index: int) -> None:
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            data += sock.recv(65536)
        server.record(index, data)
        respond(sock, b"{}")

    server = serve(echo)
    with httpx.Client(base_url=server.url, transport=transport, timeout=5) as client:
        client.post("/", content=iter([b"ab", b"cd"]))
    request = server.requests[0][1]
    assert b"\r\nTransfer-Encoding: chunked\r\n" in request
    assert request.endswith(b"\r\n\r\n4\r\nabcd\r\n0\r\n\r\n")


def test_header_injection_is_refused_before_connecting(
    serve: Callable[..., TinyServer], transport: LeanTransport
) -> None:
    server = serve()
    with (
        httpx.Client(base_url=server.url, transport=transport, timeout=5) as client,
        pytest.raises(httpx.LocalProtocolError),
    ):
        client.get("/", headers={"X-Note": "a\r\nX-Evil: 1"})
    assert server.connections == 0


def test_chunked_and_gzipped_answers_are_read_whole_and_decoded(
    serve: Callable[..., TinyServer], transport: LeanTransport
) -> None:
    payload = json.dumps({"entity_id": 5, "pad": "x" * 5000}).encode()
    packed = gzip.compress(payload)

    def chunked(server: TinyServer, sock: socket.socket, index: int) -> None:
        while read_request(sock) is not None:
            chunks = b"".join(
                b"%x\r\n%b\r\n" % (len(packed[i : i + 700]), packed[i : i + 700])
                for i in range(0, len(packed), 700)
            )
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")

    server = serve(chunked)
    with httpx.Client(base_url=server.url, transport=transport, timeout=5) as client:
        for _ in range(2):
            response = client.get("/")
            assert response.json()["entity_id"] == 5
            assert response.http_version == "HTTP/1.1"
            assert response.reason_phrase == "OK"
            assert "content-length" not in response.headers
    assert server.connections == 1


def test_interim_answers_are_skipped_and_the_connection_stays_in_step(
    serve: Callable[..., TinyServer], transport: LeanTransport
) -> None:
    def early_hints(server: TinyServer, sock: socket.socket, index: int) -> None:
        count = 0
        while read_request(sock) is not None:
            count += 1
            sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                         b"HTTP/1.1 102 Processing\r\n\r\n"
                         b"HTTP/1.1 100 Continue\r\n\r\n")
            respond(sock, json.dumps({"count": count}).encode())

    server = serve(early_hints)
    with httpx.Client(base_url=server.url, transport=transport, timeout=5) as client:
        answers = [client.get("/") for _ in range(3)]
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"count": n}) for n in (1, 2, 3)]
    assert server.connections == 1


# ---------------------------------------------------------------------- failures


def hang(server: TinyServer, sock: socket.socket, index: int) -> None:
    if read_request(sock) is not None:
        server.record(index, b"")
        server.stop.wait(10)


def test_no_answer_is_a_read_timeout_and_a_post_is_outcome_unknown(
    serve: Callable[..., TinyServer], transport: LeanTransport
) -> None:
    server = serve(hang)
    timeout = httpx.Timeout(5, read=0.2)
    with (
        httpx.Client(base_url=server.url, transport=transport, timeout=timeout) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get("/")
    with (
        MagentoClient(server.url, auth=BearerAuth("t"), timeout=0.2, transport=transport) as mc,
        pytest.raises(MagentoUnavailable) as caught,
    ):
        mc.refund_order(1, {"items": []})
    assert caught.value.outcome_unknown
    assert server.connections == 2  # the timed-out connection was not reused


def test_a_closed_port_is_a_connect_error_and_nothing_was_sent(transport: LeanTransport) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with (
        httpx.Client(base_url=url, transport=transport, timeout=5) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get("/")
    with (
        MagentoClient(url, auth=BearerAuth("t"), transport=transport) as mc,
        pytest.raises(MagentoUnavailable) as caught,
    ):
        mc.refund_order(1, {"items": []})
    assert not caught.value.outcome_unknown


def test_a_full_listen_queue_is_a_connect_timeout(transport: LeanTransport) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers: list[socket.socket] = []
    try:
        for _ in range(10):  # fill the accept queue until a connect hangs
            filler = socket.socket()
            fillers.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect(listener.getsockname())
            except TimeoutError:
                break
        else:
            pytest.skip("this kernel never leaves a connect hanging")
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        timeout = httpx.Timeout(5, connect=0.2)
        with (
            httpx.Client(base_url=url, transport=transport, timeout=timeout) as client,
            pytest.raises(httpx.ConnectTimeout),
        ):
            client.post("/", json={})
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_write_failures_are_write_errors(
    serve: Callable[..., TinyServer], transport: LeanTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve()
    with httpx.Client(base_url=server.url, transport=transport, timeout=5) as client:
        client.get("/")
        for error, expected in [
            (BrokenPipeError(32, "Broken pipe"), httpx.WriteError),
            (TimeoutError("timed out"), httpx.WriteTimeout),
        ]:
            def failing(sock: socket.socket, data: bytes, *args: Any, exc: OSError = error) -> None:
                raise exc

            monkeypatch.setattr(socket.socket, "sendall", failing)
            with pytest.raises(expected):
                client.post("/", json={})
            monkeypatch.undo()
        assert client.get("/").json()["connection"] == 3  # each failed connection was dropped


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"", httpx.RemoteProtocolError),  # closed without an answer
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"entity", httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"ent",
         httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Le", httpx.RemoteProtocolError),  # cut in the headers
        (b"garbage\r\n\r\n", httpx.RemoteProtocolError),
        (None, (httpx.ReadError, httpx.RemoteProtocolError)),  # reset (RST)
    ],
    ids=["no-answer", "mid-body", "mid-chunk", "mid-headers", "garbage", "reset"],
)
def test_a_server_closing_mid_response(
    serve: Callable[..., TinyServer],
    transport: LeanTransport,
    reply: bytes | None,
    expected: type[Exception] | tuple[type[Exception], ...],
) -> None:
    def cut(server: TinyServer, sock: socket.socket, index: int) -> None:
        if index == 2:
            answer(server, sock, index)
            return
        if read_request(sock) is None:
            return
        if reply is None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.sendall(reply)

    server = serve(cut)
    with httpx.Client(base_url=server.url, transport=transport, timeout=5) as client:
        with pytest.raises(expected):
            client.post("/", json={"qty": 1})
        assert client.get("/").json()["connection"] == 2
    with (
        MagentoClient(server.url, auth=BearerAuth("t"), transport=LeanTransport()) as mc,
        pytest.raises(MagentoUnavailable) as caught,
    ):
        mc.refund_order(1, {"items": []})
    assert caught.value.outcome_unknown


# ---------------------------------------------------------------------- https


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl to make a certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_keeps_alive_and_checks_the_certificate(
    serve: Callable[..., TinyServer], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server = serve(tls=server_context)
    trusting = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(
        base_url=server.url, transport=LeanTransport(ssl_context=trusting), timeout=5
    ) as client:
        assert [client.get("/").json()["connection"] for _ in range(3)] == [1, 1, 1]
        assert client.post("/", json={"a": 1}).json() == {"connection": 1, "count": 4}
    with (
        httpx.Client(base_url=server.url, transport=LeanTransport(), timeout=5) as client,
        pytest.raises(httpx.ConnectError),  # self-signed: not trusted by default
    ):
        client.get("/")

    def refuse(server: TinyServer, sock: socket.socket, index: int) -> None:
        sock.recv(65536)
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    plain = serve(refuse)
    with (
        httpx.Client(
            base_url=plain.url.replace("http:", "https:"), transport=LeanTransport(), timeout=5
        ) as client,
        pytest.raises(httpx.ConnectError),  # no TLS there: the handshake fails
    ):
        client.get("/")


# ---------------------------------------------------------------------- the Magento client


def test_32_threads_share_one_client_over_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    connects: list[int] = []
    connect = http.client.HTTPConnection.connect

    def counting(self: http.client.HTTPConnection) -> None:
        connects.append(threading.get_ident())
        connect(self)

    monkeypatch.setattr(http.client.HTTPConnection, "connect", counting)
    state = SimulatorState(tokens={"t": None})
    with running_simulator(state) as sim, MagentoClient(
        sim.url, auth=BearerAuth("t"), timeout=10, transport=LeanTransport()
    ) as client:
        order = state.add_order({"payment_method": "checkmo",
                                 "items": [{"sku": "A", "qty": 40, "price": 5}]})
        item = order["items"][0]["item_id"]
        errors: list[BaseException] = []
        memos: list[int] = []
        barrier = threading.Barrier(32)

        def work() -> None:
            try:
                barrier.wait()
                for _ in range(5):
                    assert client.get_order(order["order_id"])["entity_id"] == order["order_id"]
                memos.append(client.refund_order(order["order_id"], {
                    "items": [{"order_item_id": item, "qty": 1}]}))
                assert client.get_order(order["order_id"])["entity_id"] == order["order_id"]
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len(set(memos)) == 32
    assert len(connects) == 32  # one connection per thread
    assert len(set(connects)) == 32
