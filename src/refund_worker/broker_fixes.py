"""A fix for kombu's Redis transport, applied when the Celery app is imported.

kombu 5.7 / Celery 5.7: when the broker connection breaks while a worker runs tasks that
acknowledge late, Celery first *collects* the connection (which drops the transport's client),
then closes it. Closing the channel tries to give the running tasks' unacknowledged messages back
and builds a new Redis connection pool from the dropped client: ``AttributeError: 'NoneType'
object has no attribute 'hostname'``, which nothing catches, and the worker exits with code 1.
(Reproduced by ``tests/e2e/test_redis_loss.py``.)

The fix makes that case what it is, a connection error: the close is abandoned as for any other
broker failure, and the worker reconnects. The messages stay in Redis's ``unacked`` hash, which
returns them to their queue after the visibility timeout; a refund whose message is lost is
re-published by the sweeper.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_APPLIED = "_refund_worker_fixed"


def apply() -> None:
    """Patch ``Channel._connparams`` once per process."""
    original: Any = kombu_redis.Channel._connparams
    if getattr(original, _APPLIED, False):
        return

    @functools.wraps(original)
    def connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError(
                "the broker connection was already closed; not reconnecting from it"
            )
        return original(self, asynchronous=asynchronous)

    setattr(connparams, _APPLIED, True)
    kombu_redis.Channel._connparams = connparams  # type: ignore[method-assign]
