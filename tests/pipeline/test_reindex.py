"""Moving an index off a retired model onto gemini-embedding-001 through batch jobs, search staying up."""

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.embed.worker import ExitReason
from kb.records import SearchMode
from kb.settings import KbSettings
from kb.testing.gemini_emulator import GeminiEmulator, JobPlan
from tests.support.files import HANDBOOK
from tests.support.settings import EMULATOR_KEY, FAST_SETTINGS

FAST = FAST_SETTINGS
TUTORIAL = HANDBOOK / "tutorial"
QUESTION = "How do I enable CORS for my frontend?"


@pytest.fixture
def legacy(gemini_settings: KbSettings, emulator: GeminiEmulator) -> KbSettings:
    """An index built on text-embedding-004 (online: the model never had a Batch API), now shut down."""
    settings = gemini_settings.model_copy(update={**FAST, "embedding_model": "text-embedding-004"})
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([TUTORIAL])
        assert kb.worker().run(once=True, timeout_s=60).embedded_online > 0
    assert not [r for r in emulator.log if r.route == "asyncBatchEmbedContent"]
    emulator.models.shut_down("text-embedding-004")
    emulator.reset_log()
    emulator.reset_billing()
    return gemini_settings.model_copy(update=FAST)  # the configured model is now gemini-embedding-001


def _cli_env(monkeypatch: pytest.MonkeyPatch, settings: KbSettings, emulator: GeminiEmulator) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", EMULATOR_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("KB_DB", str(settings.db))
    for name, value in FAST.items():
        monkeypatch.setenv(f"KB_{name.upper()}", str(value))


def test_reindex_off_a_dead_model_with_search_up(
    legacy: KbSettings, emulator: GeminiEmulator, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    _cli_env(monkeypatch, legacy, emulator)
    before = runner.invoke(app, ["search", QUESTION, "--json"])
    assert before.exit_code == 0 and json.loads(before.stdout)
    assert "answering from full text" in before.stderr
    assert "hint: the active space uses text-embedding-004" in before.stderr

    estimate = runner.invoke(app, ["reindex", "--estimate", "--json"])
    plan = json.loads(estimate.stdout)
    assert plan["model"] == "gemini-embedding-001" and plan["dimensions"] == 768 and plan["tokens_calibrated"]
    assert runner.invoke(app, ["reindex"]).exit_code == 2  # no terminal, no --yes: refuses to spend
    started = runner.invoke(app, ["reindex", "--yes"])
    assert started.exit_code == 0 and "is being built" in started.stdout

    jobs_of = max(1, plan["texts"] // 3)  # several jobs, so that the new space fills up in steps
    with KnowledgeBase(settings=legacy.model_copy(update={"batch_max_texts": jobs_of})) as kb:
        manager = kb.batch_manager()
        manager.flush(force=True)
        manager.submit_created()
        manager.poll()  # one job or more applied: the new space is partly embedded
        partial = kb.search(QUESTION)
        assert partial.hits and partial.space_id == 2 and partial.used == SearchMode.HYBRID
        assert "answering from full text and space #2" in partial.notes[0]

    worker = runner.invoke(app, ["worker", "--once", "--timeout", "60"])
    assert worker.exit_code == 0, worker.output
    assert "now active" in worker.stderr
    with KnowledgeBase(settings=legacy) as kb:
        result = kb.search(QUESTION)
        assert result.space_id == 2 and not result.notes and result.used == SearchMode.HYBRID
        states = {s.id: s.state for s in kb.status().spaces}
        assert states == {1: "retired", 2: "active"}
        assert kb.legacy_hint() is None

    routes = Counter(r.route for r in emulator.log if r.status == 200)
    assert routes["asyncBatchEmbedContent"] >= 1
    documents = [
        r for r in emulator.log if r.route == "batchEmbedContents" and "RETRIEVAL_DOCUMENT" in r.task_types
    ]
    assert documents == []  # the new space was filled through batch jobs only
    billed = emulator.billed_tokens(model="gemini-embedding-001", mode="batch")
    assert abs(plan["tokens"] - billed) / billed < 0.10
    assert abs(plan["usd_batch"] - billed * 0.075 / 1e6) / (billed * 0.075 / 1e6) < 0.10

    status = json.loads(runner.invoke(app, ["reindex", "--status", "--json"]).stdout)
    assert status is None or status["complete"]
    assert "is active again" in runner.invoke(app, ["reindex", "--rollback"]).stdout
    with KnowledgeBase(settings=legacy) as kb:
        assert {s.id: s.state for s in kb.status().spaces} == {1: "active", 2: "retired"}
    runner.invoke(app, ["reindex", "--rollback"])  # and back to the new space
    size = Path(legacy.db).stat().st_size
    dropped = runner.invoke(app, ["reindex", "--drop-retired"])
    assert dropped.exit_code == 0 and "dropped 1 retired space" in dropped.stdout
    assert Path(legacy.db).stat().st_size < size
    with KnowledgeBase(settings=legacy) as kb:
        assert [s.id for s in kb.status().spaces] == [2]
        assert kb.search(QUESTION).space_id == 2


def test_interrupted_reindex_resumes_without_paying_twice(
    legacy: KbSettings, emulator: GeminiEmulator
) -> None:
    with KnowledgeBase(settings=legacy) as kb:
        texts = kb.reindex_estimate(kb.reindex_spec()).texts
    settings = legacy.model_copy(update={"batch_max_texts": max(1, texts // 6)})  # six jobs or seven
    # Three jobs finish at once; the others stay pending for an (emulated) hour.
    emulator.plan_next_jobs([JobPlan(), JobPlan(), JobPlan()])
    emulator.job_plan = JobPlan(pending_s=3600)
    with KnowledgeBase(settings=settings) as kb:
        spec = kb.reindex_spec()
        first = kb.reindex_start(spec)
        worker = kb.worker()
        worker.after_step = worker.stop.set  # Ctrl-C after the first step
        assert worker.run(once=True, timeout_s=60).reason == ExitReason.STOPPED
        status = kb.reindex_status()
        assert status is not None and 0 < status.embedded < status.total
        assert kb.reindex_start(spec) == first  # running it again continues
        assert kb.reindex_estimate(spec).texts == status.total - status.embedded
        emulator.clock.advance(3601)
        assert kb.worker().run(once=True, timeout_s=60).reason == ExitReason.DRAINED
        assert kb.reindex_status() is None  # activated: nothing is being built any more
    texts = Counter(
        text for model, mode, text in emulator.embedded_texts() if model == "gemini-embedding-001"
    )
    assert texts and set(texts.values()) == {1}
