"""batch jobs: the remote call a job is in (intent), and failed steps in a row

`intent` is committed before a remote call that creates something (an upload, a batch job) and cleared
when its result is recorded: a job found with an intent was interrupted mid-call, so what it may have
created is looked up before anything is sent again. `step_failures` bounds the retries of a job whose
results cannot be fetched.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # Plain ALTER TABLE ADD COLUMN: a batch-mode table copy would drop batch_jobs, and with it (through the
    # foreign keys) every job manifest.
    op.add_column("batch_jobs", sa.Column("intent", sa.String(length=16), nullable=True))
    op.add_column("batch_jobs", sa.Column("step_failures", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("batch_jobs", schema=None) as batch_op:
        batch_op.drop_column("step_failures")
        batch_op.drop_column("intent")
