"""chunks: where each sits (context) and the key of its headed input; spaces: what they embed

Spaces made from now on embed a chunk headed by its document title and heading path (kb.core.inputs);
their tasks are keyed by `chunks.input_sha256`. Spaces that exist already keep embedding the chunk text
alone (`chunk_input` 'text', keyed by `text_sha256` as before): nothing they paid for changes, and
`kb reindex` moves a knowledge base to a headed space. A space's spec now includes what it embeds.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 09:00:00
"""

import hashlib
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_UNIQUE = "uq_embedding_spaces_provider_model_dimensions_task_type"
_NEW_UNIQUE = "uq_embedding_spaces_spec"  # the full column list is longer than PostgreSQL allows
_SPACE = re.compile(r"\s+")


def _context(title: str, heading_path: str) -> str:
    """kb.core.inputs.context_line as of this revision (frozen here: a migration must not change later)."""
    parts = [p for p in (_SPACE.sub(" ", h).strip() for h in heading_path.split(" > ")) if p]
    title = _SPACE.sub(" ", title).strip()
    if title and not (parts and parts[0].casefold() == title.casefold()):
        parts.insert(0, title)
    return " > ".join(parts)


def _backfill(connection: sa.engine.Connection) -> None:
    rows = connection.execute(
        sa.text(
            "SELECT c.id, c.text, c.heading_path, d.title FROM chunks c "
            "JOIN documents d ON d.id = c.document_id ORDER BY c.id"
        )
    )
    while block := rows.fetchmany(10_000):
        values = []
        for chunk_id, text, heading_path, title in block:
            context = _context(title or "", heading_path or "")
            headed = f"{context}\n\n{text}" if context else text
            values.append(
                {"i": chunk_id, "c": context, "s": hashlib.sha256(headed.encode("utf-8")).hexdigest()}
            )
        connection.execute(sa.text("UPDATE chunks SET context = :c, input_sha256 = :s WHERE id = :i"), values)


def upgrade() -> None:
    """Upgrade schema."""
    # Plain ALTER TABLE ADD COLUMN on chunks: a batch-mode copy would lose its full-text triggers.
    op.add_column("chunks", sa.Column("context", sa.Text(), server_default="", nullable=False))
    op.add_column(
        "chunks", sa.Column("input_sha256", sa.String(length=64), server_default="", nullable=False)
    )
    _backfill(op.get_bind())
    op.create_index(op.f("ix_chunks_input_sha256"), "chunks", ["input_sha256"], unique=False)
    # kb runs migrations with foreign keys off, so the table copy of a batch does not cascade to children.
    with op.batch_alter_table("embedding_spaces", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("chunk_input", sa.String(length=16), server_default="text", nullable=False)
        )
        batch_op.drop_constraint(_OLD_UNIQUE, type_="unique")
        batch_op.create_unique_constraint(
            _NEW_UNIQUE, ["provider", "model", "dimensions", "task_type", "chunk_input"]
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("embedding_spaces", schema=None) as batch_op:
        batch_op.drop_constraint(_NEW_UNIQUE, type_="unique")
        batch_op.create_unique_constraint(_OLD_UNIQUE, ["provider", "model", "dimensions", "task_type"])
        batch_op.drop_column("chunk_input")
    op.drop_index(op.f("ix_chunks_input_sha256"), table_name="chunks")
    op.drop_column("chunks", "input_sha256")
    op.drop_column("chunks", "context")
