"""Operations fixtures: a real worker and a real Flower on the machine's Redis, the simulator on a
real socket, an authenticating proxy for a browser, and headless Chromium."""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from refund_worker.simulator import SimulatorState
from tests.conftest import REQUIRE_SERVICES
from tests.e2e.conftest import SIM_TOKEN, Stack, make_stack

FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-Test-pass-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Any, timeout: float, what: str, logs: Any = lambda: "") -> Any:
    """Poll ``check()`` until it returns something truthy; fail with ``what`` and the logs."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"{what} not seen after {timeout}s (last: {last!r})\n{logs()}")


@dataclass
class FlowerStack:
    """A worker and Flower sharing one Redis database with the test."""

    stack: Stack
    url: str
    auth: tuple[str, str] = (FLOWER_USER, FLOWER_PASSWORD)

    def get(self, path: str, *, auth: tuple[str, str] | bool | None = True) -> httpx.Response:
        credentials = self.auth if auth is True else (auth or None)
        return httpx.get(self.url + path, auth=credentials, timeout=10)

    def tasks(self) -> dict[str, dict[str, Any]]:
        response = self.get("/api/tasks")
        response.raise_for_status()
        tasks: dict[str, dict[str, Any]] = response.json()
        return tasks


@pytest.fixture
def flower_stack(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[FlowerStack]:
    """Flower first (its task list is filled by the events it receives), then one worker."""
    state = SimulatorState(tokens={SIM_TOKEN: None})
    stacks = make_stack(sqlite_url, redis_url, tmp_path, state)
    stack = next(stacks)
    try:
        stack.env = {k: v for k, v in stack.env.items() if not k.startswith("FLOWER_")}
        stack.env["REFUND_WORKER_FLOWER_BASIC_AUTH"] = f"{FLOWER_USER}:{FLOWER_PASSWORD}"
        port = free_port()
        stack.start("flower", "--port", str(port), "--address", "127.0.0.1", name="flower")
        flower = FlowerStack(stack, f"http://127.0.0.1:{port}")
        wait_until(
            lambda: flower.get("/healthcheck", auth=None).status_code == 200,
            30,
            "Flower answering",
            stack.logs,
        )
        stack.start_worker(4)
        wait_until(
            lambda: flower.get("/api/workers?refresh=1").json(),
            30,
            "the worker in Flower",
            stack.logs,
        )
        yield flower
    finally:
        stacks.close()  # stops the processes, the simulator, the database


def chromium_binary() -> str:
    """Chromium's path; skipped by hand, a failure in CI (``.ci/run`` installs it)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = "Chromium is not installed (apt-get install -y chromium)"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (REFUND_WORKER_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def chromium_argv(binary: str, profile: Path, url: str, *outputs: str) -> list[str]:
    """Headless Chromium, nothing phoning home, long enough for Flower's table to load."""
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
        "--virtual-time-budget=8000",
        *outputs,
        url,
    ]


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards to Flower, adding the basic-auth header a browser would only send after a prompt
    (Chromium drops credentials written in URLs for the page's own requests)."""

    upstream: tuple[str, int]
    authorization: str
    _HOP = frozenset(
        {
            "connection",
            "keep-alive",
            "transfer-encoding",
            "te",
            "upgrade",
            "proxy-authenticate",
            "proxy-authorization",
            "trailer",
        }
    )

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in self._HOP}
        headers["Authorization"] = self.authorization
        headers["Host"] = f"{self.upstream[0]}:{self.upstream[1]}"
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in self._HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        finally:
            connection.close()

    do_GET = do_POST = _forward  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass


class AuthProxy:
    """``with AuthProxy(flower_url, user, password) as url:`` a local URL that logs in for you."""

    def __init__(self, upstream_url: str, user: str, password: str) -> None:
        host, port = upstream_url.removeprefix("http://").split(":")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        handler = type(
            "Handler",
            (_ProxyHandler,),
            {"upstream": (host, int(port)), "authorization": f"Basic {token}"},
        )
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def artifact(tmp_path: Path, name: str) -> Path:
    """Where to save a file worth looking at: ``$REFUND_WORKER_TEST_ARTIFACTS`` or ``tmp_path``."""
    directory = Path(os.environ.get("REFUND_WORKER_TEST_ARTIFACTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name
