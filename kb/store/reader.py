"""Readers: plain SQL for what only reads, on whichever connection is at hand.

`kb status` and `kb search` on a SQLite knowledge base run on a `DriverReader`: the SQLite driver alone, the
file opened read-only, no SQLAlchemy import, so a cold command pays only for what it uses (and a knowledge
base on read-only media can be searched). Everywhere else, the same SQL runs through SQLAlchemy on a
`ConnectionReader`. The SQL lives once, in `kb.store.readmodel` (and the read half of `kb.store.vectors`,
`kb.store.fulltext`, `kb.store.querycache`), with `:name` parameters, which the SQLite driver and SQLAlchemy's
`text()` both understand.
"""

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

Row = tuple[Any, ...]
# Opens a reader on a connection of its own, closed on exit (KnowledgeBase.open_reader, kb.readonly's).
OpenReader = Callable[[], AbstractContextManager["Reader"]]


class Reader(Protocol):
    """Runs read-only SQL and returns its rows."""

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`: the few queries that differ choose by it."""
        ...

    def rows(self, sql: str, params: Mapping[str, object] | None = None) -> list[Row]: ...

    def blocks(self, sql: str, size: int, params: Mapping[str, object] | None = None) -> Iterator[list[Row]]:
        """The rows `size` at a time, streamed (memory stays at one block)."""
        ...


class DriverReader:
    """A SQLite DB-API connection, used as is; its errors become kb errors as the engine's do."""

    dialect = "sqlite"

    def __init__(self, connection: Any, location: str) -> None:
        self.connection = connection
        self.location = location

    def rows(self, sql: str, params: Mapping[str, object] | None = None) -> list[Row]:
        return [tuple(row) for row in self._execute(sql, params).fetchall()]

    def blocks(self, sql: str, size: int, params: Mapping[str, object] | None = None) -> Iterator[list[Row]]:
        cursor = self._execute(sql, params)
        while block := cursor.fetchmany(size):
            yield [tuple(row) for row in block]

    def close(self) -> None:
        self.connection.close()

    def _execute(self, sql: str, params: Mapping[str, object] | None) -> Any:
        from kb.store.dbapi import translate_database_error

        try:
            return self.connection.execute(sql, dict(params or {}))
        except Exception as error:
            translated = translate_database_error(error, self.location)
            if translated is None:
                raise
            raise translated from error


class ConnectionReader:
    """A SQLAlchemy connection (SQLite or PostgreSQL), in the caller's transaction."""

    def __init__(self, connection: "Connection") -> None:
        self.connection = connection
        self.dialect = connection.dialect.name

    def rows(self, sql: str, params: Mapping[str, object] | None = None) -> list[Row]:
        from sqlalchemy import text

        result = self.connection.execute(text(sql), dict(params or {}))
        return [tuple(row) for row in result] if result.returns_rows else []

    def blocks(self, sql: str, size: int, params: Mapping[str, object] | None = None) -> Iterator[list[Row]]:
        from sqlalchemy import text

        result = self.connection.execute(text(sql), dict(params or {}))
        while block := result.fetchmany(size):
            yield [tuple(row) for row in block]


def scalar(reader: Reader, sql: str, params: Mapping[str, object] | None = None) -> Any:
    found = reader.rows(sql, params)
    return found[0][0] if found else None
