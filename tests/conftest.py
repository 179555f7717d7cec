import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.settings import KbSettings

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
FASTAPI_DOCS = CORPUS / "fastapi-docs"
PROJECT_ROOT = Path(__file__).resolve().parents[1]

_FOREIGN_VARIABLES = {"GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's keys, database or `.env`: each runs in its own empty folder."""
    for name in list(os.environ):
        if name.startswith("KB_") or name in _FOREIGN_VARIABLES:
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "kb.sqlite"


@pytest.fixture
def settings(db_path: Path) -> KbSettings:
    return KbSettings(db=db_path, provider="local")


@pytest.fixture
def kb(settings: KbSettings) -> Iterator[KnowledgeBase]:
    with KnowledgeBase(settings=settings) as knowledge_base:
        yield knowledge_base


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
