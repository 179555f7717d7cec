"""sqlite: every space's vectors get compact codes (sign bits and int8 levels), for the quantized index

The codes live in `vec_codes_<space>` blocks beside the space's vec0 table, with the quantizer that made them
in `vec_quantizer_<space>`; kb writes them in the same transaction as the vectors from now on. This codes
the vectors already stored (about 10 s per million). PostgreSQL is unchanged (pgvector's HNSW index).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from kb.store import vectors

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _spaces_with_vector_tables() -> list[tuple[int, int]]:
    connection = op.get_bind()
    tables = {
        str(name)
        for (name,) in connection.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'table'"))
    }
    rows = connection.execute(sa.text("SELECT id, dimensions FROM embedding_spaces ORDER BY id"))
    return [(int(i), int(d)) for i, d in rows if vectors.table_name(int(i)) in tables]


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name != "sqlite":
        return
    for space_id, dimensions in _spaces_with_vector_tables():
        vectors.rebuild_codes(op.get_bind(), space_id, dimensions)


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name != "sqlite":
        return
    for space_id, _ in _spaces_with_vector_tables():
        op.execute(f"DROP TABLE IF EXISTS {vectors.codes_table(space_id)}")
        op.execute(f"DROP TABLE IF EXISTS {vectors.quantizer_table(space_id)}")
