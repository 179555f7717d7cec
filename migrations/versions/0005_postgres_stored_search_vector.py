"""postgres: a stored tsvector column for full text, instead of an expression index

Ranking with the expression index recomputed to_tsvector for every matching chunk on every query; a stored
generated column is computed once, at write time. SQLite (FTS5) is unchanged.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 02:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DOCUMENT = "to_tsvector('english', text || ' ' || heading_path)"


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE chunks ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({DOCUMENT}) STORED")
    op.execute("CREATE INDEX ix_chunks_search_vector ON chunks USING gin (search_vector)")
    op.execute("DROP INDEX IF EXISTS ix_chunks_fulltext")


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"CREATE INDEX ix_chunks_fulltext ON chunks USING gin ({DOCUMENT})")
    op.execute("DROP INDEX IF EXISTS ix_chunks_search_vector")
    op.execute("ALTER TABLE chunks DROP COLUMN search_vector")
