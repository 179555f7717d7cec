"""Migrations and models agree, and the schema round-trips."""

import json
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from kb.store import migrate, schema
from kb.store.engine import create_engine


def test_upgrade_from_empty_reaches_head(db_path: Path) -> None:
    engine = create_engine(db_path)
    assert migrate.current_revision(engine) is None
    migrate.ensure_current(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_migrations_match_models(db_path: Path) -> None:
    engine = create_engine(db_path)
    migrate.upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"include_name": _managed, "compare_type": True},
        )
        diff = compare_metadata(context, schema.metadata)
    assert diff == []


def _managed(name: str | None, type_: str, _parents: object) -> bool:
    if type_ == "index":
        return name not in ("ix_chunks_fulltext", "ix_chunks_search_vector", "ix_chunks_situation_vector")
    if type_ == "column":
        return name not in ("search_vector", "situation_vector")
    return not (type_ == "table" and name is not None and name.startswith(("vec_", "chunks_fts")))


def test_downgrade_and_upgrade_round_trip(db_path: Path) -> None:
    engine = create_engine(db_path)
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
    assert tables <= {"alembic_version"}
    migrate.upgrade(engine)
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
    assert {"documents", "chunks", "chunks_fts", "embedding_tasks", "batch_jobs"} <= tables


def test_full_text_index_follows_chunks(db_path: Path) -> None:
    """New chunks are indexed in bulk by the write that adds them; edits and deletes by triggers."""
    from kb.store import fulltext

    engine = create_engine(db_path)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        before = fulltext.last_chunk_id(connection)
        _document_with_a_chunk(connection, 7, "Rotating keys safely", "Security > Keys")
        fulltext.index_new(connection, before)
    query = "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?"
    with engine.begin() as connection:
        assert connection.exec_driver_sql(query, ("rotate",)).scalars().all() == [7]
        assert connection.exec_driver_sql(query, ("security",)).scalars().all() == [7]
        connection.exec_driver_sql("UPDATE chunks SET text = 'Something else' WHERE id = 7")
        assert connection.exec_driver_sql(query, ("rotate",)).scalars().all() == []
        connection.exec_driver_sql("DELETE FROM documents")
        assert connection.exec_driver_sql(query, ("something",)).scalars().all() == []


def test_the_revision_list_matches_the_migrations() -> None:
    """kb checks the schema with one plain query against `REVISIONS`, without importing Alembic: the list
    must name every migration, in order, ending at Alembic's head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrate.script_location()))
    chain = [script.revision for script in ScriptDirectory.from_config(config).walk_revisions()]
    assert tuple(reversed(chain)) == migrate.REVISIONS
    assert migrate.alembic_head() == migrate.HEAD


def test_a_database_from_a_newer_kb_is_refused_not_migrated(db_path: Path) -> None:
    import pytest

    from kb.errors import DatabaseError

    engine = create_engine(db_path)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(DatabaseError, match=r"written by a newer kb .schema 0099.*upgrade kb"):
        migrate.ensure_current(engine)
    assert migrate.current_revision(engine) == "0099"  # untouched


def test_chunks_stored_before_headers_get_their_context_and_old_spaces_keep_their_chunk_text(
    db_path: Path,
) -> None:
    import hashlib

    engine = create_engine(db_path)
    migrate.upgrade(engine, "0009")
    with engine.begin() as connection:
        _document_with_a_chunk(connection, 1, "Run it.", "Guide > Install", title="Guide")
        connection.exec_driver_sql(
            "INSERT INTO embedding_spaces (id, provider, model, dimensions, task_type, normalized, state,"
            " created_at) VALUES (1, 'local', 'm', 8, 'RETRIEVAL_DOCUMENT', 1, 'active', 0)"
        )
    migrate.upgrade(engine)
    with engine.connect() as connection:
        context, key = connection.exec_driver_sql("SELECT context, input_sha256 FROM chunks").one()
        chunk_input = connection.exec_driver_sql("SELECT chunk_input FROM embedding_spaces").scalar_one()
    assert context == "Guide > Install"
    assert key == hashlib.sha256(b"Guide > Install\n\nRun it.").hexdigest()
    assert chunk_input == "text"


def test_chunks_indexed_before_contexts_stay_searchable_and_their_contexts_are_indexed(db_path: Path) -> None:
    """0013 rebuilds chunks_fts with a situation column from the chunks already there."""
    engine = create_engine(db_path)
    migrate.upgrade(engine, "0012")
    with engine.begin() as connection:
        _document_with_a_chunk(connection, 7, "Rotating keys safely", "Security > Keys")
        connection.exec_driver_sql("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
    migrate.upgrade(engine)
    query = "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?"
    with engine.begin() as connection:
        assert connection.exec_driver_sql(query, ("rotate",)).scalars().all() == [7]
        connection.exec_driver_sql("UPDATE chunks SET situation = 'From the vault handbook' WHERE id = 7")
        assert connection.exec_driver_sql(query, ("vault",)).scalars().all() == [7]
        assert connection.exec_driver_sql(query, ("{text heading_path} : vault",)).scalars().all() == []
        connection.exec_driver_sql("UPDATE chunks SET situation = '' WHERE id = 7")
        assert connection.exec_driver_sql(query, ("vault",)).scalars().all() == []


def test_metadata_stored_before_where_is_made_flat(db_path: Path) -> None:
    """Front matter kept as parsed (keys as written, nested, nulls) becomes what `--where` reads."""
    engine = create_engine(db_path)
    migrate.upgrade(engine, "0010")
    nested = {"Title": "Guide", "Author": {"Name": "Ada", "Mail": None}, "Tags": ["API", "cli", "API"]}
    with engine.begin() as connection:
        for number, metadata in ((1, nested), (2, {})):
            connection.exec_driver_sql(
                "INSERT INTO documents (id, source_path, content_sha256, title, source_format, mtime_ns,"
                " size, metadata, created_at, updated_at)"
                " VALUES (?, ?, '', 'Guide', 'markdown', 0, 0, ?, 0, 0)",
                (number, f"/d/{number}.md", json.dumps(metadata)),
            )
    migrate.upgrade(engine)
    with engine.connect() as connection:
        stored = dict(connection.exec_driver_sql("SELECT id, metadata FROM documents").all())
    assert json.loads(stored[1]) == {"title": "Guide", "author.name": "Ada", "tags": ["API", "cli"]}
    assert json.loads(stored[2]) == {}


def _document_with_a_chunk(
    connection: sa.engine.Connection, chunk_id: int, text: str, heading_path: str, title: str = "A"
) -> None:
    """Document 1 and one chunk of it, in columns every revision since 0001 has."""
    connection.exec_driver_sql(
        "INSERT INTO documents (id, source_path, content_sha256, title, source_format, mtime_ns, size,"
        " metadata, created_at, updated_at) VALUES (1, '/a.md', 'x', ?, 'markdown', 0, 1, '{}', 0, 0)",
        (title,),
    )
    connection.exec_driver_sql(
        "INSERT INTO chunks (id, document_id, ordinal, text, text_sha256, token_estimate, heading_path,"
        " start_offset, end_offset) VALUES (?, 1, 0, ?, 'h', 3, ?, 0, ?)",
        (chunk_id, text, heading_path, len(text)),
    )
