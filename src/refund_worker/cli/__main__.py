"""``python -m refund_worker.cli``."""

from refund_worker.cli import run

run()
