"""All vector SQL: one table per embedding space, float32 serialisation, KNN.

SQLite: a sqlite-vec `vec0` table, and beside it the vectors' compact codes (`kb.core.quantize`) in blocks,
written in the same transaction: the quantized index (`kb.search.vectorindex`) is never out of step with the
vectors, crash or not. PostgreSQL: a pgvector table with an HNSW cosine index. Nothing else in kb writes raw
vector SQL. A space's tables are dropped whole when the space goes (sqlite-vec never reclaims deleted rows),
and its row ids are embedding task ids.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from kb.core.quantize import FIT_SAMPLE, Quantizer
from kb.store.reader import Reader, scalar

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

Matrix = NDArray[np.float32]

# chunk_size=256 with 64 KiB pages writes ~9x faster than the defaults (docs/performance.md).
VEC_CHUNK_SIZE = 256


_WRITE_BLOCK = 1_000  # vectors serialised at a time


def table_name(space_id: int) -> str:
    return f"vec_space_{int(space_id)}"


def codes_table(space_id: int) -> str:
    """Blocks of codes: one row per write, its row ids, signs and levels as arrays (a million vectors load
    in well under a second; one row per vector would take several)."""
    return f"vec_codes_{int(space_id)}"


def quantizer_table(space_id: int) -> str:
    return f"vec_quantizer_{int(space_id)}"


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
    create_code_tables(connection, space_id)


def create_code_tables(connection: "Connection", space_id: int) -> None:
    connection.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {codes_table(space_id)} (id INTEGER PRIMARY KEY, "
        "size INTEGER NOT NULL, rowids BLOB NOT NULL, signs BLOB NOT NULL, levels BLOB NOT NULL)"
    )
    connection.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {quantizer_table(space_id)} (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "fitted_on INTEGER NOT NULL, center BLOB NOT NULL, scale BLOB NOT NULL, token TEXT NOT NULL)"
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
    for name in (table_name(space_id), codes_table(space_id), quantizer_table(space_id)):
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def serialize(vector: NDArray[np.float32] | Sequence[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def write(
    connection: "Connection", space_id: int, ids: Sequence[int] | NDArray[np.int64], matrix: Matrix
) -> None:
    """Insert or replace the vectors of the task `ids` (one per row of `matrix`); replacing makes
    re-application idempotent. Written a block at a time: memory stays at one block beyond `matrix`."""
    if not len(ids):
        return
    name = table_name(space_id)
    if _postgres(connection):
        from sqlalchemy import text

        connection.execute(
            text(
                f"INSERT INTO {name} (rowid, embedding) VALUES (:id, CAST(:v AS vector)) "
                "ON CONFLICT (rowid) DO UPDATE SET embedding = EXCLUDED.embedding"
            ),
            [
                {"id": int(task_id), "v": _literal(vector)}
                for task_id, vector in zip(ids, matrix, strict=True)
            ],
        )
        return
    ids = np.asarray(ids, dtype=np.int64)
    matrix = np.asarray(matrix, dtype=np.float32)
    present = _present(connection, space_id, ids)
    if present:  # a re-applied result: replaced (looked up first, as deleting absent rows costs as much)
        connection.exec_driver_sql(f"DELETE FROM {name} WHERE rowid = ?", [(i,) for i in present])
    for start in range(0, len(ids), _WRITE_BLOCK):
        connection.exec_driver_sql(
            f"INSERT INTO {name}(rowid, embedding) VALUES (?, ?)",
            [
                (int(i), serialize(vector))
                for i, vector in zip(
                    ids[start : start + _WRITE_BLOCK], matrix[start : start + _WRITE_BLOCK], strict=True
                )
            ],
        )
    _append_codes(connection, space_id, ids, matrix)


def _present(connection: "Connection", space_id: int, ids: NDArray[np.int64]) -> list[int]:
    """Which of `ids` have a vector already: from vec0's rowid shadow table, a plain indexed table."""
    found: list[int] = []
    for start in range(0, len(ids), 500):
        listed = ",".join(str(int(i)) for i in ids[start : start + 500])
        rows = connection.exec_driver_sql(
            f"SELECT rowid FROM {table_name(space_id)}_rowids WHERE rowid IN ({listed})"
        )
        found.extend(int(row[0]) for row in rows)
    return found


def _append_codes(connection: "Connection", space_id: int, ids: NDArray[np.int64], matrix: Matrix) -> None:
    """The new vectors' codes, as one block. A replaced vector's old code stays in its block: the index
    reads each candidate's exact vector before answering, so a stale duplicate cannot change a result."""
    from kb.store.reader import ConnectionReader

    reader = ConnectionReader(connection)
    fitted = quantizer(reader, space_id)
    stored = count(reader, space_id)
    if fitted is not None and (fitted.fitted_on >= FIT_SAMPLE or stored < 2 * fitted.fitted_on):
        _insert_codes(connection, space_id, fitted, ids, matrix)
    elif stored == len(ids):  # these are all of the space's vectors: fit on them, nothing to read back
        _insert_codes(connection, space_id, _refit(connection, space_id, matrix[:FIT_SAMPLE]), ids, matrix)
    else:  # the space doubled since the fit: refit on more of its vectors, and code them all again
        rebuild_codes(connection, space_id, matrix.shape[1])


def _insert_codes(
    connection: "Connection", space_id: int, fitted: Quantizer, ids: NDArray[np.int64], matrix: Matrix
) -> None:
    codes = fitted.encode(matrix)
    connection.exec_driver_sql(
        f"INSERT INTO {codes_table(space_id)} (size, rowids, signs, levels) VALUES (?, ?, ?, ?)",
        (len(ids), ids.astype("<i8").tobytes(), codes.signs.tobytes(), codes.levels.tobytes()),
    )


def rebuild_codes(connection: "Connection", space_id: int, dimensions: int) -> None:
    """Fit a new quantizer on the space's first vectors (up to `FIT_SAMPLE`) and code every vector again."""
    from kb.store.reader import ConnectionReader

    reader = ConnectionReader(connection)
    create_code_tables(connection, space_id)
    sample = np.concatenate(
        [block for _, block in _first_batches(reader, space_id, dimensions, FIT_SAMPLE)]
        or [np.empty((0, dimensions), dtype=np.float32)]
    )
    if not len(sample):  # no vectors yet: the first write fits the quantizer
        return
    fitted = _refit(connection, space_id, sample)
    for ids, block in batches(reader, space_id, dimensions, size=FIT_SAMPLE):
        _insert_codes(connection, space_id, fitted, ids, block)


def _refit(connection: "Connection", space_id: int, sample: Matrix) -> Quantizer:
    """A new quantizer fitted on `sample`, in place of the old one and all its codes."""
    connection.exec_driver_sql(f"DELETE FROM {codes_table(space_id)}")
    connection.exec_driver_sql(f"DELETE FROM {quantizer_table(space_id)}")
    fitted = Quantizer.fit(sample)
    connection.exec_driver_sql(
        f"INSERT INTO {quantizer_table(space_id)} (id, fitted_on, center, scale, token) "
        "VALUES (1, ?, ?, ?, ?)",
        (fitted.fitted_on, fitted.center.tobytes(), fitted.scale.tobytes(), fitted.token),
    )
    return fitted


def _first_batches(
    reader: Reader, space_id: int, dimensions: int, rows: int
) -> Iterator[tuple[NDArray[np.int64], Matrix]]:
    taken = 0
    for ids, block in batches(reader, space_id, dimensions, size=min(rows, 1_000)):
        yield ids, block
        taken += len(ids)
        if taken >= rows:
            return


def quantizer(reader: Reader, space_id: int) -> Quantizer | None:
    """The space's quantizer; None before its first vector (or on PostgreSQL, which has no codes)."""
    if reader.dialect == "postgresql":
        return None
    found = reader.rows(f"SELECT fitted_on, center, scale, token FROM {quantizer_table(space_id)}")
    if not found:
        return None
    fitted_on, center, scale, token = found[0]
    return Quantizer(
        np.frombuffer(center, dtype=np.float32), np.frombuffer(scale, dtype=np.float32), int(fitted_on), token
    )


@dataclass(frozen=True, slots=True)
class CodesState:
    token: str | None  # the quantizer's (None: no vector yet); another token means other codes
    through: int  # the highest block id
    coded: int  # vectors coded, a replaced vector's old code included


def codes_state(reader: Reader, space_id: int) -> CodesState:
    """What an index loaded earlier must catch up with, in one statement."""
    row = reader.rows(
        f"SELECT (SELECT token FROM {quantizer_table(space_id)}), coalesce(max(id), 0), "
        f"coalesce(sum(size), 0) FROM {codes_table(space_id)}"
    )[0]
    return CodesState(row[0], int(row[1]), int(row[2]))


def code_blocks(
    reader: Reader, space_id: int, after: int, through: int, levels: bool
) -> Iterator[tuple[NDArray[np.int64], bytes, bytes | None]]:
    """The code blocks with ids in (after, through], in order: (row ids, signs, levels if asked for)."""
    columns = "rowids, signs" + (", levels" if levels else "")
    for rows in reader.blocks(
        f"SELECT {columns} FROM {codes_table(space_id)} WHERE id > :after AND id <= :through ORDER BY id",
        1,  # a block can hold 10,000 vectors' codes (8.7 MB at 768 dimensions): one at a time
        {"after": after, "through": through},
    ):
        for row in rows:
            yield np.frombuffer(row[0], dtype="<i8"), row[1], row[2] if levels else None


def block_sizes(reader: Reader, space_id: int, after: int, through: int) -> list[tuple[int, int]]:
    return [
        (int(block), int(size))
        for block, size in reader.rows(
            f"SELECT id, size FROM {codes_table(space_id)} WHERE id > :after AND id <= :through ORDER BY id",
            {"after": after, "through": through},
        )
    ]


def has_codes(reader: Reader, space_id: int) -> bool:
    if reader.dialect == "postgresql":
        return False
    name = codes_table(space_id)
    return bool(scalar(reader, "SELECT count(*) FROM sqlite_master WHERE name = :name", {"name": name}))


def count(reader: Reader, space_id: int) -> int:
    """Vectors stored for the space. Counts vec0's rowid shadow table: `count(*)` on the virtual table scans
    every vector (25 ms at 100k), the shadow table's b-tree answers in microseconds."""
    name = table_name(space_id)
    shadow = name if reader.dialect == "postgresql" else f"{name}_rowids"
    return int(reader.rows(f"SELECT count(*) FROM {shadow}")[0][0] or 0)


def any_stored(reader: Reader, space_id: int) -> bool:
    """Whether the space holds a vector (one row read: counting costs 2 ms a million)."""
    name = table_name(space_id)
    shadow = name if reader.dialect == "postgresql" else f"{name}_rowids"
    return bool(reader.rows(f"SELECT 1 FROM {shadow} LIMIT 1"))


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


def lookup(
    reader: Reader, space_id: int, ids: Sequence[int], dimensions: int
) -> tuple[NDArray[np.int64], Matrix]:
    """The stored vectors of the given row ids (those that exist), as (ids, matrix), in no set order.

    One statement of point queries joined by UNION ALL: vec0 answers `rowid = n` from its index, but scans
    every vector for `rowid IN (...)` (40 ms at 100,000 vectors, for any number of ids)."""
    name = table_name(space_id)
    found_ids: list[int] = []
    found: list[bytes] = []
    for start in range(0, len(ids), 500):  # SQLite's limit on terms of a compound SELECT
        sql = " UNION ALL ".join(
            f"SELECT rowid, embedding FROM {name} WHERE rowid = {int(i)}" for i in ids[start : start + 500]
        )
        for rowid, value in reader.rows(sql):
            found_ids.append(int(rowid))
            found.append(value)
    matrix = np.frombuffer(b"".join(found), dtype="<f4").reshape(len(found), dimensions)
    return np.array(found_ids, dtype=np.int64), matrix
