"""Contextual chunk headers: new spaces embed each chunk headed by its document title and heading path; spaces
made before keep what they embed, and `kb reindex` moves a knowledge base from one to the other."""

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.embed.worker import ExitReason
from kb.records import ChunkInput, SearchMode
from kb.settings import LOCAL_MODEL, KbSettings
from kb.testing.gemini_emulator import GeminiEmulator
from tests.support.files import write
from tests.support.settings import FAST_SETTINGS

SECTION = (
    "Creates a unique temporary directory whose name starts with the given prefix, and returns its path "
    "to the callback once the directory exists on disk."
)
SHARED = "Every option listed here can also be given as an environment variable with the same name."


def _fs_doc(folder: Path) -> Path:
    return write(folder / "fs.md", f"# Node.js fs\n\n## File system\n\n### fs.mkdtemp(prefix)\n\n{SECTION}\n")


def _scalars(kb: KnowledgeBase, sql: str) -> list[object]:
    with kb.engine.connect() as connection:
        return [row[0] for row in connection.exec_driver_sql(sql)]


def test_a_new_space_embeds_each_chunk_under_its_title_and_headings(
    gemini_settings: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    with KnowledgeBase(settings=gemini_settings.model_copy(update=FAST_SETTINGS)) as kb:
        kb.ingest([_fs_doc(tmp_path / "docs")])
        assert kb.worker().run(once=True, timeout_s=60).reason == ExitReason.DRAINED
        assert [s.chunk_input for s in kb.status().spaces] == [ChunkInput.HEADED]
        hit = kb.search("temporary directory prefix", mode=SearchMode.VECTOR).hits[0]
    embedded = [text for _, _, text in emulator.embedded_texts(mode="batch")]
    assert embedded == [
        f"Node.js fs > File system > fs.mkdtemp(prefix)\n\n### fs.mkdtemp(prefix)\n\n{SECTION}"
    ]
    assert hit.text.startswith("### fs.mkdtemp(prefix)")  # what people see is the chunk, not its input


def test_the_same_text_under_two_headings_is_two_inputs_and_costs_two_embeddings(
    settings: KbSettings, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    write(folder / "server.md", f"# Server\n\n## Options\n\n{SHARED}\n")
    write(folder / "client.md", f"# Client\n\n## Options\n\n{SHARED}\n")
    for headers, tasks in ((False, 1), (True, 2)):
        db = tmp_path / f"headers-{headers}.sqlite"
        local = settings.model_copy(update={"db": db, "chunk_headers": headers, **FAST_SETTINGS})
        with KnowledgeBase(settings=local) as kb:
            report = kb.ingest([folder])
            assert report.tasks_queued == tasks
            assert len(set(_scalars(kb, "SELECT text_sha256 FROM chunks"))) == 1


def test_a_space_from_before_headers_keeps_its_vectors_and_reindex_moves_it(
    settings: KbSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    folder = tmp_path / "docs"
    _fs_doc(folder)
    write(folder / "other.md", f"# Configuration\n\n## Options\n\n{SHARED}\n")
    before = settings.model_copy(update={"chunk_headers": False, **FAST_SETTINGS})
    with KnowledgeBase(settings=before) as kb:  # as a knowledge base made before chunk headers
        kb.ingest([folder])
        assert kb.worker().run(once=True, timeout_s=60).reason == ExitReason.DRAINED
    now = settings.model_copy(update=FAST_SETTINGS)  # headers on, as by default
    with KnowledgeBase(settings=now) as kb:
        assert kb.ingest([folder]).tasks_queued == 0  # nothing it paid for changes
        old = kb.search("temporary directory", mode=SearchMode.VECTOR)
        assert old.used == SearchMode.VECTOR and old.hits[0].path.endswith("fs.md")
        assert old.space_label is not None and "chunk text only" in old.space_label

    monkeypatch.setenv("KB_DB", str(settings.db))
    monkeypatch.setenv("KB_PROVIDER", "local")
    estimate = runner.invoke(app, ["reindex", "--model", LOCAL_MODEL, "--estimate", "--json"])
    assert estimate.exit_code == 0, estimate.output
    assert json.loads(estimate.stdout)["texts"] == 2  # every chunk's headed input is new
    same = runner.invoke(app, ["reindex", "--model", LOCAL_MODEL, "--no-headers", "--yes"])
    assert same.exit_code == 2 and "without chunk headers" in same.output
    started = runner.invoke(app, ["reindex", "--model", LOCAL_MODEL, "--yes"])
    assert started.exit_code == 0, started.output

    with KnowledgeBase(settings=now) as kb:
        assert kb.worker().run(once=True, timeout_s=60).reason == ExitReason.DRAINED
        spaces = {s.id: (s.state, s.chunk_input) for s in kb.status().spaces}
        assert spaces == {1: ("retired", "text"), 2: ("active", "headed")}
        moved = kb.search("temporary directory", mode=SearchMode.VECTOR)
        assert moved.space_id == 2 and moved.hits[0].path.endswith("fs.md")
        assert moved.space_label is not None and "chunk text only" not in moved.space_label
        headed = f"Node.js fs > File system > fs.mkdtemp(prefix)\n\n### fs.mkdtemp(prefix)\n\n{SECTION}"
        assert hashlib.sha256(headed.encode()).hexdigest() in _scalars(kb, "SELECT input_sha256 FROM chunks")
