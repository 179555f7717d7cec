"""All sqlite-vec SQL: one vec0 table per embedding space, float32 serialisation, KNN.

Nothing else in kb writes raw vector SQL. A space's table is dropped whole when the space goes (sqlite-vec
never reclaims deleted rows), and its rowids are embedding task ids.
"""

from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import text
from sqlalchemy.engine import Connection

Matrix = NDArray[np.float32]

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
    """Vectors stored for the space. Counts vec0's rowid shadow table: `count(*)` on the virtual table scans
    every vector (25 ms at 100k), the shadow table's b-tree answers in microseconds."""
    name = table_name(space_id)
    result = connection.exec_driver_sql(f"SELECT count(*) FROM {name}_rowids").scalar()
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


def load_all(connection: Connection, space_id: int, dimensions: int) -> tuple[NDArray[np.int64], Matrix]:
    """Every (rowid, vector) of the space as arrays, for an in-memory index."""
    rows = connection.exec_driver_sql(f"SELECT rowid, embedding FROM {table_name(space_id)}").fetchall()
    ids = np.empty(len(rows), dtype=np.int64)
    matrix = np.empty((len(rows), dimensions), dtype=np.float32)
    for n, (rowid, blob) in enumerate(rows):
        ids[n] = rowid
        matrix[n] = np.frombuffer(blob, dtype="<f4")
    return ids, matrix


class MemoryIndex:
    """A space's vectors held in RAM for exact search at memory speed, for long-lived processes.

    sqlite-vec scans about 1 GB/s; a numpy matrix product runs near memory bandwidth (6-7x faster at 100k
    vectors), at the cost of the matrix's memory and a reload whenever the stored vectors change. Vectors are
    only ever added (a space's table is dropped whole), so their count tells whether a reload is needed.
    """

    def __init__(self, space_id: int, dimensions: int) -> None:
        self.space_id = space_id
        self.dimensions = dimensions
        self._count = -1
        self._ids: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._matrix: Matrix = np.empty((0, dimensions), dtype=np.float32)

    def refresh(self, connection: Connection) -> None:
        stored = count(connection, self.space_id)
        if stored != self._count:
            self._ids, self._matrix = load_all(connection, self.space_id, self.dimensions)
            self._count = stored

    def nearest(self, query: NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        """The k nearest (rowid, cosine distance) pairs, nearest first (rows are unit length)."""
        if not len(self._ids):
            return []
        similarities = self._matrix @ query.astype(np.float32, copy=False)
        k = min(k, len(similarities))
        top = np.argpartition(-similarities, k - 1)[:k]
        top = top[np.argsort(-similarities[top], kind="stable")]
        return [(int(self._ids[i]), float(1.0 - similarities[i])) for i in top]
