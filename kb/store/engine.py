"""SQLAlchemy engines on SQLite (kb's driver, sqlite-vec and pragmas from `kb.store.dbapi`) or PostgreSQL, and
the transactions kb writes in. Driver errors become kb errors at the engine's boundary.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from kb.errors import DatabaseError
from kb.settings import is_postgres_url
from kb.store.dbapi import configure_sqlite, sqlite_driver, translate_database_error


def create_engine(target: Path | str, *, busy_timeout_ms: int = 10_000) -> Engine:
    """An engine on a SQLite file (sqlite-vec loaded, kb's pragmas set) or a PostgreSQL URL (pgvector)."""
    if is_postgres_url(target):
        return _postgres_engine(str(target))
    return _sqlite_engine(Path(target), busy_timeout_ms)


def _postgres_engine(url: str) -> Engine:
    """PostgreSQL through psycopg 3: `postgresql://...` is taken to mean `postgresql+psycopg://...`."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    try:
        engine = sa.create_engine(url, pool_pre_ping=True)
    except ImportError as error:
        raise DatabaseError(
            "PostgreSQL needs the psycopg driver: pip install 'kb[postgres]' (or 'psycopg[binary]')"
        ) from error
    _translate_errors(engine, safe_url(url))
    return engine


def safe_url(target: Path | str) -> str:
    """A database location fit for output: a URL's password is hidden."""
    if not is_postgres_url(target):
        return str(target)
    return sa.engine.make_url(str(target)).render_as_string(hide_password=True)


def _sqlite_engine(path: Path, busy_timeout_ms: int) -> Engine:
    driver = sqlite_driver()
    if str(path) != ":memory:":
        parent = path.expanduser().parent
        if not parent.is_dir():
            raise DatabaseError(f"cannot open database {path}: folder {parent} does not exist")
        if path.expanduser().is_dir():  # SQLite would only say "unable to open database file"
            raise DatabaseError(f"cannot open database {path}: it is a directory, not a SQLite file")
    engine = sa.create_engine(f"sqlite:///{path}", module=driver)
    _translate_errors(engine, str(path))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide when transactions start.
        dbapi_connection.isolation_level = None
        configure_sqlite(dbapi_connection, busy_timeout_ms)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writers begin IMMEDIATE: taking the write lock up front lets busy_timeout queue them, where a
        # deferred transaction upgrading its lock would fail at once with "database is locked".
        mode = connection.get_execution_options().get("kb_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _translate_errors(engine: Engine, location: str) -> None:
    """Database failures become kb errors at the boundary: one line that says what happened and what to
    do, instead of a driver traceback. Errors kb handles itself (constraint violations) pass through."""

    @event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> BaseException | None:
        return translate_database_error(context.original_exception, location, context.is_disconnect)


def insert_ignoring_conflicts(connection: Connection, table: sa.Table) -> Any:
    """An INSERT that skips rows whose key already exists, in the connection's dialect."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgres_insert

        return postgres_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def bulk_insert(
    connection: Connection,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    ignore: bool = False,
) -> None:
    """Insert many rows with the driver's own `executemany` (SQLAlchemy's per-row parameter processing is a
    third of the cost of storing chunks). `ignore`: skip rows whose key exists (ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    conflict = " ON CONFLICT DO NOTHING" if ignore else ""
    statement = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([marker] * len(columns))}){conflict}"
    )
    connection.exec_driver_sql(statement, [tuple(row) for row in rows])


def serialize(connection: Connection, name: str) -> None:
    """Make transactions that call this with the same `name` run one after another, until commit.

    PostgreSQL: a transaction-level advisory lock. SQLite needs nothing: its writers already take turns."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A short write transaction that holds SQLite's write lock from its first statement."""
    with engine.connect() as connection:
        connection = connection.execution_options(kb_begin="IMMEDIATE")
        with connection.begin():
            yield connection


def database_size(engine: Engine) -> int:
    """Bytes the database takes: the SQLite file, or PostgreSQL's `pg_database_size`."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            query = "SELECT pg_database_size(current_database())"
            return int(connection.exec_driver_sql(query).scalar_one())
    database = engine.url.database
    return Path(database).stat().st_size if database else 0
