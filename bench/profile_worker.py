"""Where a worker's CPU goes: sample it with py-spy, classify each sample by module.

``py-spy record --gil`` keeps only the thread holding the GIL, so samples are proportional to
Python CPU time. A sample belongs to the innermost frame that is not the standard library
(json called by kombu is Celery's; json called by our Magento client is ours):

* **Celery**: celery, kombu, billiard, vine, redis-py, amqp (the broker client and task events)
* **database**: sqlalchemy, psycopg
* **HTTP**: httpx, httpcore, h11, anyio
* **our code**: refund_worker, pydantic (validation we ask for), the bench's no-op
* **other**: stacks with only the standard library (thread pool plumbing, logging handlers).

Shares are scaled to the worker's measured CPU ms per refund (psutil, unprofiled runs).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common

CATEGORIES = {
    "celery": "Celery",
    "kombu": "Celery",
    "billiard": "Celery",
    "vine": "Celery",
    "redis": "Celery",
    "amqp": "Celery",
    "click": "Celery",
    "sqlalchemy": "database",
    "psycopg": "database",
    "psycopg_binary": "database",
    "httpx": "HTTP",
    "httpcore": "HTTP",
    "h11": "HTTP",
    "anyio": "HTTP",
    "idna": "HTTP",
    "refund_worker": "our code",
    "pydantic": "our code",
    "pydantic_core": "our code",
    "patches": "our code",
    "worker": "our code",
    "gevent": "gevent",
}
ORDER = ["Celery", "database", "HTTP", "our code", "gevent", "other"]


class Sampler:
    def __init__(self, pid: int, rate: int, subprocesses: bool = False) -> None:
        self.output = Path(tempfile.mkstemp(prefix="pyspy-", suffix=".txt")[1])
        py_spy = Path(sys.executable).with_name("py-spy")
        self.process = subprocess.Popen(
            [str(py_spy), "record", "-p", str(pid), "--gil", "--nonblocking", "-r", str(rate),
             "--full-filenames", "--nolineno", "-f", "raw", "-o", str(self.output),
             *(["--subprocesses"] if subprocesses else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def stacks(self) -> Counter[tuple[str, ...]]:
        """Collapsed stacks, root first, with their sample counts."""
        found: Counter[tuple[str, ...]] = Counter()
        for line in self.output.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                found[tuple(stack.split(";"))] += int(count)
        self.output.unlink(missing_ok=True)
        return found


@contextlib.contextmanager
def sampling(pid: int, rate: int = 200, subprocesses: bool = False) -> Iterator[Sampler]:
    """py-spy on ``pid`` (and its children, with ``subprocesses``: prefork) meanwhile."""
    sampler = Sampler(pid, rate, subprocesses)
    try:
        yield sampler
    finally:
        sampler.stop()


def _module(frame: str) -> tuple[str, str]:
    """(top-level package or 'stdlib', function) of a ``func (path)`` frame."""
    function, _, path = frame.rpartition(" (")
    path = path.rstrip(")")
    if "site-packages/" in path:
        package = path.split("site-packages/", 1)[1].split("/", 1)[0]
        return package.removesuffix(".py"), function
    if "/refund_worker/" in path:
        return "refund_worker", function
    if "/bench/" in path:
        return Path(path).stem, function
    return "stdlib", function


def classify(stack: tuple[str, ...]) -> tuple[str, str]:
    """(category, innermost refund_worker function) of one sampled stack."""
    category = "other"
    for frame in reversed(stack):
        package, _ = _module(frame)
        if package != "stdlib":
            category = CATEGORIES.get(package, f"other ({package})")
            break
    step = "-"
    for frame in reversed(stack):
        package, function = _module(frame)
        if package == "refund_worker":
            step = function
            break
    return category, step


def breakdown(stacks: Counter[tuple[str, ...]], by_process: bool = False) -> dict[str, Any]:
    """Shares of samples by category, and the top (category, our function) pairs. With
    ``by_process`` (stacks sampled with ``subprocesses``), categories are split into the main
    process's and the children's."""
    total = sum(stacks.values()) or 1
    by_category: Counter[str] = Counter()
    by_step: Counter[tuple[str, str]] = Counter()
    for stack, count in stacks.items():
        category, step = classify(stack)
        if by_process:
            # py-spy roots a child's stacks at its parent's "process" frame, then its own
            child = len(stack) > 1 and stack[1].startswith("process ")
            category = f"{category} ({'children' if child else 'main'})"
        by_category[category] += count
        by_step[(category, step)] += count
    return {
        "samples": total,
        "share": {k: round(v / total, 4) for k, v in by_category.most_common()},
        "top": [
            {"category": c, "in": s, "share": round(v / total, 4)}
            for (c, s), v in by_step.most_common(20)
        ],
    }


def scale(profile: dict[str, Any], cpu_ms: float) -> dict[str, Any]:
    """Add ms per refund to each share, given the worker's measured CPU ms per refund."""
    profile = dict(profile)
    profile["cpu_ms_per_refund"] = cpu_ms
    profile["ms"] = {k: round(v * cpu_ms, 3) for k, v in profile["share"].items()}
    for entry in profile["top"]:
        entry["ms"] = round(entry["share"] * cpu_ms, 3)
    return profile


def print_breakdown(profile: dict[str, Any]) -> None:
    ms = profile.get("ms", {})
    rows = [
        {"what": k, "share": f"{v:.1%}", "ms_per_refund": ms.get(k)}
        for k, v in sorted(profile["share"].items(), key=lambda kv: _rank(kv[0]))
    ]
    common.print_table(f"worker CPU by module ({profile['samples']} samples)", rows)
    top = [
        {"what": f"{e['category']} in {e['in']}", "share": f"{e['share']:.1%}", "ms": e.get("ms")}
        for e in profile["top"][:15]
    ]
    common.print_table("top: category × innermost refund_worker function", top)


def _rank(category: str) -> tuple[int, str]:
    base = category.split(" (")[0]
    return (ORDER.index(base) if base in ORDER else len(ORDER), category)
