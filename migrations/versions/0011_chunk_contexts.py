"""chunk contexts: what a generation model wrote to situate each chunk in its document (issue 24)

A space in state 'contexts' is filled by a Gemini generation model through the same job ledger as
embeddings: its tasks are keyed by `chunks.context_key` (the sha256 of the document's and the chunk's
sha256), so a chunk of an unchanged document is never sent twice. What comes back is kept in
`chunk_contexts` (outliving the chunks, for re-ingests) and copied to `chunks.situation`; spaces with
chunk_input 'situated' embed it before the chunk, keyed by `chunks.situated_sha256`. Usage records gain
the output tokens generation bills.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 12:00:00
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _context_key(document_sha256: str, text_sha256: str) -> str:
    """kb.core.contexts.context_key as of this revision (frozen: a migration must not change later)."""
    return hashlib.sha256(f"{document_sha256}:{text_sha256}".encode("ascii")).hexdigest()


def _backfill(connection: sa.engine.Connection) -> None:
    rows = connection.execute(
        sa.text(
            "SELECT c.id, c.text_sha256, d.content_sha256 FROM chunks c "
            "JOIN documents d ON d.id = c.document_id ORDER BY c.id"
        )
    )
    while block := rows.fetchmany(10_000):
        values = [{"i": i, "k": _context_key(document, text)} for i, text, document in block]
        connection.execute(sa.text("UPDATE chunks SET context_key = :k WHERE id = :i"), values)


def upgrade() -> None:
    """Upgrade schema."""
    # Plain ALTER TABLE ADD COLUMN on chunks: a batch-mode copy would lose its full-text triggers.
    for name in ("context_key", "situated_sha256"):
        op.add_column("chunks", sa.Column(name, sa.String(length=64), server_default="", nullable=False))
    op.add_column("chunks", sa.Column("situation", sa.Text(), server_default="", nullable=False))
    _backfill(op.get_bind())
    op.create_index(op.f("ix_chunks_context_key"), "chunks", ["context_key"], unique=False)
    op.create_index(op.f("ix_chunks_situated_sha256"), "chunks", ["situated_sha256"], unique=False)
    op.create_table(
        "chunk_contexts",
        sa.Column("space_id", sa.Integer(), nullable=False),
        sa.Column("context_key", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["space_id"],
            ["embedding_spaces.id"],
            name=op.f("fk_chunk_contexts_space_id_embedding_spaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("space_id", "context_key", name=op.f("pk_chunk_contexts")),
    )
    op.add_column(
        "usage_records", sa.Column("output_tokens", sa.Integer(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("usage_records", "output_tokens")
    op.drop_table("chunk_contexts")
    op.drop_index(op.f("ix_chunks_situated_sha256"), table_name="chunks")
    op.drop_index(op.f("ix_chunks_context_key"), table_name="chunks")
    for name in ("situation", "situated_sha256", "context_key"):
        op.drop_column("chunks", name)
