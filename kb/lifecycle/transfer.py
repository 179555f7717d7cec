"""Copy a knowledge base to another database (SQLite to PostgreSQL, say) without re-embedding anything.

Every row keeps its id, so tasks still point at their jobs and vectors at their tasks; vectors are read
from the source's vector tables and written to the target's. Jobs in flight are copied too: the target's
worker goes on polling them, so nothing paid for is lost.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from kb.errors import InputError
from kb.store import copy, fulltext, migrate, spaces, vectors
from kb.store.engine import write_transaction
from kb.store.reader import ConnectionReader

_BATCH = 5_000
# For building each HNSW index once, after its vectors are in: this transaction only.
_INDEX_BUILD_MEMORY = "512MB"


@dataclass(slots=True)
class TransferReport:
    rows: dict[str, int] = field(default_factory=dict)
    vectors: dict[int, int] = field(default_factory=dict)


def copy_database(
    source: Engine, target: Engine, on_progress: Callable[[str, int], None] | None = None
) -> TransferReport:
    """Copy everything from `source` into the empty, migrated `target`."""
    migrate.ensure_current(target)
    with target.connect() as connection:
        if copy.holds_documents(connection):
            raise InputError("the target database already holds documents: copy into an empty one")
    report = TransferReport()
    for name in copy.TABLE_NAMES:
        copied = 0
        with source.connect() as reading:
            for rows in copy.read_rows(reading, name, _BATCH):
                with write_transaction(target) as writing:
                    copy.insert_rows(writing, name, rows)
                copied += len(rows)
        report.rows[name] = copied
        if on_progress is not None:
            on_progress(name, copied)
    with write_transaction(target) as writing:
        fulltext.rebuild(writing)  # the copied chunks (SQLite's index is kept by kb's writes, not triggers)
    with source.connect() as connection:
        source_spaces = spaces.all_spaces(connection)
    for space in source_spaces:
        copied = 0
        # Streamed block by block: memory stays at one block of vectors, whatever the size of the space.
        with source.connect() as reading, write_transaction(target) as writing:
            vectors.create_table(writing, space.id, space.dimensions, index=False)
            for ids, block in vectors.batches(ConnectionReader(reading), space.id, space.dimensions, _BATCH):
                vectors.write(writing, space.id, ids, block)
                copied += len(ids)
            vectors.create_index(writing, space.id, space.dimensions, work_mem=_INDEX_BUILD_MEMORY)
        report.vectors[space.id] = copied
    copy.restart_sequences(target)
    return report
