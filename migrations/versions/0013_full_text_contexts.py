"""full text reads the contexts a generation model wrote for chunks (contextual BM25, issue 24)

SQLite: `chunks_fts` gains a third column, `situation`, and is rebuilt from the chunks (external content:
the text is still stored once); the triggers keep it exact when a chunk's situation is written. Searches
read that column only while the space searched embeds situated chunks (kb.store.fulltext).
PostgreSQL: a second stored tsvector, `situation_vector`, with its own GIN index, so that searches of other
spaces use `search_vector` exactly as before.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 17:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sqlite_ddl(columns: Sequence[str]) -> list[str]:
    """chunks_fts over `columns` and the triggers that keep it exact, as of this revision (frozen)."""
    names = ", ".join(columns)
    old = ", ".join(f"old.{column}" for column in columns)
    new = ", ".join(f"new.{column}" for column in columns)
    return [
        f"CREATE VIRTUAL TABLE chunks_fts USING fts5({names}, content='chunks', "
        "content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')",
        "CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN "
        f"INSERT INTO chunks_fts(chunks_fts, rowid, {names}) VALUES ('delete', old.id, {old}); END",
        f"CREATE TRIGGER chunks_fts_update AFTER UPDATE OF {names} ON chunks BEGIN "
        f"INSERT INTO chunks_fts(chunks_fts, rowid, {names}) VALUES ('delete', old.id, {old}); "
        f"INSERT INTO chunks_fts(rowid, {names}) VALUES (new.id, {new}); END",
        "INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')",
    ]


_DROP_SQLITE = (
    "DROP TRIGGER IF EXISTS chunks_fts_update",
    "DROP TRIGGER IF EXISTS chunks_fts_delete",
    "DROP TABLE IF EXISTS chunks_fts",
)
SITUATION = "to_tsvector('english', situation)"


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"ALTER TABLE chunks ADD COLUMN situation_vector tsvector GENERATED ALWAYS AS ({SITUATION}) STORED"
        )
        op.execute("CREATE INDEX ix_chunks_situation_vector ON chunks USING gin (situation_vector)")
        return
    for statement in (*_DROP_SQLITE, *_sqlite_ddl(("text", "heading_path", "situation"))):
        op.execute(statement)


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_chunks_situation_vector")
        op.execute("ALTER TABLE chunks DROP COLUMN situation_vector")
        return
    for statement in (*_DROP_SQLITE, *_sqlite_ddl(("text", "heading_path"))):
        op.execute(statement)
