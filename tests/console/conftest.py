"""Console fixtures: the API's (``api``, ``start_api``, ``keys``...), shared with tests/api."""

from __future__ import annotations

from tests.api.conftest import api, database, keys, publisher, start_api

__all__ = ["api", "database", "keys", "publisher", "start_api"]
