"""All vector SQL: one table per embedding space, float32 serialisation, KNN.

SQLite: a sqlite-vec `vec0` table. PostgreSQL: a pgvector table with an HNSW cosine index. Nothing else in kb
writes raw vector SQL. A space's table is dropped whole when the space goes (sqlite-vec never reclaims deleted
rows), and its row ids are embedding task ids.
"""

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from kb.reader import Reader

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

Matrix = NDArray[np.float32]

# chunk_size=256 with 64 KiB pages writes ~9x faster than the defaults (docs/performance.md).
VEC_CHUNK_SIZE = 256


def table_name(space_id: int) -> str:
    return f"vec_space_{int(space_id)}"


def _postgres(connection: "Connection") -> bool:
    return connection.dialect.name == "postgresql"


def _literal(vector: NDArray[np.float32] | Sequence[float]) -> str:
    """pgvector's text form, '[0.1,0.2,...]' (float32 values round-trip exactly with repr)."""
    return "[" + ",".join(repr(float(x)) for x in np.asarray(vector, dtype=np.float32)) + "]"


def create_table(connection: "Connection", space_id: int, dimensions: int, index: bool = True) -> None:
    """The space's vector table. `index=False` leaves out PostgreSQL's HNSW index, for a bulk load that
    calls `create_index` afterwards (several times faster than updating the index row by row)."""
    if _postgres(connection):
        columns = f"rowid BIGINT PRIMARY KEY, embedding vector({int(dimensions)})"
        connection.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {table_name(space_id)} ({columns})")
        if index:
            create_index(connection, space_id, dimensions)
        return
    connection.exec_driver_sql(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {table_name(space_id)} USING vec0("
        f"embedding float[{int(dimensions)}] distance_metric=cosine, chunk_size={VEC_CHUNK_SIZE})"
    )


def create_index(
    connection: "Connection", space_id: int, dimensions: int, work_mem: str | None = None
) -> None:
    """PostgreSQL's HNSW (cosine) index on the space's vectors; `work_mem` (e.g. '512MB') speeds a build
    over many rows already loaded. SQLite's vec0 table needs none."""
    if not _postgres(connection) or dimensions > 2000:  # pgvector's HNSW limit; larger ones are scanned
        return
    if work_mem is not None:
        connection.exec_driver_sql(
            "SELECT set_config('maintenance_work_mem', %(mem)s, true)", {"mem": work_mem}
        )
    name = table_name(space_id)
    connection.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {name}_hnsw ON {name} USING hnsw (embedding vector_cosine_ops)"
    )


def drop_table(connection: "Connection", space_id: int) -> None:
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table_name(space_id)}")


def serialize(vector: NDArray[np.float32] | Sequence[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def write(connection: "Connection", space_id: int, rows: Iterable[tuple[int, NDArray[np.float32]]]) -> None:
    """Insert or replace the vectors of (task id, vector) rows; replacing makes re-application idempotent."""
    rows = list(rows)
    if not rows:
        return
    name = table_name(space_id)
    if _postgres(connection):
        from sqlalchemy import text

        connection.execute(
            text(
                f"INSERT INTO {name} (rowid, embedding) VALUES (:id, CAST(:v AS vector)) "
                "ON CONFLICT (rowid) DO UPDATE SET embedding = EXCLUDED.embedding"
            ),
            [{"id": int(task_id), "v": _literal(vector)} for task_id, vector in rows],
        )
        return
    payload = [(task_id, serialize(vector)) for task_id, vector in rows]
    ids = [(task_id,) for task_id, _ in payload]
    connection.exec_driver_sql(f"DELETE FROM {name} WHERE rowid = ?", ids)
    connection.exec_driver_sql(
        f"INSERT INTO {name}(rowid, embedding) VALUES (?, ?)",
        payload,
    )


def count(reader: Reader, space_id: int) -> int:
    """Vectors stored for the space. Counts vec0's rowid shadow table: `count(*)` on the virtual table scans
    every vector (25 ms at 100k), the shadow table's b-tree answers in microseconds."""
    name = table_name(space_id)
    shadow = name if reader.dialect == "postgresql" else f"{name}_rowids"
    return int(reader.rows(f"SELECT count(*) FROM {shadow}")[0][0] or 0)


def nearest(reader: Reader, space_id: int, query: NDArray[np.float32], k: int) -> list[tuple[int, float]]:
    """The k nearest (task id, cosine distance) pairs, nearest first."""
    if reader.dialect == "postgresql":
        # HNSW search is approximate; ef_search above k keeps its recall high for k up to a few hundred.
        reader.rows(f"SET LOCAL hnsw.ef_search = {max(40, min(1000, int(k) * 2))}")
        rows = reader.rows(
            f"SELECT rowid, embedding <=> CAST(:query AS vector) AS distance FROM {table_name(space_id)} "
            "ORDER BY distance LIMIT :k",
            {"query": _literal(query), "k": int(k)},
        )
    else:
        rows = reader.rows(
            f"SELECT rowid, distance FROM {table_name(space_id)} "
            "WHERE embedding MATCH :query AND k = :k ORDER BY distance",
            {"query": serialize(query), "k": int(k)},
        )
    return [(int(row[0]), float(row[1])) for row in rows]


def batches(
    reader: Reader, space_id: int, dimensions: int, size: int = 1_000
) -> Iterator[tuple[NDArray[np.int64], Matrix]]:
    """The space's (rowids, vectors) in blocks of at most `size` rows, streamed from the database: memory
    stays at one block whatever the size of the space."""
    postgres = reader.dialect == "postgresql"
    column = "embedding::text" if postgres else "embedding"
    for rows in reader.blocks(f"SELECT rowid, {column} FROM {table_name(space_id)}", size):
        ids = np.empty(len(rows), dtype=np.int64)
        block = np.empty((len(rows), dimensions), dtype=np.float32)
        for n, (rowid, value) in enumerate(rows):
            ids[n] = rowid
            block[n] = (
                np.array(value[1:-1].split(","), dtype=np.float32)
                if postgres
                else np.frombuffer(value, dtype="<f4")
            )
        yield ids, block


def load_all(reader: Reader, space_id: int, dimensions: int) -> tuple[NDArray[np.int64], Matrix]:
    """Every (rowid, vector) of the space as arrays, for an in-memory index: streamed into arrays sized
    from the row count up front (grown if rows arrive meanwhile), so the peak is the matrix itself."""
    capacity = count(reader, space_id)
    ids = np.empty(capacity, dtype=np.int64)
    matrix = np.empty((capacity, dimensions), dtype=np.float32)
    filled = 0
    for block_ids, block in batches(reader, space_id, dimensions):
        end = filled + len(block_ids)
        if end > capacity:  # written since the count: grow, rarely
            capacity = max(end, capacity * 2)
            ids = np.resize(ids, capacity)
            matrix = np.resize(matrix, (capacity, dimensions))
        ids[filled:end], matrix[filled:end] = block_ids, block
        filled = end
    return ids[:filled], matrix[:filled]


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

    def refresh(self, reader: Reader) -> None:
        stored = count(reader, self.space_id)
        if stored != self._count:
            self._ids, self._matrix = load_all(reader, self.space_id, self.dimensions)
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
