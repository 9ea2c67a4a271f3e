"""The operator console: failed refunds, one refund's timeline, and replay, in a browser.

Served by ``refund-worker api`` under ``/console`` for operator keys only (docs/console.md).
``mount_console(app, ...)`` adds it to the API's app; ``create_app`` does that.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI

from refund_worker.api.console.routes import ConsoleContext, router
from refund_worker.api.console.sessions import ConsoleSessions
from refund_worker.api.keys import KeyRing
from refund_worker.db import Database
from refund_worker.publishing import Publisher
from refund_worker.settings import Settings

__all__ = ["ConsoleContext", "ConsoleSessions", "mount_console"]

log = logging.getLogger(__name__)


def mount_console(
    app: FastAPI,
    *,
    database: Database,
    publisher: Publisher,
    keys: KeyRing,
    settings: Settings,
) -> None:
    """Serve the console from ``app``: its pages under ``/console``, sessions signed with
    ``settings.console_secret`` (or, unset, a secret this process makes: logins then last
    until it stops and are good in it alone)."""
    if settings.console_secret is not None:
        secret = settings.console_secret.get_secret_value().encode()
    else:
        secret = secrets.token_bytes(32)
        log.info(
            "REFUND_WORKER_CONSOLE_SECRET is not set: console logins last until this process "
            "stops, and are good in this process only"
        )
    app.state.refund_console = ConsoleContext(
        database=database,
        publisher=publisher,
        keys=keys,
        sessions=ConsoleSessions(
            secret,
            settings.api_keys,
            lifetime_seconds=settings.console_session_minutes * 60,
        ),
        secure_cookies=settings.console_secure_cookies,
    )
    app.include_router(router)
