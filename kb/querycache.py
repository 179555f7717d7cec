"""Query vectors already paid for, per embedding space (a repeated question makes no API call)."""

import hashlib
import time

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Connection

from kb.db import insert_ignoring_conflicts
from kb.embedder import Matrix
from kb.schema import QueryEmbedding, table_of

QUERIES = table_of(QueryEmbedding)


def query_key(query: str) -> str:
    """Whitespace-insensitive key of a question (case matters to embedding models)."""
    return hashlib.sha256(" ".join(query.split()).encode("utf-8")).hexdigest()


def get(connection: Connection, space_id: int, query: str) -> Matrix | None:
    key = query_key(query)
    blob = connection.execute(
        select(QUERIES.c.vector).where(QUERIES.c.space_id == space_id, QUERIES.c.query_sha256 == key)
    ).scalar_one_or_none()
    if blob is None:
        return None
    vector: Matrix = np.frombuffer(blob, dtype="<f4").reshape(1, -1).astype(np.float32)
    return vector


def put(connection: Connection, space_id: int, query: str, vector: Matrix) -> None:
    now = time.time()
    connection.execute(
        insert_ignoring_conflicts(connection, QUERIES).values(
            space_id=space_id,
            query_sha256=query_key(query),
            vector=np.asarray(vector, dtype="<f4").tobytes(),
            created_at=now,
            last_used_at=now,
        )
    )
