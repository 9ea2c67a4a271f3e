"""Start a benchmark worker: ``refund_worker.celery_app.app`` plus a no-op task, optionally with
prototype patches (``BENCH_PATCHES=name,name``, see ``bench/patches.py``).

Arguments are ``celery worker``'s, as ``refund-worker worker`` passes them. With ``--pool
gevent`` the process is monkey-patched first, as ``celery -P gevent`` would do (``refund-worker
worker`` goes through ``app.worker_main``, which does not).
"""

from __future__ import annotations

import os
import sys

if "gevent" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import patches

from refund_worker.celery_app import app


@app.task(name="bench.noop", ignore_result=True)
def noop() -> None:
    """The yardstick: a bare task that does nothing."""


if __name__ == "__main__":
    patches.apply(os.environ.get("BENCH_PATCHES", ""))
    app.worker_main(argv=["worker", *sys.argv[1:]])
