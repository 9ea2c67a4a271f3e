"""Engine, the ``session_scope()`` and ``connection_scope()`` units of work, and the schema check
(Alembic)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    Result,
    bindparam,
    create_engine,
    event,
    text,
)
from sqlalchemy.exc import DBAPIError, OperationalError

from refund_worker.errors import ConfigurationError, DatabaseUnavailable

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.orm import Session, sessionmaker

#: The newest migration; the schema every process checks for at start-up without loading
#: Alembic (a test keeps it equal to Alembic's head).
SCHEMA_HEAD = "0010"


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """An engine tuned per backend: WAL and a busy timeout for SQLite; for PostgreSQL, no
    pre-ping (a ``SELECT 1`` round trip per checkout) and connections recycled after 30 min.

    Without the ping, a connection the server dropped fails its first statement:
    ``session_scope`` and ``connection_scope`` map that to ``DatabaseUnavailable`` (retried), and
    the pool then replaces every connection older than the failure, so a restart costs one failed
    unit of work.
    """
    if database_url.startswith("sqlite"):
        engine = create_engine(
            database_url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", False)
    # A host that never answers fails the connection in 10 s instead of hanging it.
    kwargs.setdefault("connect_args", {"connect_timeout": 10})
    kwargs.setdefault("pool_recycle", 1800)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(database_url, **kwargs)


@contextmanager
def _connection_loss_is_retryable() -> Iterator[None]:
    """A lost or refused database connection leaves as ``DatabaseUnavailable`` (retried)."""
    try:
        yield
    except DBAPIError as exc:
        if exc.connection_invalidated or isinstance(exc, OperationalError):
            raise DatabaseUnavailable(f"database unavailable: {type(exc.orig).__name__}") from exc
        raise


class Database:
    """One engine and its session factory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # The same pool; a connection checked out through it runs each statement on its own.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        """The ORM session factory, made on first use: the read-only commands run Core
        statements (``connection_scope``) and start without loading ``sqlalchemy.orm``."""
        from sqlalchemy.orm import sessionmaker

        return sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, database_url: str, *, pool_size: int | None = None) -> Database:
        """A database for ``database_url``, keeping up to ``pool_size`` connections open (10 by
        default; more are opened when needed and closed when returned)."""
        if pool_size is None:
            return cls(make_engine(database_url))
        return cls(make_engine(database_url, pool_size=pool_size))

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """A unit of work: commit on success, roll back on error, connection loss → retryable."""
        session = self.sessions()
        try:
            with _connection_loss_is_retryable():
                try:
                    yield session
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
        finally:
            session.close()

    @contextmanager
    def connection_scope(self) -> Iterator[Connection]:
        """``session_scope`` for Core statements, without the ORM session's bookkeeping: one
        connection and its transaction, committed on success, rolled back on error, with the same
        mapping of a lost connection (connecting included) to ``DatabaseUnavailable``."""
        with _connection_loss_is_retryable(), self.engine.connect() as connection:
            try:
                yield connection
                connection.commit()
            except BaseException:
                connection.rollback()
                raise

    @contextmanager
    def statement_scope(self) -> Iterator[Connection]:
        """A connection whose every statement is its own transaction, committed as it runs: for
        a unit of work that is one statement. It saves the ``BEGIN`` and ``COMMIT`` round trips
        of ``connection_scope``; a lost connection maps to ``DatabaseUnavailable`` the same way.
        """
        with _connection_loss_is_retryable(), self._autocommit.connect() as connection:
            yield connection

    @property
    def is_sqlite(self) -> bool:
        """True on SQLite, where the schema is created on first use."""
        return self.engine.dialect.name == "sqlite"

    def prepare(self) -> None:
        """Make the schema usable: upgrade SQLite in place; refuse an out-of-date PostgreSQL.

        Every failure is one ``ConfigurationError`` naming ``REFUND_WORKER_DATABASE_URL`` and
        where it points (never its password): an unreachable server, a refused login, a missing
        database, a schema that is not the code's.
        """
        try:
            current = current_revision(self.engine)
            if self.is_sqlite and current != SCHEMA_HEAD:
                upgrade(self.engine)
                return
        except (DBAPIError, OSError) as exc:
            raise ConfigurationError(
                f"cannot use the database of REFUND_WORKER_DATABASE_URL ({self.where}): "
                f"{_first_line(exc)}"
            ) from None
        if current != SCHEMA_HEAD:
            raise ConfigurationError(
                f"the database of REFUND_WORKER_DATABASE_URL ({self.where}) has schema "
                f"{current or 'none'}, the code needs {SCHEMA_HEAD}: run `refund-worker db upgrade`"
            )

    @property
    def where(self) -> str:
        """The database URL without its password, to show to people."""
        return self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        """Close every pooled connection (after fork, and at shutdown)."""
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    """``Type: first line`` of a driver's error (psycopg's name the host, never a password)."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0][:300]}" if text else type(orig).__name__


def alembic_config(engine: Engine | None = None) -> Config:
    """Alembic's config pointing at the migrations shipped in the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "refund_worker:migrations")
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: no schema), read without Alembic."""
    with engine.connect() as connection:
        if not engine.dialect.has_table(connection, "alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def schema_revisions(engine: Engine) -> tuple[str | None, str | None]:
    """(revision the database is at, revision the migrations shipped end at)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return current_revision(engine), head


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE/DELETE/INSERT touched."""
    assert isinstance(result, CursorResult)
    return result.rowcount


def param(name: str, column: ColumnElement[Any]) -> BindParameter[Any]:
    """A bind parameter for a per-call value, typed like ``column`` (UTC datetimes and booleans
    then bind alike on SQLite and PostgreSQL), for statements built once and run many times.

    ``name`` must not be a column's name: an UPDATE adds an execution key named like a column to
    its SET list, so these are prefixed ``p_``.
    """
    return bindparam(name, type_=column.type)


@lru_cache(maxsize=8)
def database_for(database_url: str) -> Database:
    """One ``Database`` per URL per process."""
    return Database.from_url(database_url)
