"""sqlite: chunks are added to the full-text index in bulk, per write, not by a trigger per row

The per-row `AFTER INSERT` trigger made storing a chunk cost 3-4x what it had to (FTS5 indexes many rows
at once far faster than one at a time). `kb.store.fulltext.index_new` indexes each write's new chunks with one
`INSERT ... SELECT`; the delete and update triggers stay, so removals and edits remain exact. PostgreSQL is
unchanged (a stored tsvector column).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 11:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INSERT_TRIGGER = (
    "CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN "
    "INSERT INTO chunks_fts(rowid, text, heading_path) VALUES (new.id, new.text, new.heading_path); END"
)


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS chunks_fts_insert")


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(INSERT_TRIGGER)
