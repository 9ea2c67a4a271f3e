"""The fault engine: which injected fault, if any, a request gets. Pure and deterministic.

A fault spec (a dict, as POSTed to ``/_simulator/faults``)::

    {"route": "order_refund",          # a route name, or "*" for every Magento route
     "kind": "status",                 # latency | status | reset | hang |
                                       # commit_then_500 | commit_then_drop | commit_then_hang
     "status": 503,                    # status: 500, 502, 503 or 429
     "retry_after": 2,                 # 429 only: Retry-After seconds (default 1)
     "ms": 200,                        # latency: fixed delay, or
     "distribution": "uniform", "min_ms": 50, "max_ms": 150,   # or
     "distribution": "exponential", "mean_ms": 100,
     "hang_seconds": 30,               # hang / commit_then_hang (default 30)
     "order_id": 7,                    # optional: only requests about this order
     "invoice_id": 3, "creditmemo_id": 9,   # optional: match that path parameter
     "probability": 0.5,               # optional, 0..1 (default 1)
     "count": 2,                       # optional: the next N matching requests, then expire
     "seed": 42}                       # optional: this fault's own RNG seed

Latency faults add up and combine with any other fault. Of the other kinds, the first matching
fault (in the order they were added) wins. Commit-then-fail kinds are picked only after the
service has succeeded (:meth:`FaultEngine.after_commit`), so their ``count`` is spent only on
requests that did commit. The engine does no I/O and never sleeps: the HTTP layer acts on
its decisions.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ROUTES = frozenset(
    {
        "invoice_refund",
        "order_refund",
        "creditmemo_refund",
        "creditmemo_save",
        "creditmemo_get",
        "creditmemo_search",
        "creditmemo_emails",
        "creditmemo_cancel",
        "creditmemo_comments_get",
        "creditmemo_comment_add",
        "order_get",
        "invoice_get",
        "invoice_search",
        "admin_token",
        "*",
    }
)
PRE_KINDS = frozenset({"status", "reset", "hang"})
POST_KINDS = frozenset({"commit_then_500", "commit_then_drop", "commit_then_hang"})
KINDS = PRE_KINDS | POST_KINDS | {"latency"}
STATUSES = frozenset({429, 500, 502, 503})
MATCH_KEYS = ("order_id", "invoice_id", "creditmemo_id")
DISTRIBUTIONS = frozenset({"fixed", "uniform", "exponential"})


class FaultSpecError(ValueError):
    """Raised when a fault spec is malformed; the message names the field."""


@dataclass(slots=True)
class Fault:
    fault_id: int
    route: str
    kind: str
    probability: float = 1.0
    remaining: int | None = None
    match: dict[str, int] = field(default_factory=dict)
    status: int = 500
    retry_after: int = 1
    distribution: str = "fixed"
    ms: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    hang_seconds: float = 30.0
    rng: random.Random | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.fault_id, "route": self.route, "kind": self.kind}
        out.update(self.match)
        out["probability"] = self.probability
        out["count"] = self.remaining
        if self.kind == "status":
            out["status"] = self.status
            if self.status == 429:
                out["retry_after"] = self.retry_after
        if self.kind == "latency":
            out["distribution"] = self.distribution
            out.update(
                {
                    "fixed": {"ms": self.ms},
                    "uniform": {"min_ms": self.min_ms, "max_ms": self.max_ms},
                }.get(self.distribution, {"mean_ms": self.mean_ms})
            )
        if self.kind in ("hang", "commit_then_hang"):
            out["hang_seconds"] = self.hang_seconds
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do before running the service: wait ``latency_s``, then maybe ``fault``."""

    latency_s: float = 0.0
    fault: Fault | None = None


NO_FAULT = Decision()


def _number(spec: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FaultSpecError(f"{key!r} must be a number")
    if not low <= value <= high:
        raise FaultSpecError(f"{key!r} must be between {low:g} and {high:g}")
    return float(value)


def _integer(spec: Mapping[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultSpecError(f"{key!r} must be an integer")
    return value


def parse_spec(spec: Mapping[str, Any], fault_id: int, default_rng: random.Random) -> Fault:
    """Validate a fault spec; raises :class:`FaultSpecError` naming the bad field."""
    if not isinstance(spec, Mapping):
        raise FaultSpecError("a fault spec must be a JSON object")
    route = spec.get("route", "*")
    if route not in ROUTES:
        raise FaultSpecError(f"'route' must be one of {sorted(ROUTES)}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise FaultSpecError(f"'kind' must be one of {sorted(KINDS)}")
    fault = Fault(fault_id=fault_id, route=str(route), kind=str(kind))
    fault.probability = _number(spec, "probability", 1.0, 0.0, 1.0)
    count = _integer(spec, "count")
    if count is not None and count < 1:
        raise FaultSpecError("'count' must be at least 1")
    fault.remaining = count
    for key in MATCH_KEYS:
        value = _integer(spec, key)
        if value is not None:
            fault.match[key] = value
    if kind == "status":
        status = _integer(spec, "status")
        if status not in STATUSES:
            raise FaultSpecError(f"'status' must be one of {sorted(STATUSES)}")
        fault.status = status
        fault.retry_after = int(_number(spec, "retry_after", 1, 0, 86400))
    if kind == "latency":
        distribution = spec.get("distribution", "fixed")
        if distribution not in DISTRIBUTIONS:
            raise FaultSpecError(f"'distribution' must be one of {sorted(DISTRIBUTIONS)}")
        fault.distribution = str(distribution)
        if distribution == "fixed":
            fault.ms = _number(spec, "ms", 0, 0, 3_600_000)
        elif distribution == "uniform":
            fault.min_ms = _number(spec, "min_ms", 0, 0, 3_600_000)
            fault.max_ms = _number(spec, "max_ms", fault.min_ms, fault.min_ms, 3_600_000)
        else:
            fault.mean_ms = _number(spec, "mean_ms", 0, 0, 3_600_000)
    if kind in ("hang", "commit_then_hang"):
        fault.hang_seconds = _number(spec, "hang_seconds", 30, 0, 86400)
    seed = spec.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise FaultSpecError("'seed' must be an integer")
    fault.rng = random.Random(seed) if seed is not None else default_rng
    return fault


class FaultEngine:
    """Holds the active faults and picks the ones a request gets. Thread-safe."""

    def __init__(self, seed: int | None = None) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self._faults: list[Fault] = []
        self._next_id = 1
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._faults)

    def add(self, spec: Mapping[str, Any]) -> Fault:
        with self._lock:
            fault = parse_spec(spec, self._next_id, self._rng)
            self._next_id += 1
            self._faults.append(fault)
            return fault

    def remove(self, fault_id: int) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.fault_id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        with self._lock:
            self._faults = []
            self._rng = random.Random(self._seed)

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.to_dict() for fault in self._faults]

    def uses_match(self, route: str, key: str) -> bool:
        """Whether any fault for ``route`` is restricted by ``key`` (worth looking the id up)."""
        return any(f.route in ("*", route) and key in f.match for f in self._faults)

    def _applies(self, fault: Fault, route: str, ids: Mapping[str, int | None]) -> bool:
        if fault.route not in ("*", route):
            return False
        for key, wanted in fault.match.items():
            if ids.get(key) != wanted:
                return False
        if fault.probability < 1.0:
            rng = fault.rng or self._rng
            if rng.random() >= fault.probability:
                return False
        return True

    def _spend(self, fault: Fault) -> None:
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)

    def _latency(self, fault: Fault) -> float:
        rng = fault.rng or self._rng
        if fault.distribution == "uniform":
            return rng.uniform(fault.min_ms, fault.max_ms) / 1000.0
        if fault.distribution == "exponential":
            return rng.expovariate(1.0 / fault.mean_ms) / 1000.0 if fault.mean_ms > 0 else 0.0
        return fault.ms / 1000.0

    def before(self, route: str, ids: Mapping[str, int | None]) -> Decision:
        """Latency (summed) and the first matching status/reset/hang fault."""
        if not self._faults:
            return NO_FAULT
        with self._lock:
            latency = 0.0
            chosen: Fault | None = None
            for fault in list(self._faults):
                if fault.kind == "latency":
                    if self._applies(fault, route, ids):
                        latency += self._latency(fault)
                        self._spend(fault)
                elif (
                    fault.kind in PRE_KINDS and chosen is None and self._applies(fault, route, ids)
                ):
                    chosen = fault
                    self._spend(fault)
            return Decision(latency, chosen)

    def after_commit(self, route: str, ids: Mapping[str, int | None]) -> Fault | None:
        """The first matching commit-then-fail fault, once the service has committed."""
        if not self._faults:
            return None
        with self._lock:
            for fault in list(self._faults):
                if fault.kind in POST_KINDS and self._applies(fault, route, ids):
                    self._spend(fault)
                    return fault
            return None
