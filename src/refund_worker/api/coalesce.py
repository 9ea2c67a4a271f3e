"""Group commit for single refund requests: concurrent requests share one ``enqueue_refunds`` call.

One ``enqueue_refund`` costs two transactions and a broker round trip, almost all of it fixed
overhead; under load that caps a process at a few hundred requests a second. Here each handler
hands its validated request to a queue and awaits a future; flusher threads take whatever has
queued up (at least one, at most ``max_group``) and pass it to ``intake.enqueue_refunds`` at once,
per tenant and key holder. Nothing waits for company: an idle server flushes a lone request
at once, and groups grow only while a flush is already running. A request whose client went away
before its group was taken (its future cancelled) is dropped unstored.

Each request gets exactly what ``enqueue_refund`` would have answered: its receipt, or its
conflict. A failure of the shared call (database or broker unavailable) is every member's failure,
as it would have been for each on its own.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from refund_worker import intake
from refund_worker.db import Database
from refund_worker.intake import IntakeRejection, Publisher
from refund_worker.schemas import DEFAULT_SHOP, RefundReceipt, RefundRequest

log = logging.getLogger(__name__)

Outcome = RefundReceipt | IntakeRejection


@dataclass(frozen=True)
class _Pending:
    request: RefundRequest
    holder: tuple[str, str | None]  # (tenant, created_by)
    outcome: Future[Outcome]


class IntakeCoalescer:
    """Accepts single requests from many threads and hands them to intake in groups."""

    def __init__(
        self,
        database: Database,
        publisher: Publisher,
        *,
        flushers: int = 2,
        max_group: int = intake.BATCH_SIZE,
        shops: Sequence[str] = (DEFAULT_SHOP,),
    ) -> None:
        if flushers < 1 or max_group < 1:
            raise ValueError("flushers and max_group must be at least 1")
        self._database = database
        self._publisher = publisher
        self._shops = tuple(shops)
        self._flushers = flushers
        self._max_group = max_group
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(
        self, request: RefundRequest, *, tenant: str, created_by: str | None
    ) -> Future[Outcome]:
        """A future of what ``enqueue_refunds([request], tenant=..., created_by=...)`` answers
        (or raises)."""
        self._start()
        pending = _Pending(request, (tenant, created_by), Future())
        self._queue.put(pending)
        return pending.outcome

    def close(self) -> None:
        """Finish what is queued, then stop the flusher threads."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()

    def _start(self) -> None:
        if self._threads:
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("the intake coalescer is closed")
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._run, name=f"intake-flusher-{n}", daemon=True)
                    for n in range(self._flushers)
                ]
                for thread in self._threads:
                    thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            stopping = False
            while len(group) < self._max_group:
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    break
                if pending is None:
                    stopping = True
                    break
                group.append(pending)
            self._flush(group)
            if stopping:
                return

    def _flush(self, group: list[_Pending]) -> None:
        by_holder: dict[tuple[str, str | None], list[_Pending]] = defaultdict(list)
        for pending in group:
            if pending.outcome.set_running_or_notify_cancel():  # False: cancelled, dropped
                by_holder[pending.holder].append(pending)
        for (tenant, created_by), members in by_holder.items():
            try:
                outcomes = intake.enqueue_refunds(
                    [member.request for member in members],
                    database=self._database,
                    publisher=self._publisher,
                    tenant=tenant,
                    created_by=created_by,
                    shops=self._shops,
                )
            except BaseException as exc:  # every member's failure; the thread goes on
                for member in members:
                    member.outcome.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for member, outcome in zip(members, outcomes, strict=True):
                member.outcome.set_result(outcome)
