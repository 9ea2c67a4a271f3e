"""A real webhook receiver on a socket, for the tests and the fault run.

It records every request it gets (headers, raw body, when), checks nothing, and answers as told:
``ok`` (204), ``status:<code>`` (any status, e.g. 500 or a 302 that must not be followed),
``slow:<seconds>`` (answers 200 after a pause), ``hang`` (never answers within any sane timeout),
``flaky:<share>`` (500 for that share of requests, at random, else 200), or ``drop`` (closes
the connection without answering). ``stop()`` takes it down (connection refused).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "Receiver"]


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int | None  # the status answered (None: hung up or dropped)


@dataclass
class Receiver:
    """The server, its mode and what it received."""

    host: str = "127.0.0.1"
    mode: str = "ok"
    received: list[Received] = field(default_factory=list)
    seed: int = 0
    #: The port (0: any free one, kept across ``stop()`` and ``start()``).
    bind_port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self
        rng = random.Random(self.seed)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                mode = receiver.mode
                status: int | None = 204
                if mode.startswith("status:"):
                    status = int(mode.split(":", 1)[1])
                elif mode.startswith("slow:"):
                    time.sleep(float(mode.split(":", 1)[1]))
                    status = 200
                elif mode == "hang":
                    status = None
                elif mode.startswith("flaky:"):
                    with receiver._lock:
                        status = 500 if rng.random() < float(mode.split(":", 1)[1]) else 200
                elif mode == "drop":
                    status = None
                receiver._record(self.path, dict(self.headers.items()), body, status)
                if status is None:
                    if mode == "hang":
                        time.sleep(30)
                    self.close_connection = True
                    return
                payload = b"received" if status != 204 else b""
                if status >= 400:
                    payload = b"error " * 400  # long: only an excerpt may be stored
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", "http://169.254.169.254/latest/meta-data/")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer((self.host, self.bind_port), Handler)
        self.bind_port = int(self._server.server_address[1])
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _record(self, path: str, headers: dict[str, str], body: bytes, status: int | None) -> None:
        with self._lock:
            self.received.append(Received(path, headers, body, time.time(), status))

    @property
    def port(self) -> int:
        return self.bind_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks"

    def delivered(self) -> list[Received]:
        """The requests it answered with a 2xx."""
        with self._lock:
            return [r for r in self.received if r.answered is not None and r.answered < 300]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
