"""The database URL read as ``Settings`` reads it, without pydantic: for the read-only commands,
which need nothing else and start in half the time without pydantic-settings.

The same sources in the same order as ``Settings`` (pydantic-settings): a ``REFUND_WORKER_``
variable of the environment (its name in any case), then the ``.env`` file of the working
directory (parsed by python-dotenv, as pydantic-settings does), then the default; checked by the
same ``database_url_problem``, a bad value is the same one-line ``ConfigurationError``.
``tests/unit/test_environment.py`` holds the two readers to the same answers.
"""

from __future__ import annotations

import os
from pathlib import Path

from refund_worker.errors import ConfigurationError

ENV_PREFIX = "REFUND_WORKER_"
ENV_FILE = ".env"
DEFAULT_DATABASE_URL = "sqlite:///refund_worker.db"
#: Database backends the worker supports.
DATABASE_DIALECTS = frozenset({"sqlite", "postgresql"})


def database_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the worker's database URL, or None; never repeats the URL (it may
    hold a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    expected = "expected sqlite:///path/to/file.db or postgresql+psycopg://user:password@host/db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"not a database URL: {expected}"
    if parsed.get_backend_name() not in DATABASE_DIALECTS:
        return f"the {parsed.get_backend_name()!r} database is not supported: {expected}"
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        return f"name the psycopg driver (postgresql+psycopg://): {expected}"
    return None


def setting(name: str) -> tuple[bool, str | None]:
    """(found, value) of ``REFUND_WORKER_<NAME>``: the environment's, else ``.env``'s. A ``.env``
    line without ``=`` is found with the value None."""
    key = (ENV_PREFIX + name).lower()
    environment = {variable.lower(): value for variable, value in os.environ.items()}
    if key in environment:
        return True, environment[key]
    path = Path(ENV_FILE)
    if path.is_file() or path.is_fifo():
        from dotenv import dotenv_values

        values = dotenv_values(path, encoding="utf-8")
        from_file = {variable.lower(): value for variable, value in values.items()}
        if key in from_file:
            return True, from_file[key]
    return False, None


def database_url() -> str:
    """``REFUND_WORKER_DATABASE_URL`` (password included: never print it), checked."""
    found, value = setting("DATABASE_URL")
    if not found:
        return DEFAULT_DATABASE_URL
    problem = "Input should be a valid string" if value is None else database_url_problem(value)
    if problem:
        raise ConfigurationError(f"invalid settings: {ENV_PREFIX}DATABASE_URL: {problem}")
    assert value is not None
    return value
