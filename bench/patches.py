"""Prototype fixes, applied by monkeypatching in benchmark processes only (never shipped).

Each entry measures what a proposed change to ``src/`` would bring; docs/performance.md names
the exact change. Enable with ``--patch NAME`` on the scripts (``BENCH_PATCHES`` in workers).
"""

from __future__ import annotations

from collections.abc import Callable

PATCHES: dict[str, Callable[[], None]] = {}


def patch(function: Callable[[], None]) -> Callable[[], None]:
    PATCHES[function.__name__.replace("_", "-")] = function
    return function


def apply(names: str) -> None:
    for name in filter(None, (n.strip() for n in names.split(","))):
        PATCHES[name]()
