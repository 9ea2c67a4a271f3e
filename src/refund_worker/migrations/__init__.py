"""Alembic migrations shipped with the package (``refund-worker db upgrade``)."""
