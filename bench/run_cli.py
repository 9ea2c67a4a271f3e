"""``refund-worker`` with the prototype patches of ``BENCH_PATCHES`` applied first."""

from __future__ import annotations

import os

import patches  # bench/ is on PYTHONPATH

from refund_worker.cli import run

if __name__ == "__main__":
    patches.apply(os.environ.get("BENCH_PATCHES", ""))
    run()
