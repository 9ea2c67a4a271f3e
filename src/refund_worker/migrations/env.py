"""Alembic environment: runs online against the engine handed over by ``refund_worker.db``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from refund_worker.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    from refund_worker.settings import get_settings

    engine = create_engine(get_settings().database_dsn)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
