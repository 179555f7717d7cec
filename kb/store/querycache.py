"""Query vectors already paid for, per embedding space (a repeated question makes no API call)."""

import hashlib
import time
from typing import TYPE_CHECKING

import numpy as np

from kb.store.reader import Reader, scalar
from kb.store.vectors import Matrix

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def query_key(query: str) -> str:
    """Whitespace-insensitive key of a question (case matters to embedding models)."""
    return hashlib.sha256(" ".join(query.split()).encode("utf-8")).hexdigest()


def get(reader: Reader, space_id: int, query: str) -> Matrix | None:
    blob = scalar(
        reader,
        "SELECT vector FROM query_embeddings WHERE space_id = :space AND query_sha256 = :key",
        {"space": space_id, "key": query_key(query)},
    )
    if blob is None:
        return None
    vector: Matrix = np.frombuffer(blob, dtype="<f4").reshape(1, -1).astype(np.float32)
    return vector


def put(connection: "Connection", space_id: int, query: str, vector: Matrix) -> None:
    from kb.store.engine import insert_ignoring_conflicts
    from kb.store.schema import QueryEmbedding, table_of

    now = time.time()
    connection.execute(
        insert_ignoring_conflicts(connection, table_of(QueryEmbedding)).values(
            space_id=space_id,
            query_sha256=query_key(query),
            vector=np.asarray(vector, dtype="<f4").tobytes(),
            created_at=now,
            last_used_at=now,
        )
    )
