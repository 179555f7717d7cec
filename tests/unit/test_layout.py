"""The layout is the architecture (docs/architecture.md): these checks keep it so as the code changes."""

import ast
from pathlib import Path

import kb

PACKAGE = Path(kb.__file__).resolve().parent
SQL_BUILDERS = {"select", "update", "insert", "delete", "and_", "or_", "func", "case", "exists", "text"}


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for each `from module import name` in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.module or "", alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]


def _outside_the_store() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in {"store", "testing"}
    ]


def test_only_the_store_builds_sql_or_touches_schema_tables() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}: {module}.{name}"
        for path in _outside_the_store()
        for module, name in _imports(path)
        if (module.split(".")[0] == "sqlalchemy" and name in SQL_BUILDERS) or module == "kb.store.schema"
    ]
    assert offenders == []


def test_the_top_of_the_package_holds_only_the_doors_and_the_foundation() -> None:
    modules = sorted(path.stem for path in PACKAGE.glob("*.py") if not path.stem.startswith("__"))
    assert len(modules) <= 8, modules
    stages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    assert {"core", "store", "providers", "embed", "search", "lifecycle", "report", "cli", "serve"} <= stages
