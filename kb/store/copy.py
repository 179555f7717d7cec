"""Rows of one database copied into another with their ids (`kb migrate-db`): the SQL of the copy, table by
table in an order that keeps foreign keys valid. `kb.lifecycle.transfer` drives it."""

from collections.abc import Iterator

from sqlalchemy import Table, func, select, text
from sqlalchemy.engine import Connection, Engine

from kb.store.engine import write_transaction
from kb.store.schema import (
    BatchJob,
    BatchJobItem,
    Chunk,
    Document,
    EmbeddingSpace,
    EmbeddingTask,
    Meta,
    QueryEmbedding,
    UsageRecord,
    table_of,
)

# Parents before children, so that foreign keys hold at every insert.
_TABLES = [
    Meta,
    Document,
    EmbeddingSpace,
    Chunk,
    BatchJob,
    EmbeddingTask,
    BatchJobItem,
    UsageRecord,
    QueryEmbedding,
]
TABLE_NAMES = [table_of(model).name for model in _TABLES]


def holds_documents(connection: Connection) -> bool:
    return bool(connection.execute(select(func.count()).select_from(table_of(Document))).scalar_one())


def _table(name: str) -> Table:
    return next(table_of(model) for model in _TABLES if table_of(model).name == name)


def read_rows(connection: Connection, table_name: str, batch: int) -> Iterator[list[dict[str, object]]]:
    """Every row of the table, `batch` at a time."""
    result = connection.execute(select(_table(table_name))).mappings()
    while rows := result.fetchmany(batch):
        yield [dict(row) for row in rows]


def insert_rows(connection: Connection, table_name: str, rows: list[dict[str, object]]) -> None:
    connection.execute(_table(table_name).insert(), rows)


def restart_sequences(engine: Engine) -> None:
    """PostgreSQL's id sequences must continue after the copied ids (SQLite needs nothing)."""
    if engine.dialect.name != "postgresql":
        return
    with write_transaction(engine) as connection:
        for model in _TABLES:
            table = table_of(model)
            if "id" not in table.c:
                continue
            connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                    f"GREATEST((SELECT max(id) FROM {table.name}), 1))"
                )
            )
