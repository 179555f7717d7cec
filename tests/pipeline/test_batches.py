"""The batch pipeline against the emulator: jobs, faults, reconciliation, deadlines, idempotent apply."""

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from kb import failpoints
from kb.app import KnowledgeBase
from kb.cli.commands import app
from kb.embed.worker import ExitReason
from kb.providers.factory import gemini_api
from kb.providers.gemini import GeminiBatchBackend
from kb.settings import KbSettings
from kb.testing.gemini_emulator import Fault, GeminiEmulator, JobPlan, TextsContaining
from tests.support.corpora import write_sections
from tests.support.settings import FAST_SETTINGS

FAST = FAST_SETTINGS


@pytest.fixture
def fast_settings(gemini_settings: KbSettings) -> KbSettings:
    return gemini_settings.model_copy(update=FAST)


def _statuses(kb: KnowledgeBase) -> dict[str, int]:
    return kb.status().tasks


def _creates(emulator: GeminiEmulator) -> list[object]:
    return [r for r in emulator.log if r.route == "asyncBatchEmbedContent" and r.status == 200]


def _billed_once(emulator: GeminiEmulator) -> bool:
    counts = Counter(text for _, mode, text in emulator.embedded_texts() if mode == "batch")
    return set(counts.values()) <= {1}


@pytest.mark.slow
def test_25000_texts_make_three_jobs_and_a_second_run_is_free(
    fast_settings: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    texts = write_sections(tmp_path / "corpus", 25000, per_file=100)
    with KnowledgeBase(settings=fast_settings) as kb:
        report = kb.ingest([tmp_path / "corpus"])
        assert report.tasks_queued == texts == 25_000
        result = kb.worker().run(once=True, timeout_s=120)
        assert result.reason == ExitReason.DRAINED, result.errors
        jobs = kb.jobs()
        assert sorted(job.texts for job in jobs) == [5_000, 10_000, 10_000]
        assert all(job.state == "applied" for job in jobs)
        assert _statuses(kb) == {"pending": 0, "submitted": 0, "embedded": 25_000, "failed": 0}
        assert len(_creates(emulator)) == 3 and _billed_once(emulator)
        emulator.reset_log()
        again = kb.worker().run(once=True, timeout_s=30)
        assert again.reason == ExitReason.DRAINED
        assert _creates(emulator) == [] and not [r for r in emulator.log if r.route != "batches.list"]


def test_faults_end_with_every_text_embedded_or_failed_with_its_reason(
    fast_settings: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    total = write_sections(tmp_path / "corpus", 1000, per_file=50, poison=range(0, 1000, 97))
    marked = len(range(0, total, 97))
    poison = TextsContaining("POISON", 3, "Request contains an invalid argument.")
    emulator.job_plan = JobPlan(shuffle=True, item_errors=poison)
    lossy = JobPlan(shuffle=True, drop_fraction=0.01, item_errors=poison, seed=7)
    emulator.plan_next_jobs([JobPlan(outcome="FAILED"), JobPlan(outcome="EXPIRED"), lossy, lossy])
    emulator.faults.add(Fault(route="asyncBatchEmbedContent", status=429, times=3, retry_delay="0.01s"))
    emulator.faults.add(Fault(route="batches.get", status=429, times=4, after=1, retry_delay="0.01s"))
    emulator.faults.add(Fault(route="batches.get", status=503, times=2, after=8))
    settings = fast_settings.model_copy(update={"batch_max_texts": 400})
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([tmp_path / "corpus"])
        result = kb.worker().run(once=True, timeout_s=120)
        assert result.reason == ExitReason.DRAINED, result.errors
        assert _statuses(kb) == {"pending": 0, "submitted": 0, "embedded": total - marked, "failed": marked}
        failures = kb.failed_texts()
        assert all("permanent" in (f.error or "") and "invalid argument" in (f.error or "") for f in failures)
        assert all(f.documents for f in failures)
        states = Counter(job.state for job in kb.jobs())
        assert states["failed"] == 1 and states["expired"] == 1 and states["applied"] >= 3
    statuses = Counter(r.status for r in emulator.log)
    assert statuses[429] == 7 and statuses[503] == 2
    assert _billed_once(emulator)


def test_a_job_created_remotely_but_not_recorded_is_adopted(
    fast_settings: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    """The crash window between `create` and recording its name: the next worker finds the job by its
    display name and adopts it instead of paying for it again."""
    write_sections(tmp_path / "corpus", 20, per_file=10)
    with KnowledgeBase(settings=fast_settings) as kb:
        kb.ingest([tmp_path / "corpus"])
        manager = kb.batch_manager()
        [job_id] = manager.flush(force=True)
        job = kb.jobs()[0]
        assert job.state == "created" and job.remote_name is None
        backend = GeminiBatchBackend(gemini_api(fast_settings, timeout_s=30.0))
        with kb.engine.connect() as connection:
            from kb.store import ledger

            lines = ledger.manifest_texts(connection, job_id, 2000)
        kb.results_dir.mkdir(exist_ok=True)
        input_file = backend.upload_input(
            job.display_name, "gemini-embedding-001", 768, lines, kb.results_dir
        )
        backend.create(job.display_name, "gemini-embedding-001", input_file)  # ... and the process dies here
        result = kb.worker().run(once=True, timeout_s=30)
        assert result.reason == ExitReason.DRAINED
        assert len(_creates(emulator)) == 1 and _billed_once(emulator)
        assert kb.jobs()[0].state == "applied" and _statuses(kb)["embedded"] == 20


def test_stuck_job_is_cancelled_before_its_texts_are_resubmitted(
    fast_settings: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    write_sections(tmp_path / "corpus", 10, per_file=10)
    emulator.plan_next_jobs([JobPlan(outcome="STUCK")])
    settings = fast_settings.model_copy(update={"job_deadline_h": 0.3 / 3600})
    with KnowledgeBase(settings=settings) as kb:
        kb.ingest([tmp_path / "corpus"])
        result = kb.worker().run(once=True, timeout_s=30)
        assert result.reason == ExitReason.DRAINED, result.errors
        assert [job.state for job in sorted(kb.jobs(), key=lambda j: j.id)] == ["cancelled", "applied"]
    routes = [r.route for r in emulator.log if r.status == 200]
    assert routes.index("batches.cancel") < len(routes) - 1 - routes[::-1].index("asyncBatchEmbedContent")
    assert _billed_once(emulator)


@pytest.mark.parametrize("point", ["apply.commit.before", "apply.commit.after"])
def test_an_apply_cut_short_is_done_once_by_the_next_pass(
    fast_settings: KbSettings, emulator: GeminiEmulator, tmp_path: Path, point: str
) -> None:
    """Interrupted right before the apply commits, nothing of it is written; right after, nothing is left
    to do. Either way the next pass ends with every text embedded once and paid once."""
    texts = write_sections(tmp_path / "corpus", 30, per_file=30)
    with KnowledgeBase(settings=fast_settings) as kb:
        kb.ingest([tmp_path / "corpus"])
        with failpoints.armed(point, failpoints.interrupt), pytest.raises(KeyboardInterrupt):
            kb.worker().run(once=True, timeout_s=30)
        committed = point.endswith(".after")
        assert _statuses(kb)["embedded"] == (texts if committed else 0)
        assert [job.state for job in kb.jobs()] == ["applied" if committed else "succeeded"]
        assert kb.worker().run(once=True, timeout_s=30).reason == ExitReason.DRAINED
        assert _statuses(kb) == {"pending": 0, "submitted": 0, "embedded": texts, "failed": 0}
        with kb.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM vec_space_1").scalar_one() == texts
    assert _billed_once(emulator) and len(emulator.embedded_texts()) == texts


def test_results_saved_on_another_machine_are_downloaded_again(
    fast_settings: KbSettings, emulator: GeminiEmulator, tmp_path: Path
) -> None:
    """A worker saves a job's results and dies before applying them; the worker that takes the job over
    runs elsewhere (the saved file is not there): it downloads the results again, and pays nothing more."""
    texts = write_sections(tmp_path / "corpus", 30, per_file=30)
    with KnowledgeBase(settings=fast_settings) as kb:
        kb.ingest([tmp_path / "corpus"])
        first = kb.batch_manager()
        first.flush(force=True)
        assert first.submit_created()
        with failpoints.armed("apply.before", failpoints.crash), pytest.raises(RuntimeError):
            first.poll(only_due=False)
        (job,) = kb.jobs()
        assert job.state == "succeeded"
        for saved in kb.results_dir.glob("*.results.jsonl"):
            saved.unlink()  # on the other machine

        report = kb.batch_manager().poll()
        assert report.embedded == texts
        assert kb.status().tasks["embedded"] == texts
    downloads = [r for r in emulator.log if r.route == "files.download"]
    assert len(downloads) == 2
    billed = Counter(text for _, mode, text in emulator.embedded_texts() if mode == "batch")
    assert set(billed.values()) == {1} and len(billed) == texts


def test_batch_refusing_model_is_embedded_online_with_a_warning(
    fast_settings: KbSettings, emulator: GeminiEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_sections(tmp_path / "corpus", 5, per_file=5)
    settings = fast_settings.model_copy(update={"embedding_model": "text-embedding-004"})
    with KnowledgeBase(settings=settings) as kb, caplog.at_level(logging.WARNING, logger="kb"):
        kb.ingest([tmp_path / "corpus"])
        result = kb.worker().run(once=True, timeout_s=30)
        assert result.reason == ExitReason.DRAINED and result.embedded_online == 5
        assert _statuses(kb)["embedded"] == 5
    assert "does not support the Batch API" in caplog.text
    assert not [r for r in emulator.log if r.route == "asyncBatchEmbedContent"]


def test_jobs_errors_and_retry_commands(
    fast_settings: KbSettings, emulator: GeminiEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_sections(tmp_path / "corpus", 20, per_file=20, poison=range(0, 20, 10))
    emulator.job_plan = JobPlan(
        item_errors=TextsContaining("POISON", 3, "Request contains an invalid argument.")
    )
    with KnowledgeBase(settings=fast_settings) as kb:
        kb.ingest([tmp_path / "corpus"])
    for name, value in fast_settings.model_dump().items():
        if value is not None and name != "gemini_api_key" and not isinstance(value, list | dict):
            monkeypatch.setenv(f"KB_{name.upper()}", str(value))
    monkeypatch.setenv("GEMINI_API_KEY", fast_settings.gemini_api_key.get_secret_value())  # type: ignore[union-attr]
    runner = CliRunner()
    result = runner.invoke(app, ["worker", "--once", "--timeout", "30", "--log-format", "json"])
    assert result.exit_code == 0, result.output
    assert "worker drained" in result.stdout
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any("applied" in entry["message"] for entry in logs)
    jobs = json.loads(runner.invoke(app, ["jobs", "--json"]).stdout)
    assert jobs[0]["state"] == "applied" and jobs[0]["texts"] == 20 and jobs[0]["remote_name"]
    errors = json.loads(runner.invoke(app, ["errors", "--json"]).stdout)
    assert len(errors) == 2 and all(e["documents"][0].endswith("doc0000.md") for e in errors)
    assert runner.invoke(app, ["retry"]).exit_code == 2
    emulator.job_plan = JobPlan()
    retried = runner.invoke(app, ["retry", "--all"])
    assert retried.exit_code == 0 and "requeued 2 texts" in retried.stdout
    assert runner.invoke(app, ["worker", "--once", "--timeout", "30"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["errors", "--json"]).stdout) == []


def _snapshot(kb: KnowledgeBase) -> tuple[object, ...]:
    with kb.engine.connect() as connection:
        tasks = connection.execute(
            sa.text("SELECT id, status, attempts FROM embedding_tasks ORDER BY id")
        ).all()
        vecs = connection.execute(sa.text("SELECT rowid, embedding FROM vec_space_1 ORDER BY rowid")).all()
    return tuple(tasks), tuple(vecs)
