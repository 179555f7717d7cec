"""The one place that opens SQLite: driver choice, sqlite-vec, pragmas, transactions.

Python's stdlib `sqlite3` often cannot load extensions (pyenv builds, macOS system Python), so the driver is
the stdlib module when it can, else `sqlean.py` (a maintained SQLite build for every platform, a kb
dependency), else `pysqlite3` if the user installed it.
"""

import importlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
import sqlite_vec
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from kb.errors import (
    DatabaseBusyError,
    DatabaseCorruptError,
    DatabaseError,
    DatabaseFullError,
    DatabaseReadOnlyError,
)

# Large pages make vec0 and bulk inserts several times faster (see docs/performance.md). A page size only
# takes effect on a database that has no tables yet, so it is set before anything else on every connect.
PAGE_SIZE = 65536
CACHE_KIB = 64 * 1024
_MIN_SQLITE = (3, 41, 0)  # sqlite-vec's recommended minimum


def _can_load_extensions(module: ModuleType) -> bool:
    try:
        connection = module.connect(":memory:")
    except Exception:
        return False
    try:
        connection.enable_load_extension(True)
        sqlite_vec.load(connection)
        connection.execute("CREATE VIRTUAL TABLE temp.probe USING fts5(x)")
        return bool(connection.execute("SELECT vec_version()").fetchone())
    except Exception:
        return False
    finally:
        connection.close()


def _candidate_modules() -> Iterator[ModuleType]:
    if sqlite3.sqlite_version_info >= _MIN_SQLITE:
        yield sqlite3
    for name in ("sqlean", "pysqlite3.dbapi2"):
        try:
            yield importlib.import_module(name)
        except ImportError:
            continue


_driver: ModuleType | None = None


def sqlite_driver() -> ModuleType:
    """The DB-API module kb uses: the first that loads sqlite-vec and has FTS5."""
    global _driver
    if _driver is None:
        for module in _candidate_modules():
            if _can_load_extensions(module):
                _driver = module
                break
        else:
            raise DatabaseError(
                "no usable SQLite driver: this Python's sqlite3 cannot load extensions (or lacks FTS5) "
                "and the `sqlean.py` package is missing or broken; reinstall kb "
                "(`pip install --force-reinstall sqlean.py`) or install `pysqlite3-binary`."
            )
    return _driver


def is_postgres_url(target: str | Path) -> bool:
    return str(target).startswith(("postgresql://", "postgresql+", "postgres://"))


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
    engine = sa.create_engine(f"sqlite:///{path}", module=driver)
    _translate_errors(engine, str(path))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide when transactions start.
        dbapi_connection.isolation_level = None
        dbapi_connection.enable_load_extension(True)
        sqlite_vec.load(dbapi_connection)
        dbapi_connection.enable_load_extension(False)
        for pragma in (
            f"page_size={PAGE_SIZE}",
            "journal_mode=WAL",
            "synchronous=NORMAL",
            # SQLite's default cache is 2 MB: 31 pages of 64 KiB, too few for index and FTS inserts.
            f"cache_size={-CACHE_KIB}",
            "temp_store=MEMORY",
            "foreign_keys=ON",
            f"busy_timeout={busy_timeout_ms}",
        ):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writers begin IMMEDIATE: taking the write lock up front lets busy_timeout queue them, where a
        # deferred transaction upgrading its lock would fail at once with "database is locked".
        mode = connection.get_execution_options().get("kb_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


# SQLite result codes (primary part of `sqlite_errorname`) and PostgreSQL SQLSTATE classes, by kb error.
_SQLITE_ERRORS: dict[str, type[DatabaseError]] = {
    "SQLITE_BUSY": DatabaseBusyError,
    "SQLITE_LOCKED": DatabaseBusyError,
    "SQLITE_FULL": DatabaseFullError,
    "SQLITE_CORRUPT": DatabaseCorruptError,
    "SQLITE_NOTADB": DatabaseCorruptError,
    "SQLITE_READONLY": DatabaseReadOnlyError,
    "SQLITE_CANTOPEN": DatabaseReadOnlyError,
}
_SQLITE_MESSAGES: dict[str, type[DatabaseError]] = {  # drivers without sqlite_errorname
    "database is locked": DatabaseBusyError,
    "database table is locked": DatabaseBusyError,
    "database or disk is full": DatabaseFullError,
    "database disk image is malformed": DatabaseCorruptError,
    "file is not a database": DatabaseCorruptError,
    "readonly database": DatabaseReadOnlyError,
    "unable to open database file": DatabaseReadOnlyError,
}
_POSTGRES_STATES: dict[str, type[DatabaseError]] = {
    "08": DatabaseBusyError,  # connection exception
    "40": DatabaseBusyError,  # serialization failure, deadlock: the transaction may simply be retried
    "53": DatabaseFullError,  # insufficient resources (disk full, out of memory, too many connections)
    "55P03": DatabaseBusyError,  # lock not available
    "57P": DatabaseBusyError,  # server shutting down or restarting
    "XX001": DatabaseCorruptError,
    "XX002": DatabaseCorruptError,
    "25006": DatabaseReadOnlyError,  # read-only transaction (a standby)
}
_SUFFIX = {
    DatabaseBusyError: "another process holds it, or it cannot be reached; try again",
    DatabaseFullError: "free some disk space, then run the command again (nothing stored was lost)",
    DatabaseCorruptError: "restore it from a backup, or move it aside and ingest again",
    DatabaseReadOnlyError: "check the permissions of the file and its folder",
}


def _translate_errors(engine: Engine, location: str) -> None:
    """Database failures become kb errors at the boundary: one line that says what happened and what to
    do, instead of a driver traceback. Errors kb handles itself (constraint violations) pass through."""

    @event.listens_for(engine, "handle_error")
    def _on_error(context: sa.engine.ExceptionContext) -> BaseException | None:
        return translate_database_error(context.original_exception, location, context.is_disconnect)


def translate_database_error(
    error: BaseException, location: str, disconnected: bool = False
) -> DatabaseError | None:
    """The kb error for a driver error (None: not one kb translates, such as a constraint violation)."""
    kind = _error_kind(error, disconnected)
    if kind is None:
        return None
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return kind(f"database {location}: {first_line} ({_SUFFIX.get(kind, 'see the message')})")


def _error_kind(error: BaseException, disconnected: bool) -> type[DatabaseError] | None:
    name = getattr(error, "sqlite_errorname", None)
    if isinstance(name, str):
        for prefix, kind in _SQLITE_ERRORS.items():
            if name == prefix or name.startswith(prefix + "_"):
                return kind
    state = getattr(error, "sqlstate", None)
    if isinstance(state, str):
        for prefix, kind in _POSTGRES_STATES.items():
            if state.startswith(prefix):
                return kind
    message = str(error).lower()
    for text, kind in _SQLITE_MESSAGES.items():
        if text in message:
            return kind
    if disconnected:
        return DatabaseBusyError
    return None


def insert_ignoring_conflicts(connection: Connection, table: sa.Table) -> Any:
    """An INSERT that skips rows whose key already exists, in the connection's dialect."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgres_insert

        return postgres_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


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
