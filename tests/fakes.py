"""Test doubles shared by several test folders."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from typing import Any

import pytest


class RecordingPublisher:
    """Records what would be published; ``failing = True`` fails like a broker that is down."""

    def __init__(self) -> None:
        self.refunds: list[str] = []
        self.notifications: list[str] = []
        self.webhooks: list[int] = []
        self.failing = False
        self._lock = threading.Lock()

    def publish_refunds(self, refund_ids: Sequence[str]) -> None:
        self._publish(self.refunds, refund_ids)

    def publish_notifications(self, refund_ids: Sequence[str]) -> None:
        self._publish(self.notifications, refund_ids)

    def publish_webhooks(self, delivery_ids: Sequence[int]) -> None:
        self._publish(self.webhooks, delivery_ids)  # type: ignore[arg-type]

    def _publish(self, target: list[str], refund_ids: Sequence[str]) -> None:
        if self.failing and refund_ids:
            raise ConnectionRefusedError("redis://:hunter2@broker:6379/0 refused")
        with self._lock:
            target.extend(refund_ids)


def record_socket_writes(monkeypatch: pytest.MonkeyPatch, port: int) -> list[bytes]:
    """What is written to sockets connected to ``port``: each ``sendall`` as it was handed over,
    each ``send`` prefixed ``send:`` (a request in one write is one ``sendall``, no ``send``)."""
    writes: list[bytes] = []
    sendall, send = socket.socket.sendall, socket.socket.send

    def ours(sock: socket.socket) -> bool:
        try:
            peer = sock.getpeername()
        except OSError:
            return False
        return isinstance(peer, tuple) and peer[1] == port

    def recording_sendall(sock: socket.socket, data: bytes, *args: Any) -> None:
        if ours(sock):
            writes.append(bytes(data))
        sendall(sock, data, *args)

    def recording_send(sock: socket.socket, data: bytes, *args: Any) -> int:
        if ours(sock):
            writes.append(b"send:" + bytes(data))
        return send(sock, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", recording_sendall)
    monkeypatch.setattr(socket.socket, "send", recording_send)
    return writes
