"""Test doubles shared by several test folders."""

from __future__ import annotations

import threading
from collections.abc import Sequence


class RecordingPublisher:
    """Records what would be published; ``failing = True`` fails like a broker that is down."""

    def __init__(self) -> None:
        self.refunds: list[str] = []
        self.notifications: list[str] = []
        self.failing = False
        self._lock = threading.Lock()

    def publish_refunds(self, refund_ids: Sequence[str]) -> None:
        self._publish(self.refunds, refund_ids)

    def publish_notifications(self, refund_ids: Sequence[str]) -> None:
        self._publish(self.notifications, refund_ids)

    def _publish(self, target: list[str], refund_ids: Sequence[str]) -> None:
        if self.failing and refund_ids:
            raise ConnectionRefusedError("redis://:hunter2@broker:6379/0 refused")
        with self._lock:
            target.extend(refund_ids)
