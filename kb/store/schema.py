"""SQLAlchemy 2 declarative tables. Alembic migrations in `migrations/` must agree with these
(tests/backends/test_migrations.py proves it).

Timestamps are UNIX seconds (REAL): portable, cheap to compare, no time-zone guessing.
Virtual tables (FTS5 `chunks_fts`, sqlite-vec `vec_space_<id>`) are raw DDL and live outside this metadata.
"""

from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_path: Mapped[str] = mapped_column(Text, unique=True)
    content_sha256: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    source_format: Mapped[str] = mapped_column(String(16))
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (UniqueConstraint("document_id", "ordinal"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64), index=True)
    token_estimate: Mapped[int] = mapped_column(Integer)
    heading_path: Mapped[str] = mapped_column(Text, default="")
    # Where the chunk sits ("Title > Heading > Subheading", kb.core.inputs), and the sha256 of the headed
    # input that spaces with chunk_input 'headed' embed: their tasks are keyed by it.
    context: Mapped[str] = mapped_column(Text, default="", server_default="")
    input_sha256: Mapped[str] = mapped_column(String(64), index=True, server_default="")
    # Chunk contexts (kb.core.contexts): the key a context space's tasks are keyed by (the document's and
    # the chunk's sha256), the context written for it, and the sha256 of what 'situated' spaces embed.
    context_key: Mapped[str] = mapped_column(String(64), index=True, server_default="")
    situation: Mapped[str] = mapped_column(Text, default="", server_default="")
    situated_sha256: Mapped[str] = mapped_column(String(64), index=True, server_default="")
    start_offset: Mapped[int] = mapped_column(Integer)
    end_offset: Mapped[int] = mapped_column(Integer)
    # The pages the chunk spans (1-based, inclusive) in documents that have pages; NULL elsewhere.
    page_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    page_end: Mapped[int | None] = mapped_column(Integer, nullable=True)


class EmbeddingSpace(Base):
    __tablename__ = "embedding_spaces"
    __table_args__ = (
        UniqueConstraint(
            "provider", "model", "dimensions", "task_type", "chunk_input", name="uq_embedding_spaces_spec"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    dimensions: Mapped[int] = mapped_column(Integer)
    task_type: Mapped[str] = mapped_column(String(32))
    normalized: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    activated_at: Mapped[float | None] = mapped_column(Float)
    retired_at: Mapped[float | None] = mapped_column(Float)
    # What is embedded for a chunk (kb.records.ChunkInput): 'text' for spaces made before chunk headers.
    chunk_input: Mapped[str] = mapped_column(String(16), default="headed", server_default="text")


class EmbeddingTask(Base):
    """One text to embed in one space. Content-addressed: a text is embedded (and paid for) once per space."""

    __tablename__ = "embedding_tasks"
    __table_args__ = (
        UniqueConstraint("space_id", "text_sha256"),
        Index("ix_embedding_tasks_due", "space_id", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("embedding_spaces.id", ondelete="CASCADE"))
    text_sha256: Mapped[str] = mapped_column(String(64))
    token_estimate: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("batch_jobs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class BatchJob(Base):
    """A remote (or local) embedding job. The row is committed before the remote call (the job ledger)."""

    __tablename__ = "batch_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    space_id: Mapped[int] = mapped_column(ForeignKey("embedding_spaces.id", ondelete="CASCADE"))
    display_name: Mapped[str] = mapped_column(String(128), unique=True)
    remote_name: Mapped[str | None] = mapped_column(String(256), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(32), index=True)
    item_count: Mapped[int] = mapped_column(Integer)
    token_estimate: Mapped[int] = mapped_column(Integer)
    input_file: Mapped[str | None] = mapped_column(String(256))
    output_file: Mapped[str | None] = mapped_column(String(256))
    result_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    submitted_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    deadline_at: Mapped[float | None] = mapped_column(Float)
    next_poll_at: Mapped[float | None] = mapped_column(Float)
    poll_count: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    submit_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tokens_billed: Mapped[int | None] = mapped_column(Integer)
    applied_at: Mapped[float | None] = mapped_column(Float)
    remote_state: Mapped[str | None] = mapped_column(String(64))
    # The remote call under way that creates something ("upload", "create"): committed before the call,
    # cleared when its result is recorded. Set on a claimed job: the call was interrupted, so look first.
    intent: Mapped[str | None] = mapped_column(String(16))
    step_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # in a row


class BatchJobItem(Base):
    """The job's manifest: the key sent with each request, and the task it answers."""

    __tablename__ = "batch_job_items"

    job_id: Mapped[int] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("embedding_tasks.id", ondelete="CASCADE"), index=True)


class Meta(Base):
    """Facts about this database, such as its instance id (which makes job display names unique)."""

    __tablename__ = "kb_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class WorkerLease(Base):
    """Who may submit and apply batch work on this database, until when; also the worker's heartbeat."""

    __tablename__ = "worker_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    acquired_at: Mapped[float] = mapped_column(Float)


class UsageRecord(Base):
    """Money spent: one row per applied batch job, online embedding call, or embedded question.

    Space and job are plain numbers, not foreign keys: the spend history outlives dropped spaces."""

    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # batch | online | query
    space_id: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[int | None] = mapped_column(Integer)
    texts: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(Integer)
    tokens_reported: Mapped[bool] = mapped_column(Boolean)  # counted by the API, not estimated by kb
    output_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # generation only
    usd: Mapped[float] = mapped_column(Float)
    usd_online_equivalent: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float, index=True)


class ChunkContext(Base):
    """A context a generation model wrote for a chunk in its document, kept for as long as its space: an
    unchanged chunk of an unchanged document is never sent again, even after its chunk row was rewritten."""

    __tablename__ = "chunk_contexts"

    space_id: Mapped[int] = mapped_column(
        ForeignKey("embedding_spaces.id", ondelete="CASCADE"), primary_key=True
    )
    context_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)


class QueryEmbedding(Base):
    """Query vectors already paid for: a repeated `kb search` question makes no API call."""

    __tablename__ = "query_embeddings"

    space_id: Mapped[int] = mapped_column(
        ForeignKey("embedding_spaces.id", ondelete="CASCADE"), primary_key=True
    )
    query_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float] = mapped_column(Float)


metadata = Base.metadata

# What the metadata cannot say, as it stands after the newest migration: a new database is created from the
# metadata plus these (`kb.store.migrate.create`), without replaying every migration;
# tests/backends/test_migrations.py checks that both roads give the same schema.
_FTS_COLUMNS = "text, heading_path, situation"
SQLITE_DDL = (
    # Full text over chunk text, headings and the contexts written for them (kb enrich): FTS5, external
    # content (the text is stored once, in chunks). New chunks are indexed in bulk by the write that adds
    # them (kb.store.fulltext); triggers keep deletes and edits (a context written) exact.
    f"CREATE VIRTUAL TABLE chunks_fts USING fts5({_FTS_COLUMNS}, content='chunks', "
    "content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN "
    f"INSERT INTO chunks_fts(chunks_fts, rowid, {_FTS_COLUMNS}) "
    "VALUES ('delete', old.id, old.text, old.heading_path, old.situation); END",
    f"CREATE TRIGGER chunks_fts_update AFTER UPDATE OF {_FTS_COLUMNS} ON chunks BEGIN "
    f"INSERT INTO chunks_fts(chunks_fts, rowid, {_FTS_COLUMNS}) "
    "VALUES ('delete', old.id, old.text, old.heading_path, old.situation); "
    f"INSERT INTO chunks_fts(rowid, {_FTS_COLUMNS}) "
    "VALUES (new.id, new.text, new.heading_path, new.situation); END",
)
POSTGRES_DDL = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    "ALTER TABLE chunks ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', text || ' ' || heading_path)) STORED",
    "CREATE INDEX ix_chunks_search_vector ON chunks USING gin (search_vector)",
    # The contexts apart: searches of a space that does not embed them use search_vector alone, as before.
    "ALTER TABLE chunks ADD COLUMN situation_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', situation)) STORED",
    "CREATE INDEX ix_chunks_situation_vector ON chunks USING gin (situation_vector)",
)


def table_of(model: type[Base]) -> Table:
    """The Core table behind a model, for bulk statements on hot paths."""
    return cast(Table, model.__table__)
