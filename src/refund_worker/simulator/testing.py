"""Run the simulator on a real socket: in a background thread, or as a subprocess.

``running_simulator`` is for tests (shares ``state`` with the test, so the test can seed,
inspect and inject faults from Python); ``simulator_process`` runs
``python -m refund_worker.simulator`` for benchmarks and end-to-end tests.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from .app import SimulatorApp, create_app
from .state import SimulatorState

LISTENING_PREFIX = "simulator listening on "


@dataclass
class RunningSimulator:
    """A simulator serving in this process. ``url`` has no ``/rest`` suffix."""

    url: str
    port: int
    state: SimulatorState
    app: SimulatorApp
    host: str = "127.0.0.1"

    @property
    def rest_url(self) -> str:
        return f"{self.url}/rest"


def uvicorn_config(app: SimulatorApp, *, log_level: str = "warning") -> uvicorn.Config:
    """Lean settings: no access log, no proxy headers, uvloop/httptools when installed."""
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="off",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,
        backlog=4096,
    )


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit TCP_NODELAY on Linux: without it, uvloop leaves Nagle on and
    # the body (sent after the headers) waits for the client's delayed ACK, about 40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


@contextmanager
def running_simulator(
    state: SimulatorState | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shops: dict[str, SimulatorState] | None = None,
) -> Iterator[RunningSimulator]:
    """Serve the simulator from a background thread on ``host:port`` (0 = any free port);
    ``shops`` serves more installations under their path prefixes (see ``create_app``)."""
    app = create_app(state, shops=shops)
    sock = bind_socket(host, port)
    chosen = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app))
    loop_holder: dict[str, asyncio.AbstractEventLoop] = {}

    async def serve() -> None:
        loop_holder["loop"] = asyncio.get_running_loop()
        await server.serve(sockets=[sock])

    thread = threading.Thread(
        target=lambda: asyncio.run(serve()), name=f"simulator-{chosen}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the simulator did not start")
        time.sleep(0.005)
    display_host = f"[{host}]" if ":" in host else host
    try:
        yield RunningSimulator(f"http://{display_host}:{chosen}", chosen, app.simulator, app, host)
    finally:
        loop = loop_holder.get("loop")
        if loop is not None and not loop.is_closed():
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(app.release_hangs)
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class SimulatorProcess:
    """A simulator running as ``python -m refund_worker.simulator``."""

    url: str
    port: int
    process: subprocess.Popen[str]

    @property
    def rest_url(self) -> str:
        return f"{self.url}/rest"


def _source_root() -> str:
    return str(Path(__file__).resolve().parents[2])


@contextmanager
def simulator_process(
    seed: str | None = "demo",
    port: int = 0,
    extra_args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 20.0,
) -> Iterator[SimulatorProcess]:
    """Start the simulator as a subprocess, wait until it answers, stop it on exit."""
    command = [sys.executable, "-m", "refund_worker.simulator", "--host", host, "--port", str(port)]
    if seed:
        command += ["--seed", seed]
    command += list(extra_args)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_source_root(), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = _read_url(process, startup_timeout)
        threading.Thread(target=_drain, args=(process,), daemon=True).start()
        _wait_healthy(url, startup_timeout)
        yield SimulatorProcess(url, int(url.rsplit(":", 1)[1]), process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def _read_url(process: subprocess.Popen[str], timeout: float) -> str:
    found: list[str] = []

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(LISTENING_PREFIX):
                found.append(line[len(LISTENING_PREFIX) :].strip())
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        raise RuntimeError(f"the simulator process did not start (exit code {process.poll()})")
    return found[0]


def _drain(process: subprocess.Popen[str]) -> None:
    if process.stdout is None:
        return
    with suppress(ValueError, OSError):
        for _ in process.stdout:
            pass


def _wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_simulator/health", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)
