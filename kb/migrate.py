"""Alembic from code, on kb's own connection (no alembic.ini): upgrade, current revision, head."""

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

import kb


def script_location() -> Path:
    """`kb/_migrations` in an installed wheel, else the checkout's top-level `migrations/`."""
    package_dir = Path(kb.__file__).resolve().parent
    for candidate in (package_dir / "_migrations", package_dir.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("kb's migrations folder is missing from this installation")


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, lambda config: command.upgrade(config, revision))


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, lambda config: command.downgrade(config, revision))


def _run(engine: Engine, step: Callable[[Config], None]) -> None:
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


def ensure_current(engine: Engine) -> None:
    """Bring the database to the newest schema; a no-op (one read) when it is already there."""
    if current_revision(engine) != head_revision():
        upgrade(engine)
