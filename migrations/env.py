"""Alembic environment. kb passes its own connection (with sqlite-vec loaded) in
`config.attributes["connection"]`; the `alembic` CLI in a checkout builds one from `KB_DB` instead."""

from alembic import context

from kb.store.schema import metadata

# Virtual tables (FTS5, sqlite-vec) and their shadow tables are raw DDL, not part of the ORM metadata:
# without this filter autogenerate would propose dropping them.
_UNMANAGED_PREFIXES = ("vec_", "chunks_fts", "sqlite_")


# PostgreSQL's full text: a generated tsvector column and its GIN index, raw DDL like FTS5 on SQLite.
_UNMANAGED_INDEXES = {"ix_chunks_fulltext", "ix_chunks_search_vector", "ix_chunks_situation_vector"}
_UNMANAGED_COLUMNS = {"search_vector", "situation_vector"}


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    if type_ == "table" and name is not None:
        return not name.startswith(_UNMANAGED_PREFIXES)
    if type_ == "column":
        return name not in _UNMANAGED_COLUMNS
    return not (type_ == "index" and name in _UNMANAGED_INDEXES)


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        from kb.settings import KbSettings
        from kb.store.engine import create_engine

        with create_engine(KbSettings().db).connect() as own_connection:
            _run(own_connection)
            own_connection.commit()
        return
    _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,
        include_name=include_name,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
