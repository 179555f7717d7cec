"""The schema revision, and Alembic from code on kb's own connection (no alembic.ini) to migrate.

Checking the revision is one plain query, with no Alembic import: every command checks it on open, and Alembic
(with its templates and autogenerate machinery) costs more to import than the check itself. `REVISIONS` lists
the migrations in order; tests/backends/test_migrations.py checks it against Alembic's own view.
"""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kb.errors import DatabaseError
from kb.store import readmodel
from kb.store.reader import ConnectionReader

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection, Engine

REVISIONS = (
    "0001",
    "0002",
    "0003",
    "0004",
    "0005",
    "0006",
    "0007",
    "0008",
    "0009",
    "0010",
    "0011",
    "0012",
    "0013",
)
HEAD = REVISIONS[-1]


def script_location() -> Path:
    """`kb/_migrations` in an installed wheel, else the checkout's top-level `migrations/`."""
    package_dir = Path(__file__).resolve().parents[1]  # kb/, this file being kb/store/migrate.py
    for candidate in (package_dir / "_migrations", package_dir.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("kb's migrations folder is missing from this installation")


def head_revision() -> str:
    return HEAD


def current_revision(engine: "Engine") -> str | None:
    """The database's revision (None: an empty database). One plain query."""
    with engine.connect() as connection:
        return readmodel.revision(ConnectionReader(connection))


def check_revision(current: str | None) -> str | None:
    """`current`, or DatabaseError for a database written by a newer kb (never migrated down)."""
    if current is not None and current not in REVISIONS:
        raise DatabaseError(
            f"this database was written by a newer kb (schema {current}; this kb knows up to {HEAD}): "
            "upgrade kb (pip install -U kb) to use it"
        )
    return current


def check(engine: "Engine") -> str | None:
    return check_revision(current_revision(engine))


def ensure_current(engine: "Engine") -> None:
    """Bring the database to the newest schema: create a new one at once, migrate an older one; one read
    when it is already there."""
    current = check(engine)
    if current == HEAD:
        return
    if current is None and _empty(engine):
        create(engine)
    else:
        upgrade(engine)


def create(engine: "Engine") -> None:
    """A new database at the newest schema, from the metadata and the DDL it cannot express, stamped with
    the head revision (what Alembic's cookbook calls create_all + stamp): no migration replayed, and no
    Alembic import, on a user's first command."""
    from kb.store import schema

    with engine.connect() as connection:
        connection = connection.execution_options(kb_begin="IMMEDIATE")
        with connection.begin():
            schema.metadata.create_all(connection)
            extra = schema.POSTGRES_DDL if connection.dialect.name == "postgresql" else schema.SQLITE_DDL
            for statement in extra:
                connection.exec_driver_sql(statement)
            connection.exec_driver_sql(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
            connection.exec_driver_sql(f"INSERT INTO alembic_version (version_num) VALUES ('{HEAD}')")


def _empty(engine: "Engine") -> bool:
    """No table of any kind: a database kb may create from scratch."""
    with engine.connect() as connection:
        reader = ConnectionReader(connection)
        if reader.dialect == "postgresql":
            sql = "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        else:
            sql = "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'view')"
        return not reader.rows(sql)[0][0]


def upgrade(engine: "Engine", revision: str = "head") -> None:
    from alembic import command

    _run(engine, lambda config: command.upgrade(config, revision))


def downgrade(engine: "Engine", revision: str) -> None:
    from alembic import command

    _run(engine, lambda config: command.downgrade(config, revision))


def alembic_head() -> str | None:
    """Alembic's own view of the newest revision (for the test that keeps REVISIONS true)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def _config(connection: "Connection | None" = None) -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _run(engine: "Engine", step: "Callable[[Config], None]") -> None:
    """Run a migration step with foreign keys off, as SQLite's table rebuilds require: dropping a parent
    table with them on would cascade-delete its children's rows."""
    with engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            step(_config(connection))
            connection.commit()
            return
        driver_connection = connection.connection.dbapi_connection
        assert driver_connection is not None
        driver_connection.execute("PRAGMA foreign_keys=OFF")  # outside any transaction, or it is ignored
        try:
            connection = connection.execution_options(kb_begin="IMMEDIATE")
            step(_config(connection))
            connection.commit()
        finally:
            driver_connection.execute("PRAGMA foreign_keys=ON")
