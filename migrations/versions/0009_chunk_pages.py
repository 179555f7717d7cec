"""chunks: the pages a chunk spans, in documents that have pages (PDF)

`page_start` and `page_end` (1-based, inclusive) let an answer cite "handbook.pdf, page 2". They stay NULL
for documents without pages and for every chunk stored before this revision.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # Plain ALTER TABLE ADD COLUMN: a batch-mode copy of chunks would lose its full-text triggers.
    op.add_column("chunks", sa.Column("page_start", sa.Integer(), nullable=True))
    op.add_column("chunks", sa.Column("page_end", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("chunks", "page_end")
    op.drop_column("chunks", "page_start")
