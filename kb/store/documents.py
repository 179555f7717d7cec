"""Documents and chunks: the repository that ingest writes through (SQLAlchemy Core on hot paths)."""

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Column, delete, func, select, update
from sqlalchemy.engine import Connection

from kb.core.chunking import TextChunk, estimate_tokens
from kb.core.inputs import embedding_input
from kb.records import ChunkInput
from kb.store import fulltext
from kb.store.engine import bulk_insert
from kb.store.readmodel import KEY_COLUMNS
from kb.store.schema import Chunk, Document, table_of

DOCUMENTS = table_of(Document)
CHUNKS = table_of(Chunk)

HEADING_SEPARATOR = " > "

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredDocument:
    id: int
    source_path: str
    content_sha256: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A document as ingest writes it."""

    source_path: str
    content_sha256: str
    title: str
    source_format: str
    size: int
    mtime_ns: int
    metadata: Mapping[str, object]


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stored_documents(connection: Connection) -> dict[str, StoredDocument]:
    rows = connection.execute(
        select(
            DOCUMENTS.c.id,
            DOCUMENTS.c.source_path,
            DOCUMENTS.c.content_sha256,
            DOCUMENTS.c.size,
            DOCUMENTS.c.mtime_ns,
        )
    )
    return {row.source_path: StoredDocument(*row) for row in rows}


def insert_documents(connection: Connection, records: Sequence[DocumentRecord], now: float) -> list[int]:
    """Insert new documents; returns their ids, in the order given.

    SQLite: the driver's executemany, then the ids by path (SQLAlchemy's ordered RETURNING costs 0.25 ms a
    document, a tenth of an ingest's writing). PostgreSQL: one INSERT ... RETURNING in parameter order."""
    if not records:
        return []
    values = [{"created_at": now, **_document_values(record, now)} for record in records]
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            DOCUMENTS.insert().returning(DOCUMENTS.c.id, sort_by_parameter_order=True), values
        )
        return [int(document_id) for document_id in rows.scalars()]
    columns = list(values[0])
    encoded = [[json.dumps(v[c]) if c == "metadata" else v[c] for c in columns] for v in values]
    bulk_insert(connection, "documents", columns, encoded)
    ids: dict[str, int] = {}
    for batch in in_batches([record.source_path for record in records], 500):
        found = connection.execute(
            select(DOCUMENTS.c.source_path, DOCUMENTS.c.id).where(DOCUMENTS.c.source_path.in_(batch))
        )
        ids.update((str(path), int(document_id)) for path, document_id in found)
    return [ids[record.source_path] for record in records]


def update_document(connection: Connection, document_id: int, record: DocumentRecord, now: float) -> None:
    connection.execute(
        update(DOCUMENTS).where(DOCUMENTS.c.id == document_id).values(**_document_values(record, now))
    )


def touch_document(connection: Connection, document_id: int, record: DocumentRecord) -> None:
    """Same content, new file times (remembered so the next ingest skips the read) or new metadata (from
    --meta); its chunks, and what they embed, stay."""
    connection.execute(
        update(DOCUMENTS)
        .where(DOCUMENTS.c.id == document_id)
        .values(size=record.size, mtime_ns=record.mtime_ns, metadata=_json_safe(record.metadata))
    )


def _document_values(record: DocumentRecord, now: float) -> dict[str, object]:
    return {
        "source_path": record.source_path,
        "content_sha256": record.content_sha256,
        "title": record.title,
        "source_format": record.source_format,
        "size": record.size,
        "mtime_ns": record.mtime_ns,
        "metadata": _json_safe(record.metadata),
        "updated_at": now,
    }


def _json_safe(metadata: Mapping[str, object]) -> object:
    # Round-trip through JSON so that anything unserialisable fails here, with the path known.
    return json.loads(json.dumps(metadata, default=str))


def key_column(chunk_input: ChunkInput | str) -> "Column[str]":
    """The chunk column that a space's tasks are keyed by: the sha256 of what the space embeds."""
    return CHUNKS.c[KEY_COLUMNS[ChunkInput(chunk_input)]]


def input_tokens(chunk_input: ChunkInput | str, context: str, tokens: int, situation: str = "") -> int:
    """The estimated tokens of a chunk's input in a space: its text's, plus its context line's (and, in a
    situated space, its written context's)."""
    extra = estimate_tokens(situation) + 1 if chunk_input == ChunkInput.SITUATED and situation else 0
    if chunk_input == ChunkInput.TEXT or not context:
        return tokens + extra
    return tokens + estimate_tokens(context) + 1 + extra


_KEYS = tuple(CHUNKS.c[name] for name in KEY_COLUMNS.values())


def chunk_hashes(connection: Connection, document_ids: Sequence[int]) -> set[str]:
    """Every task key the documents' chunks hold (of each kind of space: readmodel.KEY_COLUMNS)."""
    hashes: set[str] = set()
    for batch in in_batches(document_ids, 500):
        for row in connection.execute(select(*_KEYS).where(CHUNKS.c.document_id.in_(batch))):
            hashes.update(key for key in row if key)
    return hashes


def delete_chunks(connection: Connection, document_id: int) -> None:
    """Remove a document's chunks (the full-text index follows through triggers)."""
    connection.execute(delete(CHUNKS).where(CHUNKS.c.document_id == document_id))


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A chunk as ingest writes it, with its keys (computed while reading: the writer is the bottleneck)."""

    document_id: int
    chunk: TextChunk
    text_sha256: str
    context: str
    input_sha256: str
    context_key: str = ""
    situation: str = ""  # a context already written for this chunk of this document (kb.store.contexts)
    situated_sha256: str = ""


_CHUNK_COLUMNS = (
    "document_id",
    "ordinal",
    "text",
    "text_sha256",
    "token_estimate",
    "heading_path",
    "context",
    "input_sha256",
    "context_key",
    "situation",
    "situated_sha256",
    "start_offset",
    "end_offset",
    "page_start",
    "page_end",
)


def insert_chunks(connection: Connection, rows: Sequence[ChunkRow]) -> None:
    """Insert chunks and add them to the full-text index, in bulk."""
    if not rows:
        return
    before = fulltext.last_chunk_id(connection)
    bulk_insert(
        connection,
        "chunks",
        _CHUNK_COLUMNS,
        [
            (
                row.document_id,
                row.chunk.ordinal,
                row.chunk.text,
                row.text_sha256,
                row.chunk.token_estimate,
                HEADING_SEPARATOR.join(row.chunk.heading_path),
                row.context,
                row.input_sha256,
                row.context_key,
                row.situation,
                row.situated_sha256,
                row.chunk.start,
                row.chunk.end,
                row.chunk.page_start,
                row.chunk.page_end,
            )
            for row in rows
        ],
    )
    fulltext.index_new(connection, before)


def delete_documents(connection: Connection, document_ids: Sequence[int]) -> None:
    for batch in in_batches(document_ids, 500):
        connection.execute(delete(DOCUMENTS).where(DOCUMENTS.c.id.in_(batch)))


def referenced_hashes(connection: Connection, hashes: Iterable[str]) -> set[str]:
    """The subset of `hashes` that some chunk still holds, as a key of any kind of space."""
    found: set[str] = set()
    for batch in in_batches(list(hashes), 500):
        for column in _KEYS:
            rows = connection.execute(select(column).where(column.in_(batch)).distinct())
            found.update(row[0] for row in rows)
    return found


def in_batches(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    """Slices of `items`, so that IN (...) lists stay under SQLite's variable limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def distinct_texts(connection: Connection, chunk_input: ChunkInput | str) -> dict[str, int]:
    """Every distinct input a space of `chunk_input` embeds (its key) with its token estimate."""
    key = key_column(chunk_input)
    columns = (func.max(CHUNKS.c.token_estimate), func.max(CHUNKS.c.context), func.max(CHUNKS.c.situation))
    rows = connection.execute(select(key, *columns).where(key != "").group_by(key))
    return {
        str(sha): input_tokens(chunk_input, str(context), int(tokens), str(situation))
        for sha, tokens, context, situation in rows
    }


def sample_texts(connection: Connection, limit: int, chunk_input: ChunkInput | str) -> list[str]:
    rows = connection.execute(select(CHUNKS.c.context, CHUNKS.c.text).order_by(CHUNKS.c.id).limit(limit))
    return [embedding_input(chunk_input, str(context), str(text)) for context, text in rows]


def inputs_by_key(
    connection: Connection, chunk_input: ChunkInput | str, keys: Sequence[str]
) -> dict[str, str]:
    """What a space of `chunk_input` embeds for each key (one chunk's copy of it)."""
    key = key_column(chunk_input)
    found: dict[str, str] = {}
    for batch in in_batches(sorted(set(keys)), 500):
        one_chunk = select(func.min(CHUNKS.c.id)).where(key.in_(batch)).group_by(key).scalar_subquery()
        rows = connection.execute(
            select(key, CHUNKS.c.context, CHUNKS.c.text, CHUNKS.c.situation).where(CHUNKS.c.id.in_(one_chunk))
        )
        found.update(
            {str(sha): embedding_input(chunk_input, str(c), str(t), str(s)) for sha, c, t, s in rows}
        )
    return found
