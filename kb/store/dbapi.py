"""Below SQLAlchemy: the SQLite driver, its extension and pragmas, read-only connections, and driver errors
translated into kb errors. No SQLAlchemy import here: the cold read-only commands use this alone.

Python's stdlib `sqlite3` often cannot load extensions (pyenv builds, macOS system Python), so the driver is
the stdlib module when it can, else `sqlean.py` (a maintained SQLite build for every platform, a kb
dependency), else `pysqlite3` if the user installed it.
"""

import importlib
import importlib.util
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

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
# Memory-mapped reads: a search reads a few hundred pages at random (tasks, chunks, exact vectors); mapped,
# SQLite reads them in place instead of copying 64 KiB a page through its cache (3x faster at a million
# chunks, docs/performance.md). Only address space: SQLite maps no more than the file holds.
MMAP_BYTES = 64 << 30
_MIN_SQLITE = (3, 41, 0)  # sqlite-vec's recommended minimum


def vec_extension() -> str:
    """The sqlite-vec loadable's path, found without importing the package (which imports numpy)."""
    spec = importlib.util.find_spec("sqlite_vec")
    if spec is not None and spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations))) / "vec0")
    import sqlite_vec

    return str(sqlite_vec.loadable_path())


def load_vec(connection: Any) -> None:
    connection.enable_load_extension(True)
    connection.load_extension(vec_extension())
    connection.enable_load_extension(False)


def _can_load_extensions(module: ModuleType) -> bool:
    try:
        connection = module.connect(":memory:")
    except Exception:
        return False
    try:
        load_vec(connection)
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


def configure_sqlite(connection: Any, busy_timeout_ms: int) -> None:
    """sqlite-vec and kb's pragmas on a new connection."""
    load_vec(connection)
    for pragma in (
        f"page_size={PAGE_SIZE}",
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "temp_store=MEMORY",
        "foreign_keys=ON",
        *_reading_pragmas(busy_timeout_ms),
    ):
        connection.execute(f"PRAGMA {pragma}")


def _reading_pragmas(busy_timeout_ms: int) -> tuple[str, ...]:
    """The pragmas every connection takes, read-only ones too."""
    return (
        # SQLite's default cache is 2 MB: 31 pages of 64 KiB, too few for index and FTS inserts.
        f"cache_size={-CACHE_KIB}",
        f"mmap_size={MMAP_BYTES}",
        f"busy_timeout={busy_timeout_ms}",
    )


def connect_readonly(path: Path, busy_timeout_ms: int = 10_000) -> Any:
    """A read-only connection to an existing SQLite file, sqlite-vec loaded: nothing it runs can write. On
    read-only media, where not even SQLite's shared-memory file can be made, the file is opened immutable."""
    driver = sqlite_driver()
    uri = "file:" + quote(str(Path(path).absolute()))
    try:
        try:
            connection = driver.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except driver.OperationalError:
            connection = driver.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        load_vec(connection)
        for pragma in _reading_pragmas(busy_timeout_ms):
            connection.execute(f"PRAGMA {pragma}")
    except driver.Error as error:
        translated = translate_database_error(error, str(path))
        raise translated or DatabaseError(f"database {path}: {error}") from error
    return connection


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
