"""documents: metadata stored flat, as `kb search --where` reads it

Documents ingested before kept their front matter as parsed: keys as written, nested mappings, nulls. Each
row's metadata becomes what kb.core.metadata.normalize makes of it now: keys lower-case, nested mappings
flattened with dots, lists of scalars, nulls and empty values left out. No column changes; a downgrade
leaves the flat form, which older kb versions read as any other metadata.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 13:00:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MAX_DEPTH = 32


def _key(key: object) -> str:
    return " ".join(str(key).split()).lower()


def _flatten(flat: dict[str, object], key: str, value: object, in_list: bool, depth: int) -> None:
    """kb.core.metadata.normalize as of this revision, for values already JSON (frozen here: a migration
    must not change later)."""
    if not key or depth > _MAX_DEPTH:
        return
    if isinstance(value, dict):
        for sub, item in value.items():
            sub_key = _key(sub)
            _flatten(flat, f"{key}.{sub_key}" if sub_key else "", item, in_list, depth + 1)
    elif isinstance(value, list):
        flat.setdefault(key, [])
        for item in value:
            _flatten(flat, key, item, True, depth + 1)
    else:
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "":
            return
        previous = flat.get(key)
        if not in_list and not isinstance(previous, list):
            flat[key] = value
            return
        listed = previous if isinstance(previous, list) else ([] if previous is None else [previous])
        if value not in listed:
            listed.append(value)
        flat[key] = listed


def _normalized(metadata: object) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in (metadata if isinstance(metadata, dict) else {}).items():
        _flatten(flat, _key(key), value, False, 0)
    return {key: value for key, value in flat.items() if value != []}


def upgrade() -> None:
    """Upgrade schema."""
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, metadata FROM documents ORDER BY id"))
    changed = []
    for document_id, stored in rows:
        metadata = json.loads(stored) if isinstance(stored, str | bytes) else stored
        flat = _normalized(metadata)
        if flat != metadata:
            changed.append({"i": document_id, "m": json.dumps(flat)})
    cast = "CAST(:m AS JSON)" if connection.dialect.name == "postgresql" else ":m"
    for start in range(0, len(changed), 10_000):
        connection.execute(
            sa.text(f"UPDATE documents SET metadata = {cast} WHERE id = :i"), changed[start : start + 10_000]
        )


def downgrade() -> None:
    """Downgrade schema."""
