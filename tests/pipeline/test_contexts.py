"""Chunk contexts (contextual retrieval) through the batch ledger: written once per chunk of a document by a
generation model at batch price, kept, embedded after the chunk in a new space, and never paid twice."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.embed.worker import ExitReason
from kb.errors import ConfigError
from kb.settings import KbSettings
from kb.testing.gemini_emulator import Fault, GeminiEmulator, JobPlan
from tests.support.files import HANDBOOK
from tests.support.settings import EMULATOR_KEY, FAST_SETTINGS

TUTORIAL = HANDBOOK / "tutorial"


@pytest.fixture
def headed(gemini_settings: KbSettings, emulator: GeminiEmulator) -> KbSettings:
    """The tutorial ingested and embedded (headed chunks), with the emulator's log and bill cleared."""
    # A window smaller than the tutorial's pages (the default, 2,000 tokens, holds each page whole).
    settings = gemini_settings.model_copy(update={**FAST_SETTINGS, "context_window_tokens": 300})
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([TUTORIAL])
        kb.worker().run(once=True, timeout_s=60)
    emulator.reset_log()
    emulator.reset_billing()
    return settings


def _one(kb: KnowledgeBase, sql: str) -> object:
    with kb.engine.connect() as connection:
        return connection.execute(text(sql)).scalar_one()


def _generated(emulator: GeminiEmulator) -> int:
    """Prompts the emulator answered and delivered (what the service bills)."""
    return len(emulator.generations())


def _context_bill(kb: KnowledgeBase, space_id: int) -> float:
    spent = _one(kb, f"SELECT coalesce(sum(usd), 0) FROM usage_records WHERE space_id = {space_id}")
    return float(str(spent))


def test_contexts_are_written_once_embedded_after_the_chunk_and_searched(
    headed: KbSettings, emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    with KnowledgeBase(settings=headed) as kb:
        plan = kb.enrich_estimate()
        distinct = _one(kb, "SELECT count(DISTINCT context_key) FROM chunks")
        assert plan.to_write == distinct and plan.already_written == 0 and plan.usd_batch
        assert plan.input_tokens < plan.whole_document_tokens  # the bounded window sends less
        space_id, queued = kb.enrich_start()
        assert queued == distinct
        result = kb.worker().run(once=True, timeout_s=60)
        assert not result.errors, result.errors
        assert _one(kb, f"SELECT count(*) FROM chunk_contexts WHERE space_id = {space_id}") == distinct
        assert _generated(emulator) == distinct  # one billed request per context, none twice
        assert not [r for r in emulator.log if r.route == "generateContent"]  # all through the Batch API
        wrong = _one(
            kb,
            "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE c.situation NOT LIKE 'Context: ' || d.title || '%'",
        )
        assert wrong == 0  # every chunk holds what the emulator's model wrote for its own document
        billed = _one(kb, f"SELECT sum(output_tokens) FROM usage_records WHERE space_id = {space_id}")
        assert billed == sum(record.output_tokens for record in emulator.generations())

        reindex = kb.reindex_spec(contexts=True)
        new_space = kb.reindex_start(reindex)
        kb.worker().run(once=True, timeout_s=60)
        states = {s.id: s.state for s in kb.status().spaces}
        assert states[new_space] == "active" and states[space_id] == "contexts"
        embedded = [t for r in emulator.log if r.route == "asyncBatchEmbedContent" for t in r.texts]
        assert embedded and all(t.startswith("Context: ") for t in embedded)

        emulator.reset_log()
        kb.ingest([TUTORIAL])  # unchanged: no generation, no embedding
        kb.worker().run(once=True, timeout_s=60)
        assert _generated(emulator) == distinct
        assert not [r for r in emulator.log if r.route in ("batchGenerateContent", "asyncBatchEmbedContent")]

    monkeypatch.setenv("GEMINI_API_KEY", EMULATOR_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("KB_DB", str(headed.db))
    found = runner.invoke(app, ["search", "How do I enable CORS?", "--json", "-k", "3"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["path"].endswith("cors.md") and hits[0]["context"].startswith("Context: ")


def test_an_edited_document_asks_again_for_its_own_chunks_only_and_the_estimate_meets_the_bill(
    gemini_settings: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(TUTORIAL, docs)
    later = sorted(docs.glob("*.md"))[::2]  # half the pages arrive after the first contexts are billed
    parked = tmp_path / "later"
    parked.mkdir()
    for page in later:
        page.rename(parked / page.name)
    settings = gemini_settings.model_copy(update=FAST_SETTINGS)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([docs])
        space_id, _ = kb.enrich_start()
        kb.worker().run(once=True, timeout_s=60)
        first_bill = _context_bill(kb, space_id)

        for page in later:
            (parked / page.name).rename(page)
        kb.ingest([docs])
        plan = kb.enrich_estimate()
        assert plan.calibrated and plan.to_write > 0
        kb.worker().run(once=True, timeout_s=60)
        second_bill = _context_bill(kb, space_id) - first_bill
        assert plan.usd_batch is not None and abs(plan.usd_batch - second_bill) <= 0.10 * second_bill

        before = len(emulator.generations())
        page = later[0]
        chunks = _one(
            kb,
            "SELECT count(DISTINCT c.context_key) FROM chunks c JOIN documents d ON d.id = c.document_id "
            f"WHERE d.source_path LIKE '%{page.name}'",
        )
        page.write_text(page.read_text() + "\n\nOne more sentence at the end.\n")
        kb.ingest([docs])
        kb.worker().run(once=True, timeout_s=60)
        again = len(emulator.generations()) - before
        assert chunks <= again <= chunks + 1  # that page's chunks (its last one changed), nothing else


def test_without_a_gemini_key_contexts_are_refused_with_the_reason(db_path: Path) -> None:
    with KnowledgeBase(settings=KbSettings(db=db_path, provider="local")) as kb:
        kb.ingest([TUTORIAL])
        with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
            kb.enrich_start()


def test_every_context_is_written_and_billed_once_through_429s_5xx_failed_jobs_and_line_errors(
    gemini_settings: KbSettings, emulator: GeminiEmulator
) -> None:
    failing_once: set[str] = set()

    def first_time_only(prompt: str) -> tuple[int, str] | None:
        """A transient error for every third prompt, the first time it is asked."""
        if len(prompt) % 3 or prompt in failing_once:
            return None
        failing_once.add(prompt)
        return 13, "An internal error occurred."

    settings = gemini_settings.model_copy(update={**FAST_SETTINGS, "batch_max_texts": 20})
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([TUTORIAL])
        kb.worker().run(once=True, timeout_s=60)
        emulator.reset_billing()
        emulator.faults.add(Fault(route="batchGenerateContent", status=429, times=2))
        emulator.faults.add(Fault(route="batches.get", status=503, times=3))
        emulator.plan_next_jobs([JobPlan(outcome="FAILED"), JobPlan(item_errors=first_time_only)])
        _, wanted = kb.enrich_start()
        result = kb.worker().run(once=True, timeout_s=120)
        assert result.reason == ExitReason.DRAINED, result.errors
        assert _one(kb, "SELECT count(*) FROM chunk_contexts") == wanted
        assert _one(kb, "SELECT count(*) FROM chunks WHERE situation = ''") == 0
        assert failing_once  # the line errors happened, and were retried
        assert "BATCH_STATE_FAILED" in {job.state for job in emulator.jobs()}  # the first job failed
    billed = Counter(record.text for record in emulator.generations())
    assert len(billed) == wanted and set(billed.values()) == {1}  # each prompt delivered and paid once


def test_enrich_now_writes_every_context_online_once_through_a_429(
    gemini_settings: KbSettings, emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    settings = gemini_settings.model_copy(update=FAST_SETTINGS)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([TUTORIAL / "cors.md", TUTORIAL / "background-tasks.md"])
        wanted = _one(kb, "SELECT count(DISTINCT context_key) FROM chunks")
    emulator.faults.add(Fault(route="generateContent", status=429, times=1, retry_delay="0.01s"))
    monkeypatch.setenv("GEMINI_API_KEY", EMULATOR_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("KB_DB", str(settings.db))
    done = runner.invoke(app, ["enrich", "--now", "--yes"])
    assert done.exit_code == 0, done.output
    assert f"{wanted} contexts written online" in done.stdout
    online = [r for r in emulator.generations() if r.mode == "online"]
    assert len(online) == wanted and len({r.text for r in online}) == wanted
    assert not [r for r in emulator.log if r.route == "batchGenerateContent"]
    with KnowledgeBase(settings=settings) as kb:
        assert _one(kb, "SELECT count(*) FROM chunks WHERE situation = ''") == 0
        assert (
            _one(kb, "SELECT count(*) FROM usage_records WHERE kind = 'online' AND output_tokens > 0")
            == wanted
        )


# The title is in no chunk's text or headings: only the context the emulator's model writes ("Context:
# <title>" and the chunk's headings) holds it, so full text finds the page by it only once it reads contexts.
QUOKKA_PAGE = (
    "---\ntitle: Quokka field notes\n---\n# Habitat\n\nThey live on islands off the western coast.\n"
)
OTHER_PAGE = "# Tides\n\nThe sea rises and falls twice a day along the western coast.\n"


@pytest.mark.parametrize("backend_name", ["fts5", "tantivy", "postgresql"])
def test_full_text_reads_the_contexts_once_the_situated_space_is_searched(
    gemini_settings: KbSettings, tmp_path: Path, request: pytest.FixtureRequest, backend_name: str
) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "quokka.md").write_text(QUOKKA_PAGE)
    (pages / "tides.md").write_text(OTHER_PAGE)
    update: dict[str, object] = {
        **FAST_SETTINGS,
        "text_index": "tantivy" if backend_name == "tantivy" else "fts5",
    }
    if backend_name == "postgresql":
        update |= {"database_url": request.getfixturevalue("postgres_url"), "results_dir": tmp_path / "r"}
    settings = gemini_settings.model_copy(update=update)

    def found(kb: KnowledgeBase, question: str) -> list[str]:
        return [Path(hit.path).name for hit in kb.search(question, mode="text").hits]

    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([pages])
        kb.worker().run(once=True, timeout_s=60)
        kb.enrich_start()
        kb.worker().run(once=True, timeout_s=60)
        assert found(kb, "quokka") == []  # written, but the active (headed) space does not embed them
        kb.reindex_start(kb.reindex_spec(contexts=True))
        kb.worker().run(once=True, timeout_s=60)
        assert found(kb, "quokka") == ["quokka.md"]
        assert sorted(found(kb, "western coast")) == ["quokka.md", "tides.md"]  # the text still counts
        (pages / "quokka.md").write_text(QUOKKA_PAGE.replace("Quokka", "Wombat"))
        kb.ingest([pages])  # an edited page: its new context is written, and read, its old one gone
        kb.worker().run(once=True, timeout_s=60)
        assert found(kb, "wombat") == ["quokka.md"] and found(kb, "quokka") == []


def test_eval_against_the_space_before_contexts_measures_what_they_bring(
    gemini_settings: KbSettings,
    tmp_path: Path,
    emulator: GeminiEmulator,
    monkeypatch: pytest.MonkeyPatch,
    runner: CliRunner,
) -> None:
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "quokka.md").write_text(QUOKKA_PAGE)
    (pages / "tides.md").write_text(OTHER_PAGE)
    questions = tmp_path / "questions.json"
    labelled = [("Where are the quokka field notes?", "quokka.md"), ("When does the sea rise?", "tides.md")]
    questions.write_text(json.dumps([{"q": q, "relevant": [page]} for q, page in labelled]))
    settings = gemini_settings.model_copy(update=FAST_SETTINGS)
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([pages])
        kb.worker().run(once=True, timeout_s=60)
        before = kb.status().spaces[0].id
        kb.enrich_start()
        kb.worker().run(once=True, timeout_s=60)
        kb.reindex_start(kb.reindex_spec(contexts=True))
        kb.worker().run(once=True, timeout_s=60)
    monkeypatch.setenv("GEMINI_API_KEY", EMULATOR_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    arguments = ["--db", str(settings.db), "eval", str(questions), "--mode", "text"]
    compared = runner.invoke(app, [*arguments, "--against", str(before), "--json"])
    assert compared.exit_code == 0, compared.output
    report = json.loads(compared.stdout)
    situated, headed = report["base"]["modes"]["text"], report["against"]["modes"]["text"]
    assert report["against"]["name"] == f"space #{before}"
    assert (situated["recall_at_1"], headed["recall_at_1"]) == (1.0, 0.5)  # the title is only in the context
    assert report["delta"]["text"]["recall_at_1"] == -0.5
