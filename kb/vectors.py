"""All sqlite-vec SQL: one vec0 table per embedding space, float32 serialisation, KNN.

Nothing else in kb writes raw vector SQL. A space's table is dropped whole when the space goes (sqlite-vec
never reclaims deleted rows), and its rowids are embedding task ids.
"""

from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import text
from sqlalchemy.engine import Connection

# chunk_size=256 with 64 KiB pages writes ~9x faster than the defaults (docs/performance.md).
VEC_CHUNK_SIZE = 256


def table_name(space_id: int) -> str:
    return f"vec_space_{int(space_id)}"


def create_table(connection: Connection, space_id: int, dimensions: int) -> None:
    connection.exec_driver_sql(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {table_name(space_id)} USING vec0("
        f"embedding float[{int(dimensions)}] distance_metric=cosine, chunk_size={VEC_CHUNK_SIZE})"
    )


def drop_table(connection: Connection, space_id: int) -> None:
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table_name(space_id)}")


def serialize(vector: NDArray[np.float32] | Sequence[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def write(connection: Connection, space_id: int, rows: Iterable[tuple[int, NDArray[np.float32]]]) -> None:
    """Insert or replace the vectors of (task id, vector) rows; replacing makes re-application idempotent."""
    payload = [(task_id, serialize(vector)) for task_id, vector in rows]
    if not payload:
        return
    name = table_name(space_id)
    ids = [(task_id,) for task_id, _ in payload]
    connection.exec_driver_sql(f"DELETE FROM {name} WHERE rowid = ?", ids)
    connection.exec_driver_sql(
        f"INSERT INTO {name}(rowid, embedding) VALUES (?, ?)",
        payload,
    )


def count(connection: Connection, space_id: int) -> int:
    result = connection.exec_driver_sql(f"SELECT count(*) FROM {table_name(space_id)}").scalar()
    return int(result or 0)


def nearest(
    connection: Connection, space_id: int, query: NDArray[np.float32], k: int
) -> list[tuple[int, float]]:
    """The k nearest (task id, cosine distance) pairs, nearest first."""
    rows = connection.execute(
        text(
            f"SELECT rowid, distance FROM {table_name(space_id)} "
            "WHERE embedding MATCH :query AND k = :k ORDER BY distance"
        ),
        {"query": serialize(query), "k": int(k)},
    )
    return [(int(row[0]), float(row[1])) for row in rows]
