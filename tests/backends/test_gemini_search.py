"""End to end against the emulator: `kb ingest --now` of the test handbook, then search in every mode."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.providers.gemini import MAX_TEXTS_PER_REQUEST
from kb.records import SearchMode
from kb.search.evaluation import load_queries, recall
from kb.settings import KbSettings
from kb.testing.gemini_emulator import Fault, GeminiEmulator
from tests.support.files import HANDBOOK, HANDBOOK_QUERIES
from tests.support.settings import EMULATOR_KEY

QUERIES = load_queries(HANDBOOK_QUERIES)


@pytest.fixture
def gemini_env(monkeypatch: pytest.MonkeyPatch, emulator: GeminiEmulator, db_path: Path) -> None:
    """The CLI configured as a user would: a key in the environment and the SDK's base URL variable."""
    monkeypatch.setenv("GEMINI_API_KEY", EMULATOR_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("KB_DB", str(db_path))
    monkeypatch.setenv("KB_RETRY_BASE_DELAY_S", "0.01")


def _vectors(kb: KnowledgeBase) -> np.ndarray:
    with kb.engine.connect() as connection:
        blobs = [row[0] for row in connection.exec_driver_sql("SELECT embedding FROM vec_space_1")]
    return np.vstack([np.frombuffer(blob, dtype="<f4") for blob in blobs])


def test_ingest_now_embeds_every_chunk_once(
    gemini_env: None, emulator: GeminiEmulator, runner: CliRunner, db_path: Path
) -> None:
    result = runner.invoke(app, ["ingest", str(HANDBOOK), "--now", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # More texts than one request may carry, so that the request limit below is exercised.
    assert summary["embedded_now"]["embedded"] == summary["tasks_queued"] > MAX_TEXTS_PER_REQUEST

    with KnowledgeBase(settings=KbSettings(db=db_path)) as kb:
        status = kb.status()
        assert status.chunk_statuses["embedded"] == status.chunks
        assert status.tasks == {
            "pending": 0,
            "submitted": 0,
            "embedded": summary["tasks_queued"],
            "failed": 0,
        }
        matrix = _vectors(kb)
    assert matrix.shape == (summary["tasks_queued"], 768)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)

    embeds = [r for r in emulator.log if r.route == "batchEmbedContents"]
    assert max(r.item_count for r in embeds) <= 100
    assert {t for r in embeds for t in r.task_types} == {"RETRIEVAL_DOCUMENT"}
    billed = Counter(text for _, _, text in emulator.embedded_texts())
    assert len(billed) == summary["tasks_queued"] and set(billed.values()) == {1}


def test_storms_are_survived_without_duplicate_vectors(
    gemini_env: None, emulator: GeminiEmulator, runner: CliRunner, db_path: Path
) -> None:
    emulator.faults.add(Fault(route="batchEmbedContents", status=429, times=4, retry_delay="0.05s"))
    # The 503s come after the four 429s and the first request's success: mid-way through the ingest.
    emulator.faults.add(Fault(route="batchEmbedContents", status=503, times=3, after=5))
    result = runner.invoke(app, ["ingest", str(HANDBOOK), "--now", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["tasks_queued"] > MAX_TEXTS_PER_REQUEST  # two requests or more
    assert summary["embedded_now"]["left_pending"] == 0
    statuses = Counter(r.status for r in emulator.log)
    assert statuses[429] == 4 and statuses[503] == 3
    with KnowledgeBase(settings=KbSettings(db=db_path)) as kb:
        assert _vectors(kb).shape[0] == summary["tasks_queued"]
    billed = Counter(text for _, _, text in emulator.embedded_texts())
    assert set(billed.values()) == {1} and len(billed) == summary["tasks_queued"]


def test_search_quality_and_query_cache(gemini_settings: KbSettings, emulator: GeminiEmulator) -> None:
    with KnowledgeBase(settings=gemini_settings) as kb:
        report = kb.ingest([HANDBOOK])
        kb.embed_now(report.queued_hashes)
        emulator.reset_log()
        recalls = {mode: recall(kb, QUERIES, mode) for mode in SearchMode}
        print({mode.value: (r.at_1, r.at_5) for mode, r in recalls.items()})
        assert all(r.fell_back == 0 for r in recalls.values())
        # Measured with the emulator's hashed-word vectors on the 20 handbook questions: hybrid @1 0.65,
        # @5 0.95; vector @1 0.65, @5 0.95; text @1 0.80, @5 1.00. Each bound leaves one or two questions.
        assert recalls[SearchMode.HYBRID].at_5 >= 0.9
        assert recalls[SearchMode.VECTOR].at_5 >= 0.9
        assert recalls[SearchMode.HYBRID].at_5 >= recalls[SearchMode.TEXT].at_5 - 2 / len(QUERIES)
        query_calls = [r for r in emulator.log if r.route == "batchEmbedContents"]
        assert len(query_calls) == len(QUERIES)  # vector and hybrid share one cached vector per question
        assert {t for r in query_calls for t in r.task_types} == {"RETRIEVAL_QUERY"}
        kb.search(QUERIES[0].question)
        assert len([r for r in emulator.log if r.route == "batchEmbedContents"]) == len(QUERIES)


def test_dead_model_search_answers_from_full_text(
    gemini_env: None, emulator: GeminiEmulator, runner: CliRunner
) -> None:
    assert runner.invoke(app, ["ingest", str(HANDBOOK / "tutorial"), "--now"]).exit_code == 0
    emulator.models.shut_down("gemini-embedding-001")
    result = runner.invoke(app, ["search", "How do I enable CORS?", "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    # Only cors.md matches in full text: at most KB_HITS_PER_DOCUMENT (2) of its chunks come back.
    assert hits and {"path", "heading", "text", "score"} <= set(hits[0])
    assert {hit["path"].rsplit("/", 1)[-1] for hit in hits} == {"cors.md"}
    assert "answering from full text" in result.stderr and "gemini-embedding-001" in result.stderr


def test_search_output_for_people(gemini_env: None, runner: CliRunner) -> None:
    assert runner.invoke(app, ["ingest", str(HANDBOOK / "tutorial"), "--now"]).exit_code == 0
    result = runner.invoke(app, ["search", "background tasks after returning a response", "-k", "2"])
    assert (
        result.exit_code == 0
        and "note:" not in result.stderr
        and "searched space #1 (gemini/gemini-embedding-001" in result.stderr
    )
    assert result.stdout.startswith(" 1. ") and "background-tasks.md" in result.stdout
