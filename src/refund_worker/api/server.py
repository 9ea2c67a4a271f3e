"""Running the API under uvicorn, built from settings with the real Celery publisher."""

from __future__ import annotations

import os
import secrets

from fastapi import FastAPI

from refund_worker.settings import ENV_PREFIX, Settings, get_settings

#: uvicorn's import string for ``app_from_environment`` (used with several workers).
FACTORY = "refund_worker.api.server:app_from_environment"


def build_app(settings: Settings | None = None) -> FastAPI:
    """The API over ``settings.database_url`` (schema checked), publishing to ``broker_url``."""
    from refund_worker.api.app import create_app
    from refund_worker.celery_app import NOTIFY_QUEUE, QUEUE
    from refund_worker.celery_app import create_app as create_celery_app
    from refund_worker.db import Database
    from refund_worker.exporter import StateCollector
    from refund_worker.publishing import CeleryPublisher

    settings = settings or get_settings()
    database = Database.from_url(settings.database_dsn, pool_size=settings.database_pool_size)
    database.prepare()
    celery_app = create_celery_app(settings)
    publisher = CeleryPublisher(celery_app)
    state = StateCollector(database, celery_app=celery_app, queues=(QUEUE, NOTIFY_QUEUE))
    return create_app(database=database, publisher=publisher, settings=settings, state=state)


def app_from_environment() -> FastAPI:
    """uvicorn factory: the API from ``REFUND_WORKER_*`` settings (one per worker process)."""
    return build_app()


def share_console_secret() -> None:
    """Give the worker processes about to start one console secret, unless one is configured.

    The console's session cookies are signed (``api.console.sessions``); a login made in one
    process must be good in the others. Each process reads the environment it inherits, so a
    secret made here is shared by them all, and lasts until the server stops.
    """
    name = ENV_PREFIX + "CONSOLE_SECRET"
    if get_settings().console_secret is None and not os.environ.get(name):
        os.environ[name] = secrets.token_urlsafe(32)


def serve(
    host: str,
    port: int,
    settings: Settings | None = None,
    *,
    workers: int = 1,
    log_level: str | None = None,
) -> None:
    """Serve the API with uvicorn until interrupted.

    With ``workers`` > 1 each process builds its own app from the environment (``settings``
    cannot cross into them, so passing both is refused).
    """
    import uvicorn

    level = (log_level or (settings or get_settings()).log_level).lower()
    if workers > 1:
        if settings is not None:
            raise ValueError("with several workers the settings come from the environment")
        share_console_secret()
        uvicorn.run(
            FACTORY,
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level=level,
            server_header=False,
            proxy_headers=False,
        )
        return
    uvicorn.run(
        build_app(settings),
        host=host,
        port=port,
        log_level=level,
        server_header=False,
        proxy_headers=False,
    )
