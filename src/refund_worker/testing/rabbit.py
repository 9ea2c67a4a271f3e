"""A private RabbitMQ node for the fault run and the e2e tests: its own node name, ports, data
directory, cookie and (empty) plugin list, so restarting it never disturbs the machine's broker.

    with private_rabbit(workdir) as node:
        url = node.url()      # amqp://guest:guest@127.0.0.1:<port>//
        node.restart(2.0)     # stop, stay down 2 s, start again (quorum queues keep messages)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from refund_worker.testing.ports import free_port

SBIN = Path("/usr/lib/rabbitmq/bin")


def _binary(name: str) -> str | None:
    """The script itself (not Debian's wrapper, which would ``su rabbitmq`` and reset HOME)."""
    direct = SBIN / name
    return str(direct) if direct.exists() else shutil.which(name)


class PrivateRabbit:
    """One RabbitMQ node of our own, run in the foreground as a child process."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / f"rabbit-{os.getpid()}-{secrets.token_hex(3)}"
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"rw-fault-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._prepare()

    @staticmethod
    def available() -> bool:
        return _binary("rabbitmq-server") is not None and _binary("rabbitmqctl") is not None

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _prepare(self) -> None:
        home = self.workdir / "home"
        for sub in ("home", "mnesia", "log"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o600)
        (self.workdir / "plugins").write_text("[].\n")
        (self.workdir / "env.conf").write_text("")
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )

    def env(self) -> dict[str, str]:
        d = self.workdir
        return {
            **os.environ,
            "HOME": str(d / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_binary("rabbitmqctl") or "rabbitmqctl", "-n", self.node, *args],
            env=self.env(), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def start(self, timeout: float = 60) -> None:
        log = (self.workdir / "server.log").open("ab")
        self.process = subprocess.Popen(
            [_binary("rabbitmq-server") or "rabbitmq-server"],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"private rabbitmq-server exited; see {self.workdir}")
            if self._listening() and self.ctl("await_startup", timeout=30).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"private rabbitmq-server did not start; see {self.workdir}")
            time.sleep(0.3)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """A clean stop (``rabbitmqctl stop``); SIGKILL of the group if that hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ctl("stop", timeout=30)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self, down_seconds: float) -> None:
        """Stop, stay down a while, start again on the same port and data directory."""
        self.stop()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def queued(self, queue: str = "refunds") -> int:
        """Messages ready in ``queue`` as the node last counted them (its statistics lag by
        seconds; -1 when the node does not answer)."""
        result = self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages_ready",
                          timeout=20)
        for line in result.stdout.splitlines():
            name, _, count = line.rpartition("\t")
            if name == queue and count.isdigit():
                return int(count)
        return -1 if result.returncode else 0


@contextlib.contextmanager
def private_rabbit(workdir: Path) -> Iterator[PrivateRabbit]:
    node = PrivateRabbit(workdir)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.workdir / "mnesia", ignore_errors=True)
